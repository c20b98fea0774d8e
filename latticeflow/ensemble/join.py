"""One ensemble from the per-rank files of a ``torchrun`` run, by HDF5 virtual datasets.

Under ``torchrun --nproc_per_node R``, ``latticeflow sample`` and ``hmc`` write the chains
of rank r to their own ensemble file, :func:`part_path` (``NAME.rank<r>.h5``), which
resumes like any other.  Rank 0 then writes ``NAME.h5`` with :func:`join`: the same layout
(format version 1), whose datasets are virtual datasets that concatenate the parts along
the chain axis — chains ``r·C/R … (r+1)·C/R − 1`` are rank r's.  Nothing is copied, and
every reader (``analyze``, ``compare``, :func:`latticeflow.ensemble.open`) sees one
ensemble of C chains.

- ``n_rows`` is the number of rows every part has committed (the minimum), and
  ``generation_seconds`` the sum over the parts (the device time spent, not the wall time).
- ``extra["joined"]`` lists the parts (names relative to the joined file, which HDF5
  resolves from the joined file's directory, so the folder can be moved as a whole).
- A joined file has no resume state of its own: the next ``torchrun`` run continues the
  parts and joins them again; a single process refuses to continue it.
- The joined file is written under a temporary name and renamed into place, so a reader
  never sees half of one.  It never replaces an ordinary (one-process) ensemble.
- Opening a joined file checks its parts (:func:`check_parts`): each must exist, be the
  ensemble that was joined (its theory, sampler, chain count, creation time and seed) and hold
  the joined rows, else :class:`~latticeflow.errors.EnsembleError` — a missing or swapped
  part never reads as zeros or as other data.  HDF5 reopens the parts by name on every
  read, so a part deleted while the joined file is open reads as the fill value, NaN for
  the float datasets, which ``analyze`` refuses.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import EnsembleError
from ..files import RunLock, write_failed
from .format import FORMAT, VERSION, json_attr, open_h5, row_datasets

__all__ = ["part_path", "join", "joined_parts", "check_parts", "check_join_target"]


def part_path(path, rank: int) -> Path:
    """The ensemble file of rank ``rank`` beside the joined ``path``: ``NAME.rank<r>.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def joined_parts(f: h5py.File, path: Path) -> list[str] | None:
    """The part names of a joined file (None for an ordinary ensemble)."""
    joined = json_attr(f, "extra", path, default={}).get("joined")
    return None if joined is None else list(joined.get("parts", []))


def check_parts(f: h5py.File, path: Path) -> None:
    """Refuse a joined file whose parts are missing, foreign, swapped for another ensemble,
    or shorter than its ``n_rows`` (EnsembleError); an ordinary ensemble passes."""
    joined = json_attr(f, "extra", path, default={}).get("joined")
    if joined is None:
        return
    names, chains = joined.get("parts"), joined.get("chains")
    stamps = joined.get("stamps", [None] * len(names or []))
    if (not isinstance(names, list) or not isinstance(chains, list) or not isinstance(stamps, list)
            or not len(names) == len(chains) == len(stamps)
            or not all(isinstance(n, str) for n in names) or not all(isinstance(c, int) for c in chains)):
        raise EnsembleError(f"{path} is corrupt: its list of joined parts is malformed")
    n_rows = int(f.attrs["n_rows"])
    rerun = "rerun the torchrun command that made it to join its parts again"
    files: list[h5py.File] = []
    try:
        for name, c, stamp in zip(names, chains, stamps):
            part = path.parent / name
            try:
                files.append(open_h5(part, "r"))
            except EnsembleError as err:
                raise EnsembleError(f"{path} joins the per-rank file {name}, which cannot be read: {err}") from None
            p = files[-1]
            same = all(p.attrs[k] == f.attrs[k] for k in ("theory", "sampler"))
            if not same or (stamp is not None and _stamp(p) != stamp) or joined_parts(p, part):
                raise EnsembleError(f"{path} joins the per-rank file {name}, which has been replaced by "
                                    f"another ensemble; {rerun}")
            held_chains, held_rows = int(p.attrs["n_chains"]), int(p.attrs["n_rows"])
            if held_chains != c or held_rows < n_rows:
                raise EnsembleError(f"{path} joins {n_rows} rows of {c} chains from {name}, which holds "
                                    f"{held_rows} rows of {held_chains} chains; {rerun}")
    finally:
        for part in files:
            part.close()


