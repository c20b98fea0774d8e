"""The ensemble file format (version 1): names, attributes, and the checks every reader and
writer applies.  The layout is documented in :mod:`latticeflow.ensemble` and ``docs/ensemble.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import EnsembleError
from ..files import input_problem

__all__ = ["FORMAT", "VERSION", "LEGACY_SAMPLERS", "Weighting", "rows_needed", "weighting"]

FORMAT = "latticeflow-ensemble"
VERSION = 1


@dataclass(frozen=True)
class Weighting:
    """How a file's rows are weighted: its weight column under ``mcmc/`` (``log_weight``:
    log w = −S − log q of each row; ``delta_h``: the ΔH of each Metropolis test), and whether
    its averages are reweighted (⟨O⟩ = Σ w O / Σ w) rather than plain chain averages.
    Every file records both (root attributes ``weight_column``, ``reweighted``), so readers
    never ask which sampler wrote it."""

    column: str
    reweighted: bool = False
    proposals: bool = False  #: legacy samplers: whether it may store ``proposal_log_weight``


#: the samplers of files written before the weighting was recorded: what their names meant
LEGACY_SAMPLERS = {"hmc": Weighting("delta_h"), "flow-mcmc": Weighting("log_weight", proposals=True),
                   "flow-iid": Weighting("log_weight", reweighted=True),
                   "mixed": Weighting("log_weight", proposals=True), "flow-hmc": Weighting("delta_h")}


def weighting(attrs, sampler: str) -> Weighting | None:
    """The :class:`Weighting` a file records, else the one its (legacy) sampler name implies;
    None for an unknown sampler that records none."""
    if "weight_column" in attrs:
        return Weighting(str(attrs["weight_column"]), bool(attrs.get("reweighted", False)))
    return LEGACY_SAMPLERS.get(sampler)
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
    problem = input_problem(path, "latticeflow ensemble file")
    if problem and not path.is_dir():  # a symbolic link loop or to nothing, a FIFO: say which
        raise EnsembleError(f"{path}: {problem}")
    if path.is_dir():
        raise EnsembleError(f"{path} is a directory, not a latticeflow ensemble file")
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
    except EnsembleError:
        f.close()
        raise
    except Exception as exc:  # h5py surprises on damaged metadata
        f.close()
        raise EnsembleError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None
    except BaseException:
        f.close()
        raise
    return f


def attr(f: h5py.File, name: str, kind, path: Path):
    """Root attribute ``name`` as ``kind`` (int, float, str), or the reason it is not one."""
    try:
        value = f.attrs[name]
    except (KeyError, OSError, TypeError):
        raise EnsembleError(f"{path} is corrupt: it lacks the attribute {name}") from None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if kind is str:
        if not isinstance(value, str):
            raise EnsembleError(f"{path} is corrupt: attribute {name} is not text")
        return value
    if isinstance(value, (str, bool, np.bool_)) or np.ndim(value) != 0:
        raise EnsembleError(f"{path} is corrupt: attribute {name} = {value!r} is not a number")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise EnsembleError(f"{path} is corrupt: attribute {name} = {value!r} is not a number") from None
    if kind is int and number != value:
        raise EnsembleError(f"{path} is corrupt: attribute {name} = {value!r} is not an integer")
    return number


def json_attr(f: h5py.File, name: str, path: Path, default=None) -> dict:
    """A JSON-object root attribute (``theory``, ``extra``)."""
    if default is not None and name not in f.attrs:
        return default
    text = attr(f, name, str, path)
    try:
        value = json.loads(text)
    except ValueError:
        raise EnsembleError(f"{path} is corrupt: attribute {name} is not JSON") from None
    if not isinstance(value, dict):
        raise EnsembleError(f"{path} is corrupt: attribute {name} is not a JSON object")
    return value


def check_file(f: h5py.File, path: Path) -> None:
    """Refuse a file whose metadata disagree with its datasets, naming the reason."""
    if f.attrs.get("format") not in (FORMAT, FORMAT.encode()):
        raise EnsembleError(f"{path} is not a latticeflow ensemble")
    version = attr(f, "version", int, path)
    if version > VERSION:
        raise EnsembleError(f"{path} was written by a newer latticeflow (format version "
                            f"{version} > {VERSION})")
    if version < 1:
        raise EnsembleError(f"{path} is corrupt: format version {version}")
    missing = ([a for a in ATTRS if a not in f.attrs]
               + [g for g in GROUPS if not isinstance(f.get(g), h5py.Group)])
    if missing:
        raise EnsembleError(f"{path} is corrupt: it lacks {', '.join(missing)}")
    theory = json_attr(f, "theory", path)
    if not isinstance(theory.get("name"), str) or not isinstance(theory.get("shape"), list):
        raise EnsembleError(f"{path} is corrupt: attribute theory lacks a name or shape")
    json_attr(f, "extra", path, default={})
    sampler = attr(f, "sampler", str, path)
    if "weight_column" in f.attrs:
        attr(f, "weight_column", str, path)
        if not isinstance(f.attrs.get("reweighted"), (bool, np.bool_)):
            raise EnsembleError(f"{path} is corrupt: attribute reweighted is not a boolean")
    weights = weighting(f.attrs, sampler)
    legacy = LEGACY_SAMPLERS.get(sampler)
    if weights is None or not sampler:
        raise EnsembleError(f"{path} is corrupt: unknown sampler {sampler!r} and no weight_column")
    if legacy is not None and (weights.column, weights.reweighted) != (legacy.column, legacy.reweighted):
        raise EnsembleError(f"{path} is corrupt: a {sampler} ensemble weighted by {weights.column}"
                            f"{' (reweighted)' if weights.reweighted else ''}")
    for name in ("config", "created", "latticeflow_version"):
        attr(f, name, str, path)
    attr(f, "seed", int, path)
    n_rows, n_chains = attr(f, "n_rows", int, path), attr(f, "n_chains", int, path)
    seconds = attr(f, "generation_seconds", float, path)
    if n_rows < 0 or n_chains < 1 or not np.isfinite(seconds) or seconds < 0:
        raise EnsembleError(f"{path} is corrupt: n_rows = {n_rows}, n_chains = {n_chains}, "
                            f"generation_seconds = {seconds}")
    datasets = row_datasets(f)
    if not any(k.startswith("observables/") for k in datasets):
        raise EnsembleError(f"{path} is corrupt: it holds no observables")
    for column in ("accepted", weights.column):
        if f"mcmc/{column}" not in datasets:
            raise EnsembleError(f"{path} is corrupt: mcmc/{column} is missing")
    if "mcmc/proposal_log_weight" in datasets and legacy is not None and not legacy.proposals:
        raise EnsembleError(f"{path} is corrupt: its mcmc columns do not belong to a {sampler} ensemble")
    for name, ds in datasets.items():
        kind = ds.dtype.kind
        want = {"mcmc/accepted": "b", "configs": "fc"}.get(name, "f")
        if kind not in want:
            raise EnsembleError(f"{path} is corrupt: {name} has dtype {ds.dtype}")
    for name, ds in datasets.items():
        if ds.ndim < 2 or ds.shape[1] != n_chains:
            raise EnsembleError(f"{path} is corrupt: {name} has shape {ds.shape} for {n_chains} chains")
        if ds.shape[0] < n_rows:
            raise EnsembleError(f"{path} is truncated: {name} holds {ds.shape[0]} rows, {n_rows} committed")
        if not name.startswith("configs") and ds.ndim != 2:
            raise EnsembleError(f"{path} is corrupt: {name} has shape {ds.shape}")


def row_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out = {}
    for g in ("observables", "mcmc"):
        for k, v in f[g].items():
            if not isinstance(v, h5py.Dataset):
                raise EnsembleError(f"{f.filename} is corrupt: {g}/{k} is not a dataset")
            out[f"{g}/{k}"] = v
    if "configs" in f:
        if not isinstance(f["configs"], h5py.Dataset):
            raise EnsembleError(f"{f.filename} is corrupt: configs is not a dataset")
        out["configs"] = f["configs"]
    return out


def committed_slot(f: h5py.File):
    """The state slot (``state/a`` or ``state/b``) whose ``rows`` equals ``n_rows``, or None.

    Two slots make the commit atomic: a block writes its state into the slot that does not
    hold the committed one, flushes, and only then moves ``n_rows``.  A run killed in
    between resumes from the old slot, which still matches the committed rows.
    """
    n_rows = int(f.attrs["n_rows"])
    for name in ("a", "b"):
        slot = f["state"].get(name)
        if isinstance(slot, h5py.Group) and _slot_rows(slot) == n_rows:
            return slot
    return None


def _slot_rows(slot) -> int:
    try:
        rows = slot.attrs.get("rows", -1)
        return int(rows) if np.ndim(rows) == 0 and not isinstance(rows, (str, bytes)) else -1
    except (TypeError, ValueError, OverflowError):
        return -1




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
        try:
            self._f.close()
        except OSError:  # a full disk at close: what was committed was flushed before
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
