"""Writing ensembles: :func:`create` a new file, :func:`open_for_append` to continue one, and
:class:`EnsembleWriter`, whose :meth:`~EnsembleWriter.append` commits one block atomically
(rows first, then the resume state into the free slot, then ``n_rows``).
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import EnsembleError
from ..interrupts import deferred_signals
from .format import (FORMAT, SAMPLERS, VERSION, ROW_CHUNK_BYTES, WEIGHT_COLUMN, check_column,
                     committed_slot, describe_theory, numpy_field_dtype, H5Handle, normalise_theory, open_h5,
                     row_datasets)

__all__ = ["create", "open_for_append", "EnsembleWriter"]


def create(path, *, theory: dict, sampler: str, config_text: str, seed: int, n_chains: int,
           observables: list[str], mcmc: list[str], field_shape: tuple | None,
           field_dtype=None, extra: dict | None = None) -> "EnsembleWriter":
    """Create a new ensemble file (never overwrites: an existing path is an EnsembleError).

    ``mcmc`` must include ``accepted`` and the sampler's weight column (``delta_h`` for
    HMC, ``log_weight`` for flows).  ``field_shape=None`` switches configurations off.
    ``field_dtype`` is a numpy or torch dtype (default float64).
    """
    path = Path(path)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1 (got {n_chains})")
    required = ("accepted", WEIGHT_COLUMN[sampler])
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

    f = h5py.File(path, "w-")
    try:
        a = f.attrs
        a["format"], a["version"] = FORMAT, VERSION
        a["theory"] = json.dumps(normalise_theory(theory))
        a["sampler"], a["config"], a["seed"] = sampler, config_text, int(seed)
        a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        a["latticeflow_version"] = __version__
        a["n_chains"], a["n_rows"], a["generation_seconds"] = int(n_chains), 0, 0.0
        a["extra"] = json.dumps(extra or {})
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
        f.flush()
    except BaseException:
        f.close()
        path.unlink(missing_ok=True)  # never leave a half-made file behind
        raise
    return EnsembleWriter(f, path)


def open_for_append(path, *, theory: dict, sampler: str, n_chains: int) -> "EnsembleWriter":
    """Reopen an ensemble to continue it; refuses if physics, sampler or chain count differ.

    Rows written after the last commit (a run killed mid-block) are dropped.
    """
    path = Path(path)
    f = open_h5(path, "r+")
    try:
        held = json.loads(f.attrs["theory"])
        asked = normalise_theory(theory)
        if held != asked:
            if held.get("name") != asked.get("name"):
                msg = f"{path} holds {held.get('name')} but the config asks for {asked.get('name')}"
            else:
                keys = sorted(k for k in held.keys() | asked.keys() if held.get(k) != asked.get(k))
                msg = (f"{path} holds {held['name']} with {describe_theory(held, keys)} "
                       f"but the config asks for {describe_theory(asked, keys)}")
            raise EnsembleError(msg)
        if (held_sampler := f.attrs["sampler"]) != sampler:
            raise EnsembleError(
                f"{path} was made by sampler {held_sampler!r}, this run uses {sampler!r}")
        if (held_chains := int(f.attrs["n_chains"])) != n_chains:
            raise EnsembleError(f"{path} has {held_chains} chains but this run asks for {n_chains}")
        n_rows = int(f.attrs["n_rows"])
        with deferred_signals():
            for ds in row_datasets(f).values():
                if ds.shape[0] != n_rows:
                    ds.resize(n_rows, axis=0)
            f.flush()
    except BaseException:
        f.close()
        raise
    return EnsembleWriter(f, path)


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
            if extra:
                self.extra.update(extra)
                f.attrs["extra"] = json.dumps(self.extra)
            f.flush()  # rows and new state on disk before the commit point moves
            # 3. the commit
            f.attrs["generation_seconds"] = float(f.attrs["generation_seconds"]) + float(seconds)
            f.attrs["n_rows"] = start + rows
            f.flush()

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
