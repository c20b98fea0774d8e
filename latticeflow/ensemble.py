"""Ensemble files: C independent Markov chains advanced together, stored in one HDF5 file.

Layout (format version 1; the contract of DESIGN.md §6, also in ``docs/ensemble.md``).
Axis 0 is Monte Carlo time ("rows"), axis 1 the chain; a file holds ``n_rows × n_chains``
configurations.

Root attributes
    ``format`` = ``"latticeflow-ensemble"``, ``version`` = 1, ``theory`` (JSON of
    ``Theory.params()``), ``sampler`` (``hmc`` | ``flow-mcmc`` | ``flow-iid``), ``config``
    (the TOML text), ``seed``, ``created`` (ISO 8601, UTC), ``latticeflow_version``,
    ``n_chains``, ``n_rows`` (rows COMMITTED — the source of truth), ``generation_seconds``
    (cumulative wall time) and ``extra`` (JSON: sampler settings such as a tuned step size).
Datasets (resizable along axis 0, chunked along axis 0)
    ``observables/<name>``   float64 ``(n_rows, C)``
    ``mcmc/accepted``        bool    ``(n_rows, C)``
    ``mcmc/<column>``        float64 ``(n_rows, C)``: ``log_weight`` (flow samplers),
                             ``delta_h`` (HMC), or any extra column named at creation
    ``configs``              optional, ``(n_rows, C, *field_shape)``, the field dtype
                             (float32/64, complex64/128), one row per chunk, uncompressed
    ``state/{a,b}/<name>``   what a resume needs (current fields, log weights, RNG states
                             as uint8 arrays), in two slots; the slot whose ``rows``
                             attribute equals ``n_rows`` is the committed one

Crash safety: :meth:`EnsembleWriter.append` writes the new rows and the new state (into
the slot that is not the committed one), flushes, and only then moves ``n_rows`` and
``generation_seconds`` and flushes again.  Readers and resumes trust only the first
``n_rows`` rows and the matching state slot, so a run killed anywhere before the commit
resumes exactly where the last committed block ended.  SIGINT/SIGTERM are deferred until the block is committed
(:func:`deferred_signals`); the only unsafe window is a SIGKILL (or power loss) during
the final metadata flush, which HDF5 cannot make atomic.

Example:
    >>> w = create("run.h5", theory={"name": "u1", "shape": [8, 8], "beta": 2.0},
    ...            sampler="hmc", config_text=toml, seed=1, n_chains=4,
    ...            observables=["plaquette"], mcmc=["accepted", "delta_h"],
    ...            field_shape=(2, 8, 8))                                # doctest: +SKIP
    >>> with open("run.h5") as ens:                                      # doctest: +SKIP
    ...     ens.observable("plaquette").shape, ens.configs[10:20, 0].shape
    ((n_rows, 4), (10, 2, 8, 8))
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import signal
import threading
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from . import __version__
from .errors import EnsembleError

__all__ = ["FORMAT", "VERSION", "SAMPLERS", "create", "open_for_append", "open", "rows_needed",
           "deferred_signals", "EnsembleWriter", "Ensemble", "LazyConfigs"]

FORMAT = "latticeflow-ensemble"
VERSION = 1
SAMPLERS = ("hmc", "flow-mcmc", "flow-iid")
_WEIGHT_COLUMN = {"hmc": "delta_h", "flow-mcmc": "log_weight", "flow-iid": "log_weight"}
_FIELD_DTYPES = ("float32", "float64", "complex64", "complex128")
_ATTRS = ("theory", "sampler", "config", "seed", "created", "latticeflow_version", "n_chains",
          "n_rows", "generation_seconds")
_GROUPS = ("observables", "mcmc", "state")
_ROW_CHUNK_BYTES = 1 << 16  # observables / mcmc: ~64 KiB chunks along the time axis


def rows_needed(n: int, n_chains: int) -> int:
    """Rows for a file holding at least ``n`` configurations: ``ceil(n / n_chains)``."""
    if n < 0 or n_chains < 1:
        raise ValueError(f"need n >= 0 and n_chains >= 1 (got n={n}, n_chains={n_chains})")
    return -(-n // n_chains)


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block exits, then deliver them to the old handlers.

    Ctrl-C during a write therefore lands after the block is committed.  Outside the main
    thread Python cannot install handlers, and the block runs undeferred.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(received):
            signal.raise_signal(s)


# --- helpers ------------------------------------------------------------------------------
def _normalise_theory(theory: dict) -> dict:
    """JSON round trip, so tuples and lists (``shape``) compare equal."""
    return json.loads(json.dumps(theory, sort_keys=True))


def _describe(theory: dict, keys) -> str:
    return ", ".join(f"{k}={theory[k]!r}" if k in theory else f"{k} unset" for k in keys)


def _field_dtype(dtype) -> np.dtype:
    if dtype is None or str(dtype).startswith("torch."):  # torch.float32 → "float32"
        dtype = "float64" if dtype is None else str(dtype).removeprefix("torch.")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _FIELD_DTYPES:
        raise ValueError(f"field_dtype must be one of {', '.join(_FIELD_DTYPES)} (got {dtype})")
    return dt


def _open_h5(path: Path, mode: str) -> h5py.File:
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
        _check_file(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _check_file(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise EnsembleError(f"{path} is not a latticeflow ensemble")
    version = int(f.attrs.get("version", 0))
    if version > VERSION:
        raise EnsembleError(
            f"{path} was written by a newer latticeflow (format version {version} > {VERSION})"
        )
    missing = [a for a in _ATTRS if a not in f.attrs] + [g for g in _GROUPS if g not in f]
    if missing:
        raise EnsembleError(f"{path} is corrupt: it lacks {', '.join(missing)}")
    n_rows, n_chains = int(f.attrs["n_rows"]), int(f.attrs["n_chains"])
    for name, ds in _row_datasets(f).items():
        if ds.shape[0] < n_rows:
            raise EnsembleError(
                f"{path} is truncated: {name} holds {ds.shape[0]} rows, {n_rows} committed"
            )
        if ds.ndim < 2 or ds.shape[1] != n_chains:
            raise EnsembleError(f"{path} is corrupt: {name} has shape {ds.shape}")


def _committed_slot(f: h5py.File):
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


def _row_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out = {f"{g}/{k}": f[g][k] for g in ("observables", "mcmc") for k in f[g]}
    if "configs" in f:
        out["configs"] = f["configs"]
    return out


def _column(value, name: str, rows: int | None, n_chains: int, dtype) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 2 or a.shape[1] != n_chains or (rows is not None and a.shape[0] != rows):
        want = f"({rows if rows is not None else 'rows'}, {n_chains})"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    return a.astype(dtype, copy=False)


# --- writing ------------------------------------------------------------------------------
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
    required = ("accepted", _WEIGHT_COLUMN[sampler])
    missing = [c for c in required if c not in mcmc]
    if missing:
        raise ValueError(f"mcmc columns for sampler {sampler!r} must include {', '.join(missing)}")
    for group, names in (("observables", observables), ("mcmc", mcmc)):
        if len(set(names)) != len(names) or not all(n and "/" not in n for n in names):
            raise ValueError(f"{group}: names must be unique, non-empty and without '/'")
    dtype = _field_dtype(field_dtype) if field_shape is not None else None
    if path.exists():
        raise EnsembleError(f"{path} already exists (resume it, or choose another output file)")
    path.parent.mkdir(parents=True, exist_ok=True)

    f = h5py.File(path, "w-")
    try:
        a = f.attrs
        a["format"], a["version"] = FORMAT, VERSION
        a["theory"] = json.dumps(_normalise_theory(theory))
        a["sampler"], a["config"], a["seed"] = sampler, config_text, int(seed)
        a["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        a["latticeflow_version"] = __version__
        a["n_chains"], a["n_rows"], a["generation_seconds"] = int(n_chains), 0, 0.0
        a["extra"] = json.dumps(extra or {})
        chunk_rows = max(1, _ROW_CHUNK_BYTES // (8 * n_chains))
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
    f = _open_h5(path, "r+")
    try:
        held = json.loads(f.attrs["theory"])
        asked = _normalise_theory(theory)
        if held != asked:
            if held.get("name") != asked.get("name"):
                msg = f"{path} holds {held.get('name')} but the config asks for {asked.get('name')}"
            else:
                keys = sorted(k for k in held.keys() | asked.keys() if held.get(k) != asked.get(k))
                msg = (f"{path} holds {held['name']} with {_describe(held, keys)} "
                       f"but the config asks for {_describe(asked, keys)}")
            raise EnsembleError(msg)
        if (held_sampler := f.attrs["sampler"]) != sampler:
            raise EnsembleError(
                f"{path} was made by sampler {held_sampler!r}, this run uses {sampler!r}")
        if (held_chains := int(f.attrs["n_chains"])) != n_chains:
            raise EnsembleError(f"{path} has {held_chains} chains but this run asks for {n_chains}")
        n_rows = int(f.attrs["n_rows"])
        with deferred_signals():
            for ds in _row_datasets(f).values():
                if ds.shape[0] != n_rows:
                    ds.resize(n_rows, axis=0)
            f.flush()
    except BaseException:
        f.close()
        raise
    return EnsembleWriter(f, path)


class _File:
    """An open HDF5 handle: ``close()`` it, or use the object as a context manager."""

    _f: h5py.File

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EnsembleWriter(_File):
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
        slot = _committed_slot(self._f)
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
                cols[f"{group}/{name}"] = _column(value, f"{group}/{name}", rows, self.n_chains, dt)
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
            current = _committed_slot(f)
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


# --- reading ------------------------------------------------------------------------------
def open(path) -> "Ensemble":  # noqa: A001 — the module's reader, as DESIGN.md names it
    """Open an ensemble read-only (EnsembleError if it is missing, foreign or damaged)."""
    path = Path(path)
    return Ensemble(_open_h5(path, "r"), path)


class Ensemble(_File):
    """A read-only ensemble: metadata, observables and lazily read configurations.

    Arrays are ``(n_rows, n_chains)``; only committed rows are ever returned.
    """

    def __init__(self, f: h5py.File, path: Path):
        a = f.attrs
        self._f, self.path = f, path
        self.theory: dict = json.loads(a["theory"])
        self.sampler: str = str(a["sampler"])
        self.config_text: str = str(a["config"])
        self.seed, self.created = int(a["seed"]), str(a["created"])
        self.version, self.latticeflow_version = int(a["version"]), str(a["latticeflow_version"])
        self.n_chains, self.n_rows = int(a["n_chains"]), int(a["n_rows"])
        self.generation_seconds = float(a["generation_seconds"])
        self.extra: dict = json.loads(a.get("extra", "{}"))

    @property
    def n(self) -> int:
        """Configurations in the file: ``n_rows × n_chains``."""
        return self.n_rows * self.n_chains

    @property
    def observables(self) -> dict[str, np.ndarray]:
        return {k: ds[: self.n_rows] for k, ds in self._f["observables"].items()}

    def observable(self, name: str) -> np.ndarray:
        if name not in self._f["observables"]:
            known = ", ".join(self._f["observables"])
            raise KeyError(f"{self.path} has no observable {name!r} (it has: {known})")
        return self._f["observables"][name][: self.n_rows]

    @property
    def mcmc(self) -> dict[str, np.ndarray]:
        return {k: ds[: self.n_rows] for k, ds in self._f["mcmc"].items()}

    def _mcmc_column(name: str):  # noqa: N805 — builds the properties below
        def read(self) -> np.ndarray | None:
            g = self._f["mcmc"]
            return g[name][: self.n_rows] if name in g else None
        return property(read, doc=f"``mcmc/{name}`` ``(n_rows, C)``, or None if absent")

    accepted = _mcmc_column("accepted")
    log_weight = _mcmc_column("log_weight")
    delta_h = _mcmc_column("delta_h")

    @property
    def has_configs(self) -> bool:
        return "configs" in self._f

    @property
    def configs(self) -> "LazyConfigs | None":
        return LazyConfigs(self._f["configs"], self.n_rows) if self.has_configs else None

    def __repr__(self) -> str:
        physics = " ".join([str(self.theory.get("name"))]
                           + [f"{k}={v}" for k, v in self.theory.items() if k != "name"])
        what = ", ".join(self._f["observables"]) or "none"
        return (f"Ensemble({str(self.path)!r}: {physics}, "
                f"sampler={self.sampler}, {self.n_chains} chains × {self.n_rows} rows = "
                f"{self.n} configs, observables: {what}, "
                f"configs {'stored' if self.has_configs else 'not stored'})")


class LazyConfigs:
    """Configurations ``(n_rows, n_chains, *field_shape)`` read from disk on indexing.

    ``configs[i]``, ``configs[a:b]``, ``configs[rows, chain]``, ``configs[[3, 1, 3]]``
    return numpy arrays holding only the selection; rows beyond the committed ``n_rows``
    do not exist.
    """

    def __init__(self, ds: h5py.Dataset, n_rows: int):
        self._ds, self._n_rows = ds, n_rows

    def __len__(self) -> int:
        return self._n_rows

    shape = property(lambda self: (self._n_rows, *self._ds.shape[1:]))
    dtype = property(lambda self: self._ds.dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        row_key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if row_key is Ellipsis:
            row_key, rest = slice(None), key
        sel, local = self._rows(row_key)
        simple = all(k is Ellipsis or isinstance(k, (int, np.integer))
                     or (isinstance(k, slice) and (k.step or 1) > 0) for k in rest)
        if simple:  # basic indexing: h5py reads only the selection
            return self._ds[(sel, *rest)][local]
        # numpy's advanced-indexing rules, applied to the rows read
        return self._ds[sel][(local, *rest)]

    def _rows(self, key):
        """An increasing h5py row selection that keeps axis 0, and the index into what it reads
        that gives numpy's answer for ``key``."""
        n = self._n_rows
        if isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return slice(int(key) % n, int(key) % n + 1), 0
        if isinstance(key, slice):
            r = range(*key.indices(n))
            if r.step > 0:
                return slice(r.start, max(r.start, r.stop), r.step), slice(None)
            if not r:
                return slice(0, 0), slice(None)
            return slice(r[-1], r[0] + 1, -r.step), slice(None, None, -1)
        idx = np.arange(n)[np.asarray(key)]  # bools, negatives, bounds, like numpy
        unique, inverse = np.unique(idx, return_inverse=True)
        return list(unique), inverse.reshape(idx.shape)