def check_join_target(path, ranks: int) -> None:
    """Refuse to make ``path`` the joined file of ``ranks`` parts when it exists as
    something else: an ordinary ensemble (which the join would replace) or the join of
    another number of ranks."""
    path = Path(path)
    if not path.exists():
        return
    with open_h5(path, "r") as f:
        parts = joined_parts(f, path)
    if parts is None:
        raise EnsembleError(f"{path} is a one-process ensemble, which a run on {ranks} ranks would "
                            "replace by the join of its per-rank files; give another --out")
    if len(parts) != ranks:
        raise EnsembleError(f"{path} joins the files of {len(parts)} ranks, this run has {ranks}; "
                            f"continue it under torchrun --nproc_per_node {len(parts)}")


def join(path, parts, config_text: str, seed: int) -> dict:
    """Write the joined ensemble ``path`` of the part files ``parts`` (rank order).

    The parts must hold the same theory, sampler, observables, mcmc columns and field
    layout.  Returns ``{"path", "n", "n_rows", "n_chains", "parts"}``.
    """
    path = Path(path)
    parts = [Path(p) for p in parts]
    with contextlib.ExitStack() as opened:
        # the lock a one-process writer of ``path`` takes: none can start between the check and the rename
        opened.enter_context(RunLock(path.with_name(f".{path.name}.lock"), str(path)))
        check_join_target(path, len(parts))
        files = [opened.enter_context(open_h5(p, "r")) for p in parts]
        first = files[0]
        layout = _layout(first)
        for p, f in zip(parts[1:], files[1:]):
            for key in ("theory", "sampler"):
                if f.attrs[key] != first.attrs[key]:
                    raise EnsembleError(f"{p}: its {key} differs from {parts[0]}'s; cannot join them")
            if _layout(f) != layout:
                raise EnsembleError(f"{p}: its datasets differ from {parts[0]}'s; cannot join them")
        chains = [int(f.attrs["n_chains"]) for f in files]
        n_rows = min(int(f.attrs["n_rows"]) for f in files)
        n_chains = sum(chains)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.joining*"):  # left by a killed join
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.joining{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as out:
                a = out.attrs
                a["format"], a["version"] = FORMAT, VERSION
                a["theory"], a["sampler"] = first.attrs["theory"], first.attrs["sampler"]
                for key in ("weight_column", "reweighted"):  # parts written before they were recorded have neither
                    if key in first.attrs:
                        a[key] = first.attrs[key]
                a["config"], a["seed"] = config_text, int(seed)
                a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                a["latticeflow_version"] = __version__
                a["n_chains"], a["n_rows"] = n_chains, n_rows
                a["generation_seconds"] = float(sum(float(f.attrs["generation_seconds"]) for f in files))
                extra = json_attr(first, "extra", parts[0], default={})
                names = [os.path.relpath(p, path.parent) for p in parts]
                extra["joined"] = {"parts": names, "chains": chains, "stamps": [_stamp(f) for f in files]}
                a["extra"] = json.dumps(extra)
                for group in ("observables", "mcmc", "state"):
                    out.create_group(group)
                for name, (dtype, tail) in layout.items():
                    vds = h5py.VirtualLayout(shape=(n_rows, n_chains, *tail), dtype=dtype)
                    start = 0
                    for source, f, c in zip(names, files, chains):
                        ds = f[name]
                        vds[:, start:start + c] = h5py.VirtualSource(source, name, shape=ds.shape)[:n_rows]
                        start += c
                    kind = np.dtype(dtype).kind
                    fill = np.array(np.nan if kind in "fc" else 0, dtype=dtype)[()]  # HDF5 wants the dtype's own scalar
                    out.create_virtual_dataset(name, vds, fillvalue=fill)
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failed(path, exc) from None
        finally:
            tmp.unlink(missing_ok=True)
    return {"path": str(path), "n": n_rows * n_chains, "n_rows": n_rows, "n_chains": n_chains,
            "parts": [str(p) for p in parts]}


def _stamp(f: h5py.File) -> str:
    """What identifies one part: its creation time and seed (a resume keeps both)."""
    return f"{f.attrs['created']} seed {int(f.attrs['seed'])}"


def _layout(f: h5py.File) -> dict:
    return {name: (ds.dtype, tuple(ds.shape[2:])) for name, ds in row_datasets(f).items()}
