"""The ensemble file format (version 1): names, attributes, and the checks every reader and
writer applies.  The layout is documented in :mod:`latticeflow.ensemble` and ``docs/ensemble.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import EnsembleError

__all__ = ["FORMAT", "VERSION", "SAMPLERS", "rows_needed"]

FORMAT = "latticeflow-ensemble"
VERSION = 1
SAMPLERS = ("hmc", "flow-mcmc", "flow-iid")
WEIGHT_COLUMN = {"hmc": "delta_h", "flow-mcmc": "log_weight", "flow-iid": "log_weight"}
FIELD_DTYPES = ("float32", "float64", "complex64", "complex128")
ATTRS = ("theory", "sampler", "config", "seed", "created", "latticeflow_version", "n_chains",
          "n_rows", "generation_seconds")
GROUPS = ("observables", "mcmc", "state")
ROW_CHUNK_BYTES = 1 << 16  # observables / mcmc: ~64 KiB chunks along the time axis


def rows_needed(n: int, n_chains: int) -> int:
    """Rows for a file holding at least ``n`` configurations: ``ceil(n / n_chains)``."""
    if n < 0 or n_chains < 1:
        raise ValueError(f"need n >= 0 and n_chains >= 1 (got n={n}, n_chains={n_chains})")
    return -(-n // n_chains)


# --- helpers ------------------------------------------------------------------------------
def normalise_theory(theory: dict) -> dict:
    """JSON round trip, so tuples and lists (``shape``) compare equal."""
    return json.loads(json.dumps(theory, sort_keys=True))


def describe_theory(theory: dict, keys) -> str:
    return ", ".join(f"{k}={theory[k]!r}" if k in theory else f"{k} unset" for k in keys)


def numpy_field_dtype(dtype) -> np.dtype:
    if dtype is None or str(dtype).startswith("torch."):  # torch.float32 → "float32"
        dtype = "float64" if dtype is None else str(dtype).removeprefix("torch.")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FIELD_DTYPES:
        raise ValueError(f"field_dtype must be one of {', '.join(FIELD_DTYPES)} (got {dtype})")
    return dt


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open an existing ensemble file and check what it claims to be."""
    if not path.exists():
        raise EnsembleError(f"{path}: no such file")
    if not path.is_file() or not h5py.is_hdf5(path):
        raise EnsembleError(f"{path} is not an HDF5 file, so not a latticeflow ensemble")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        text = str(err)
        reason = text[text.find("(") + 1 : text.rfind(")")] if "(" in text else text
        if "unable to lock" in text.lower():
            raise EnsembleError(f"{path} is open for writing by another process") from None
        raise EnsembleError(f"{path} is truncated or corrupt ({reason})") from None
    try:
        check_file(f, path)
    except BaseException:
        f.close()
        raise
    return f


def check_file(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise EnsembleError(f"{path} is not a latticeflow ensemble")
    version = int(f.attrs.get("version", 0))
    if version > VERSION:
        raise EnsembleError(
            f"{path} was written by a newer latticeflow (format version {version} > {VERSION})"
        )
    missing = [a for a in ATTRS if a not in f.attrs] + [g for g in GROUPS if g not in f]
    if missing:
        raise EnsembleError(f"{path} is corrupt: it lacks {', '.join(missing)}")
    n_rows, n_chains = int(f.attrs["n_rows"]), int(f.attrs["n_chains"])
    for name, ds in row_datasets(f).items():
        if ds.shape[0] < n_rows:
            raise EnsembleError(
                f"{path} is truncated: {name} holds {ds.shape[0]} rows, {n_rows} committed"
            )
        if ds.ndim < 2 or ds.shape[1] != n_chains:
            raise EnsembleError(f"{path} is corrupt: {name} has shape {ds.shape}")


def committed_slot(f: h5py.File):
    """The state slot (``state/a`` or ``state/b``) whose ``rows`` equals ``n_rows``, or None.

    Two slots make the commit atomic: a block writes its state into the slot that does not
    hold the committed one, flushes, and only then moves ``n_rows``.  A run killed in
    between resumes from the old slot, which still matches the committed rows.
    """
    n_rows = int(f.attrs["n_rows"])
    for name in ("a", "b"):
        if name in f["state"] and int(f["state"][name].attrs.get("rows", -1)) == n_rows:
            return f["state"][name]
    return None


def row_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out = {f"{g}/{k}": f[g][k] for g in ("observables", "mcmc") for k in f[g]}
    if "configs" in f:
        out["configs"] = f["configs"]
    return out


def check_column(value, name: str, rows: int | None, n_chains: int, dtype) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 2 or a.shape[1] != n_chains or (rows is not None and a.shape[0] != rows):
        want = f"({rows if rows is not None else 'rows'}, {n_chains})"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    return a.astype(dtype, copy=False)


class H5Handle:
    """An open HDF5 handle: ``close()`` it, or use the object as a context manager."""

    _f: h5py.File

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
