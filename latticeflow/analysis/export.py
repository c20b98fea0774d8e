"""Ensembles for the tools lattice physicists already use: pyerrors, CSV and NumPy files.

Conventions (docs/export.md):

- Chains are replicas: a file of C chains becomes one pyerrors ensemble ``name`` (default:
  the file's stem) with replicas ``name|r0`` … ``name|r{C-1}``, each the chain's
  ``n_rows`` measurements in Monte Carlo order (pyerrors' configurations 1 … n_rows).
- Reweighted files (``ens.reweighted``: i.i.d. flow samples, ⟨O⟩ = Σ w O / Σ w with
  w = exp(log_weight)) give reweighted Obs, ``pe.reweight(W, [O])`` with W the Obs of
  w = exp(log_weight − max log_weight); W itself is returned as ``"reweighting_factor"``,
  so that derived quantities carry the weights' fluctuations in their errors.
- Provenance (:func:`provenance`) travels with every export: theory (JSON), sampler, seed,
  source file, the versions of latticeflow that wrote and exported it, and the config TOML.
- CSV: one row per (chain, Monte Carlo step), chain-major; the first line names the
  columns ``chain,step,<observables…>,<mcmc columns…>``, then the provenance as ``# ``
  comment lines, then the data (floats to 17 significant digits, ``accepted`` as 0/1).
- NPZ: ``observables/<name>`` and ``mcmc/<column>`` arrays shaped (n_rows, n_chains), as in
  the HDF5 file, and ``provenance/<key>`` 0-d string arrays.
- Every output is written under a temporary name beside it and renamed into place.

pyerrors (arXiv:2209.14371) is optional: ``pip install pyerrors``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import LatticeflowError
from ..files import atomic_write, atomic_write_text, check_writable

__all__ = ["to_pyerrors", "provenance", "write_pyerrors", "write_csv", "write_npz",
           "export_files", "check_outputs", "require_pyerrors", "REWEIGHTING_FACTOR"]

#: the key of the weight Obs in :func:`to_pyerrors` of a reweighted file
REWEIGHTING_FACTOR = "reweighting_factor"


def require_pyerrors():
    """The ``pyerrors`` module, or a one-line :class:`LatticeflowError` saying how to get it."""
    try:
        import pyerrors
    except ImportError:
        raise LatticeflowError("exporting to pyerrors needs pyerrors: pip install pyerrors "
                               "(or pip install 'latticeflow[pyerrors]')") from None
    return pyerrors


def _is_reweighted(ens) -> bool:
    return bool(ens.weights is not None and ens.weights.reweighted)


def _finite(ens, name: str, values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise LatticeflowError(f"{ens.path}: observables/{name} holds non-finite values in "
                               "committed rows (the file is damaged)")
    return np.asarray(values, dtype=np.float64)


def _selected(ens, observables) -> dict[str, np.ndarray]:
    stored = ens.observables
    if observables is None:
        return stored
    names = [observables] if isinstance(observables, str) else list(observables)
    unknown = [n for n in names if n not in stored]
    if unknown:
        raise LatticeflowError(f"{ens.path}: no observable {', '.join(map(repr, unknown))} "
                               f"(it has: {', '.join(stored) or 'none'})")
    return {n: stored[n] for n in names}


def _ensemble_name(ens, name: str | None) -> str:
    name = Path(ens.path).stem if name is None else str(name)
    if not name or "|" in name or name.strip() != name:
        raise LatticeflowError(f"ensemble name {name!r} cannot name a pyerrors ensemble (give one "
                               "with --name: non-empty, without '|' and surrounding spaces)")
    return name


def to_pyerrors(ens, name: str | None = None, observables=None) -> dict:
    """``{observable: pyerrors.Obs}`` of an open ensemble, one replica per chain.

    Arguments:
        ens: an open :class:`latticeflow.ensemble.Ensemble`.
        name: the pyerrors ensemble name (default: the file's stem); replicas are
            ``f"{name}|r{c}"`` for chain c.
        observables: the names to export (default: all stored).

    Reweighted files give reweighted Obs (:func:`pyerrors.reweight`) and the weight Obs
    under :data:`REWEIGHTING_FACTOR`.  The Obs are not yet analysed: call
    ``obs.gamma_method(S=1.5)`` for latticeflow's window parameter (pyerrors' default is 2).
    """
    pe = require_pyerrors()
    name = _ensemble_name(ens, name)
    chosen = _selected(ens, observables)
    if ens.n_rows < 1:
        raise LatticeflowError(f"{ens.path}: holds no committed rows, nothing to export")
    replicas = [f"{name}|r{c}" for c in range(ens.n_chains)]

    def obs(values: np.ndarray):  # (n_rows, C) -> one replica per chain
        return pe.Obs([np.ascontiguousarray(values[:, c]) for c in range(ens.n_chains)], replicas)

    out = {k: obs(_finite(ens, k, v)) for k, v in chosen.items()}
    if not _is_reweighted(ens):
        return out
    log_w = ens.log_weight
    if log_w is None or np.isnan(log_w).any() or np.isposinf(log_w).any() or not np.isfinite(log_w).any():
        raise LatticeflowError(f"{ens.path}: a reweighted file needs mcmc/log_weight without NaN "
                               "or +inf and with some finite weight")
    weight = obs(np.exp(log_w - log_w.max()))
    names = list(out)
    out = dict(zip(names, pe.reweight(weight, [out[k] for k in names])))
    out[REWEIGHTING_FACTOR] = weight
    return out


def provenance(ens) -> dict[str, str]:
    """Where an export comes from, as strings: source file, theory (JSON), sampler, seed,
    creation time, chains and rows, weighting, the latticeflow versions that wrote the file
    and exported it, and the config TOML."""
    weights = ens.weights
    return {
        "source": str(ens.path),
        "theory": json.dumps(ens.theory, sort_keys=True),
        "sampler": str(ens.sampler),
        "seed": str(ens.seed),
        "created": str(getattr(ens, "created", "")),
        "n_chains": str(ens.n_chains),
        "n_rows": str(ens.n_rows),
        "weight_column": "" if weights is None else str(weights.column),
        "reweighted": "true" if _is_reweighted(ens) else "false",
        "written_by": f"latticeflow {getattr(ens, 'latticeflow_version', 'unknown')}",
        "exported_by": f"latticeflow {__version__}",
        "config": str(ens.config_text),
    }


def write_pyerrors(ens, path, name: str | None = None) -> Path:
    """pyerrors' own gzipped JSON (``pe.input.json.load_json_dict(path)`` reads it back) of
    :func:`to_pyerrors`, with :func:`provenance` (theory as a dict) as its description."""
    path = _pyerrors_path(path)
    check_writable(path)
    pe = require_pyerrors()
    data = to_pyerrors(ens, name)
    description = provenance(ens) | {"theory": ens.theory, "format": "latticeflow export (docs/export.md)"}
    atomic_write(path, lambda tmp: pe.input.json.dump_dict_to_json(
        data, str(tmp), description=description, gz=True), ".json.gz")
    return path


def _pyerrors_path(path) -> Path:
    path = Path(path)
    if not path.name.endswith(".json.gz"):
        raise LatticeflowError(f"--pyerrors: {path}: name the file *.json.gz (pyerrors' "
                               "load_json_dict reads gzipped JSON by that name)")
    return path


def _columns(ens) -> dict[str, np.ndarray]:
    """Every observable, then every mcmc column, each (n_rows, C)."""
    columns = {k: _finite(ens, k, v) for k, v in ens.observables.items()}
    for key, values in ens.mcmc.items():
        if key in columns:
            key = f"mcmc_{key}"
        columns[key] = np.asarray(values)
    return columns


def _format(values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.int8).astype(str)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(str)
    return np.char.mod("%.17g", values.astype(np.float64))


def write_csv(ens, path) -> Path:
    """One row per (chain, Monte Carlo step); the column names first, then :func:`provenance`
    as ``# key: value`` lines (the config TOML indented below ``# config:``), then the data.

    ``numpy.loadtxt(path, delimiter=",", comments="#", skiprows=1)`` reads the numbers,
    ``numpy.genfromtxt(path, delimiter=",", comments="#", names=True)`` and
    ``pandas.read_csv(path, comment="#")`` the named columns.
    """
    path = Path(path)
    check_writable(path)
    columns = _columns(ens)
    rows, chains = ens.n_rows, ens.n_chains
    table = [np.repeat(np.arange(chains), rows).astype(str), np.tile(np.arange(rows), chains).astype(str)]
    if any("," in k or "\n" in k or k.startswith("#") for k in columns):
        raise LatticeflowError(f"{ens.path}: a column name holds a comma or newline; export to npz instead")
    table += [_format(np.asarray(v).T.reshape(-1)) for v in columns.values()]
    header = ",".join(["chain", "step", *columns])
    lines = [header]
    for key, value in provenance(ens).items():
        if key == "config":
            lines.append("# config:")
            lines += [f"#   {line}".rstrip() for line in value.splitlines()]
        else:
            lines.append(f"# {key}: {value}".replace("\n", "\\n"))
    text = io.StringIO()
    text.write("\n".join(lines) + "\n")
    if rows:
        np.savetxt(text, np.stack(table, axis=1), fmt="%s", delimiter=",")
    atomic_write_text(path, text.getvalue())
    return path


def write_npz(ens, path) -> Path:
    """``numpy.savez_compressed``: ``observables/<name>``, ``mcmc/<column>`` (n_rows, n_chains)
    and ``provenance/<key>`` (0-d str) arrays; ``numpy.load(path)`` reads them back."""
    path = Path(path)
    check_writable(path)
    arrays = {f"observables/{k}": _finite(ens, k, v) for k, v in ens.observables.items()}
    arrays |= {f"mcmc/{k}": np.asarray(v) for k, v in ens.mcmc.items()}
    arrays |= {f"provenance/{k}": np.array(v) for k, v in provenance(ens).items()}

    def save(tmp):
        with open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez_compressed(fh, **arrays)

    atomic_write(path, save, ".npz")
    return path


def check_outputs(ensemble_path, pyerrors=None, csv=None, npz=None) -> list[Path]:
    """Refuse, before any work, outputs that are missing, clash, overwrite the ensemble or
    cannot be written; the pyerrors one also needs pyerrors installed."""
    given = {flag: Path(p) for flag, p in (("--pyerrors", pyerrors), ("--csv", csv), ("--npz", npz))
             if p is not None}
    if not given:
        raise LatticeflowError("export: give at least one output: --pyerrors OUT.json.gz, "
                               "--csv OUT.csv or --npz OUT.npz")
    seen = {Path(os.path.realpath(ensemble_path)): "the ensemble file"}
    for flag, path in given.items():
        where = Path(os.path.realpath(path))  # symbolic links resolved: never write over the input
        if where in seen:
            raise LatticeflowError(f"{flag}: {path} is also {seen[where]}; name another file")
        seen[where] = f"the {flag} output"
        _check_replaceable(flag, path)
    if "--pyerrors" in given:
        _pyerrors_path(given["--pyerrors"])
        require_pyerrors()
    for path in given.values():
        check_writable(path)
    return list(given.values())


def _check_replaceable(flag: str, path: Path) -> None:
    """An output may replace a regular file of its own kind, never a FIFO, a device, a
    directory or an HDF5 file (an ensemble), and its directory must exist."""
    import h5py

    parent = Path(os.path.realpath(path)).parent
    if parent.exists() and not parent.is_dir():
        raise LatticeflowError(f"{flag}: {path}: {parent} is not a directory")
    if not parent.is_dir():
        raise LatticeflowError(f"{flag}: {path}: the directory {parent} does not exist")
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise LatticeflowError(f"{flag}: {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise LatticeflowError(f"{flag}: {path} exists and is not a regular file (a FIFO, socket or device); "
                               "name another file")
    if h5py.is_hdf5(path):
        raise LatticeflowError(f"{flag}: {path} is an HDF5 file (an ensemble?); exports never replace one: "
                               "name another file")


def export_files(ens, pyerrors=None, csv=None, npz=None, name: str | None = None) -> list[Path]:
    """Write the outputs named (each optional, at least one) of an open ensemble; returns
    their paths.  All are checked (:func:`check_outputs`) before any is written."""
    check_outputs(ens.path, pyerrors, csv, npz)
    if pyerrors is not None:
        _ensemble_name(ens, name)
    written = []
    if pyerrors is not None:
        written.append(write_pyerrors(ens, pyerrors, name))
    if csv is not None:
        written.append(write_csv(ens, csv))
    if npz is not None:
        written.append(write_npz(ens, npz))
    return written
