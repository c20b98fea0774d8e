"""Writing ensembles: :func:`create` a new file, :func:`open_for_append` to continue one, and
:class:`EnsembleWriter`, whose :meth:`~EnsembleWriter.append` commits one block atomically
(rows first, then the resume state into the free slot, then ``n_rows``).
"""

from __future__ import annotations

import datetime
import glob
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import EnsembleError
from ..files import write_failed
from ..interrupts import deferred_signals
from .join import joined_parts
from .format import (FORMAT, LEGACY_SAMPLERS, VERSION, ROW_CHUNK_BYTES, Weighting, check_column,
                     attr, committed_slot, describe_theory, numpy_field_dtype, H5Handle, json_attr, normalise_theory, open_h5,
                     row_datasets)

__all__ = ["create", "open_for_append", "read_resume_state", "holds_no_rows", "EnsembleWriter"]


def create(path, *, theory: dict, sampler: str, config_text: str, seed: int, n_chains: int,
           observables: list[str], mcmc: list[str], field_shape: tuple | None,
           field_dtype=None, extra: dict | None = None,
           weights: Weighting | None = None) -> "EnsembleWriter":
    """Create a new ensemble file (never overwrites: an existing path is an EnsembleError).

    The file is built under a hidden temporary name and renamed into place once its layout
    is on disk, so a run killed during creation leaves either no file or a complete empty
    ensemble, which the same command resumes.

    ``weights``: the sampler's :class:`~latticeflow.ensemble.format.Weighting` (its weight
    column and whether it is reweighted), recorded in the file; default: what a built-in
    sampler's name implies.  ``mcmc`` must include ``accepted`` and the weight column.
    ``field_shape=None`` switches configurations off.  ``field_dtype`` is a numpy or torch
    dtype (default float64).
    """
    path = Path(path)
    weights = weights or LEGACY_SAMPLERS.get(sampler)
    if not sampler or weights is None:
        raise ValueError(f"sampler {sampler!r} is not a built-in one: give its weights (Weighting)")
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1 (got {n_chains})")
    required = ("accepted", weights.column)
    missing = [c for c in required if c not in mcmc]
    if missing:
        raise ValueError(f"mcmc columns for sampler {sampler!r} must include {', '.join(missing)}")
    for group, names in (("observables", observables), ("mcmc", mcmc)):
        if len(set(names)) != len(names) or not all(n and "/" not in n for n in names):
            raise ValueError(f"{group}: names must be unique, non-empty and without '/'")
    dtype = numpy_field_dtype(field_dtype) if field_shape is not None else None
    if path.exists():
        raise EnsembleError(f"{path} already exists (resume it, or choose another output file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial*"):  # left by a killed creation
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.partial{os.getpid()}")
    f = h5py.File(tmp, "w-")
    try:
        a = f.attrs
        a["format"], a["version"] = FORMAT, VERSION
        a["theory"] = json.dumps(normalise_theory(theory))
        a["sampler"], a["config"], a["seed"] = sampler, config_text, int(seed)
        a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        a["latticeflow_version"] = __version__
        a["n_chains"], a["n_rows"], a["generation_seconds"] = int(n_chains), 0, 0.0
        a["extra"] = json.dumps(extra or {})
        a["weight_column"], a["reweighted"] = weights.column, bool(weights.reweighted)
        chunk_rows = max(1, ROW_CHUNK_BYTES // (8 * n_chains))
        for group, names in (("observables", observables), ("mcmc", mcmc)):
            g = f.create_group(group)
            for name in names:
                dt = bool if (group, name) == ("mcmc", "accepted") else np.float64
                g.create_dataset(name, shape=(0, n_chains), maxshape=(None, n_chains),
                                 dtype=dt, chunks=(chunk_rows, n_chains))
        if field_shape is not None:
            field_shape = tuple(int(s) for s in field_shape)
            # One row per chunk; a row too big for one chunk (HDF5 caps chunks at 4 GiB)
            # is split per chain.
            row_bytes = n_chains * math.prod(field_shape) * dtype.itemsize
            chunk = (1, n_chains if row_bytes < (1 << 30) else 1, *field_shape)
            f.create_dataset("configs", shape=(0, n_chains, *field_shape),
                             maxshape=(None, n_chains, *field_shape), dtype=dtype, chunks=chunk)
        f.create_group("state")
        f.close()
        os.replace(tmp, path)
    except BaseException as exc:
        f.close()
        tmp.unlink(missing_ok=True)  # never leave a half-made file behind
        if isinstance(exc, OSError):
            raise write_failed(path, exc) from None
        raise
    return EnsembleWriter(h5py.File(path, "r+"), path)


def open_for_append(path, *, theory: dict, sampler: str, n_chains: int, **layout) -> "EnsembleWriter":
    """Reopen an ensemble to continue it; refuses if physics, sampler or chain count differ,
    or if the file cannot be continued exactly (no resume state for its committed rows).

    Every check runs on the file opened read-only, so a refused file is never changed.  The
    committed part (rows, the committed state, the attributes) is then copied into a fresh
    file that replaces the old one: a run killed inside HDF5's own metadata writes can leave
    internal bookkeeping that an in-place append would trip over, and rows written after the
    last commit are dropped on the way.
    """
    path = Path(path)
    with open_h5(path, "r") as f:
        _check_continuable(f, path, theory, sampler, n_chains, **layout)
    _rewrite_committed(path)
    return EnsembleWriter(open_h5(path, "r+"), path)


def _rewrite_committed(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.partial{os.getpid()}")
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w-") as dst:
            n_rows = int(src.attrs["n_rows"])
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for group in ("observables", "mcmc", "state"):
                dst.create_group(group)
            for name, ds in row_datasets(src).items():
                new = dst.create_dataset(name, shape=(n_rows, *ds.shape[1:]), dtype=ds.dtype,
                                         maxshape=(None, *ds.shape[1:]), chunks=ds.chunks)
                step = max(1, (64 << 20) // max(1, ds.dtype.itemsize * math.prod(ds.shape[1:])))
                for start in range(0, n_rows, step):
                    new[start:start + step] = ds[start:min(n_rows, start + step)]
            slot = committed_slot(src)
            if slot is not None:
                src.copy(slot, dst["state"], name="a")
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def holds_no_rows(path) -> bool:
    """True for an ensemble of ours that never committed a block (a run interrupted or
    failed during its first one): it holds no data, so the next run starts it afresh, with
    its own settings and start, instead of continuing it.  False for anything else: a file
    with a state slot written (a block got as far as its state, or ``n_rows`` was damaged
    to 0: the resume decides, as for any file), a joined file, a file open for writing
    elsewhere, or not an ensemble (which the resume refuses as usual)."""
    path = Path(path)
    try:
        with open_h5(path, "r") as f:  # checks the format
            return (attr(f, "n_rows", int, path) == 0 and joined_parts(f, path) is None
                    and not any(isinstance(f["state"].get(n), h5py.Group) for n in ("a", "b")))
    except (EnsembleError, OSError, ValueError, TypeError, KeyError):
        return False


def read_resume_state(path, *, theory: dict, sampler: str, n_chains: int, **layout) -> dict[str, np.ndarray]:
    """The committed resume state of a file that :func:`open_for_append` would accept,
    read without opening it for writing (empty for a file with no rows yet).

    ``layout`` (``observables``, ``mcmc``: names; ``field_shape``) are checked against the
    file where given: a file missing one of them cannot be continued."""
    path = Path(path)
    with open_h5(path, "r") as f:
        _check_continuable(f, path, theory, sampler, n_chains, **layout)
        slot = committed_slot(f)
        if slot is None:
            return {}
        state = {}
        for k, ds in slot.items():
            if not isinstance(ds, h5py.Dataset):
                raise EnsembleError(f"{path} is corrupt: state entry {k} is not a dataset")
            state[k] = np.asarray(ds[()])
        return state


def _check_continuable(f, path: Path, theory: dict, sampler: str, n_chains: int,
                       observables=None, mcmc=None, field_shape=None) -> None:
    parts = joined_parts(f, path)
    if parts is not None:
        raise EnsembleError(f"{path} joins the {len(parts)} per-rank files of a torchrun run "
                            f"({', '.join(parts)}); continue it with the same command under "
                            f"torchrun --nproc_per_node {len(parts)}")
    held = json_attr(f, "theory", path)
    asked = normalise_theory(theory)
    if held != asked:
        if held.get("name") != asked.get("name"):
            msg = f"{path} holds {held.get('name')} but the config asks for {asked.get('name')}"
        else:
            keys = sorted(k for k in held.keys() | asked.keys() if held.get(k) != asked.get(k))
            msg = (f"{path} holds {held['name']} with {describe_theory(held, keys)} "
                   f"but the config asks for {describe_theory(asked, keys)}")
        raise EnsembleError(msg)
    if (held_sampler := attr(f, "sampler", str, path)) != sampler:
        raise EnsembleError(
            f"{path} was made by sampler {held_sampler!r}, this run uses {sampler!r}")
    if (held_chains := attr(f, "n_chains", int, path)) != n_chains:
        raise EnsembleError(f"{path} has {held_chains} chains but this run asks for {n_chains}")
    for group, names in (("observables", observables), ("mcmc", mcmc)):
        if names is not None and set(f[group]) != set(names):
            raise EnsembleError(f"{path}: its {group} are {sorted(f[group])}, this run writes "
                                f"{sorted(names)} (a damaged file, or another version's)")
    if field_shape is not None and "configs" in f and tuple(f["configs"].shape[2:]) != tuple(field_shape):
        raise EnsembleError(f"{path}: its configurations have shape {f['configs'].shape[2:]}, "
                            f"this run makes {tuple(field_shape)}")
    n_rows = int(f.attrs["n_rows"])
    for name, ds in f["observables"].items():
        if not np.all(np.isfinite(ds[:n_rows])):
            raise EnsembleError(f"{path}: observables/{name} holds non-finite values in committed "
                                "rows (the file is damaged); it is not continued")
    if n_rows > 0 and committed_slot(f) is None:
        raise EnsembleError(f"{path} has no resume state for its {n_rows} committed rows, so its "
                            "chains cannot be continued exactly (analyze still reads it; "
                            "write a new file to sample more)")
    if n_rows == 0 and all(isinstance(f["state"].get(n), h5py.Group) for n in ("a", "b")):
        # the second slot is written only after a first commit moved n_rows: damaged, and
        # continuing it would start over and drop the rows it holds
        raise EnsembleError(f"{path} is damaged: n_rows is 0 but it holds the state of two "
                            "committed blocks; it is not continued")


class EnsembleWriter(H5Handle):
    """An ensemble open for appending blocks of rows; made by :func:`create` or
    :func:`open_for_append`.  Use as a context manager, or call :meth:`close`."""

    def __init__(self, f: h5py.File, path: Path):
        self._f, self.path = f, path
        self.n_chains = int(f.attrs["n_chains"])
        self.extra: dict = json.loads(f.attrs.get("extra", "{}"))
        self.observable_names = tuple(f["observables"])
        self.mcmc_names = tuple(f["mcmc"])
        self.has_configs = "configs" in f

    @property
    def n_rows(self) -> int:
        return int(self._f.attrs["n_rows"])

    @property
    def n(self) -> int:
        return self.n_rows * self.n_chains

    def state(self) -> dict[str, np.ndarray]:
        """The resume state of the committed rows ``{name: array}`` (empty on a new file)."""
        slot = committed_slot(self._f)
        return {} if slot is None else {k: np.asarray(ds[()]) for k, ds in slot.items()}

    def append(self, observables: dict, mcmc: dict, configs=None, state: dict | None = None,
               seconds: float = 0.0, extra: dict | None = None) -> None:
        """Append one block of ``rows`` rows and commit it.

        Arguments:
            observables: ``{name: (rows, C)}`` for every observable of the file.
            mcmc: ``{column: (rows, C)}`` for every mcmc column of the file.
            configs: ``(rows, C, *field_shape)``; required when the file stores
                configurations, ignored when it does not.
            state: ``{name: array}`` (bytes are stored as uint8); replaces the saved state.
            seconds: wall time spent generating the block (added to ``generation_seconds``).
            extra: merged into the ``extra`` attribute (e.g. a re-tuned step size).
        """
        f = self._f
        rows = self._check_keys("observables", observables, self.observable_names)
        self._check_keys("mcmc", mcmc, self.mcmc_names)
        cols = {}
        for group, data in (("observables", observables), ("mcmc", mcmc)):
            for name, value in data.items():
                dt = f[group][name].dtype
                cols[f"{group}/{name}"] = check_column(value, f"{group}/{name}", rows, self.n_chains, dt)
        rows = next(iter(cols.values())).shape[0] if cols else rows
        if self.has_configs:
            cols["configs"] = self._check_configs(configs, rows)
        if rows is None:
            raise ValueError("append needs at least one observable, mcmc column or configs")
        state = {k: np.frombuffer(v, np.uint8) if isinstance(v, (bytes, bytearray))
                 else np.asarray(v) for k, v in (state or {}).items()}

        try:
            with deferred_signals():
                start = self.n_rows
                for name, value in cols.items():  # 1. the rows (uncommitted until n_rows moves)
                    ds = f[name]
                    ds.resize(start + rows, axis=0)
                    ds[start:] = value
                # 2. the state of the new rows, into the slot that does not hold the committed state
                current = committed_slot(f)
                name = "b" if current is not None and current.name.endswith("/a") else "a"
                if name in f["state"]:
                    del f["state"][name]
                g = f["state"].create_group(name)
                for k, v in state.items():
                    g.create_dataset(k, data=v)
                g.attrs["rows"] = start + rows
                if extra and {**self.extra, **extra} != self.extra:  # rewritten only on a change
                    self.extra.update(extra)
                    f.attrs["extra"] = json.dumps(self.extra)
                f.flush()  # rows and new state on disk before the commit point moves
                # 3. the commit
                # modify() overwrites the scalar in place (no delete-and-create of the attribute)
                f.attrs.modify("generation_seconds", float(f.attrs["generation_seconds"]) + float(seconds))
                f.attrs.modify("n_rows", np.int64(start + rows))
                f.flush()
        except OSError as exc:  # a full disk: the committed rows and state are untouched
            raise write_failed(self.path, exc) from None

    def _check_keys(self, group: str, given: dict, expected) -> int | None:
        if set(given) != set(expected):
            miss, unknown = set(expected) - set(given), set(given) - set(expected)
            raise ValueError(f"{group}: missing {sorted(miss)}, unknown {sorted(unknown)}")
        rows = {np.shape(v)[0] for v in given.values() if np.ndim(v) >= 1}
        if len(rows) > 1:
            raise ValueError(f"{group}: blocks of different lengths {sorted(rows)}")
        return rows.pop() if rows else None

    def _check_configs(self, configs, rows: int | None) -> np.ndarray:
        ds = self._f["configs"]
        if configs is None:
            raise ValueError(f"{self.path} stores configurations: append needs configs")
        a = np.asarray(configs)
        want = ((rows if rows is not None else a.shape[0]), *ds.shape[1:])
        if a.shape != want:
            raise ValueError(f"configs: expected shape {want}, got {a.shape}")
        if np.iscomplexobj(a) and ds.dtype.kind != "c":
            raise ValueError(f"configs: complex data for a {ds.dtype} dataset")
        return a.astype(ds.dtype, copy=False)

    def __repr__(self) -> str:
        return f"EnsembleWriter({str(self.path)!r}, {self.n_chains} chains × {self.n_rows} rows)"
