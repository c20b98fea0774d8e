"""Reading ensembles: :func:`open` gives an :class:`Ensemble` (metadata, observables as numpy
arrays, lazily read configurations); only committed rows are ever returned.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .format import H5Handle, open_h5, weighting
from .join import check_parts

__all__ = ["open", "Ensemble", "LazyConfigs"]


def open(path) -> "Ensemble":  # noqa: A001 — the module's reader, as docs/design.md names it
    """Open an ensemble read-only (EnsembleError if it is missing, foreign or damaged, or a
    joined file whose per-rank parts are)."""
    path = Path(path)
    f = open_h5(path, "r")
    try:
        check_parts(f, path)
    except BaseException:
        f.close()
        raise
    return Ensemble(f, path)


class Ensemble(H5Handle):
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
        #: how the rows are weighted (:class:`~latticeflow.ensemble.format.Weighting`)
        self.weights = weighting(a, self.sampler)

    @property
    def reweighted(self) -> bool:
        """Whether averages are reweighted, ⟨O⟩ = Σ w O / Σ w with w = exp(log_weight)
        (i.i.d. flow samples), rather than plain chain averages."""
        return self.weights.reweighted

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
