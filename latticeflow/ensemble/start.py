"""Chains that start from another ensemble's configurations (``[sample] start``).

A sampler's fresh chains normally start from a flow sample.  Started instead from the last
stored configuration of each chain of an equilibrium ensemble (an HMC run, say), they are in
equilibrium from their first step: no burn-in, and the chains are independent replicas, so
even runs much shorter than τ_int give unbiased means whose error the spread of the
chains' means measures (``benchmarks/stationarity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EnsembleError
from .reader import open as open_ensemble

__all__ = ["StartFields", "start_fields", "find_start"]


@dataclass(frozen=True)
class StartFields:
    """Fields ``(chains, *field_shape)`` that start the chains, and where they came from
    (``record``: file, its sampler and seed, the row and chains read; stored in the new
    ensemble's ``extra``)."""

    fields: np.ndarray
    record: dict


def start_fields(path, theory_name: str, field_shape, chains: int, first: int = 0,
                 what: str = "sample.start") -> StartFields:
    """The last committed configuration of chains ``first … first + chains − 1`` of the
    ensemble at ``path``, which must hold configurations of a theory named ``theory_name``
    on fields of ``field_shape`` (its couplings may differ: a warm start at another β).

    Raises :class:`~latticeflow.errors.EnsembleError` (one line, naming ``what``) when the
    file is missing or damaged, stores no configurations or none yet, has too few chains,
    belongs to another theory or lattice, or holds non-finite fields.
    """
    path = Path(path)
    try:
        ens = open_ensemble(path)
    except EnsembleError as exc:
        raise EnsembleError(f"{what}: {exc}") from None
    with ens:
        name = ens.theory.get("name")
        if name != theory_name:
            raise EnsembleError(f"{what}: {path} is an ensemble of {name!r}, not of {theory_name!r}")
        if not ens.has_configs:
            raise EnsembleError(f"{what}: {path} stores no configurations (it was written with "
                                "--no-configs), so it cannot start chains")
        shape = tuple(ens.configs.shape[2:])
        if shape != tuple(field_shape):
            raise EnsembleError(f"{what}: {path} holds fields of shape {shape}, this lattice's "
                                f"are {tuple(field_shape)}")
        if ens.n_rows == 0:
            raise EnsembleError(f"{what}: {path} holds no committed configurations yet")
        if first + chains > ens.n_chains:
            need = f"chains {first}–{first + chains - 1}" if first else f"{chains} chains"
            raise EnsembleError(f"{what}: {path} has {ens.n_chains} chains; this run starts "
                                f"{need} from it")
        row = ens.n_rows - 1
        fields = np.asarray(ens.configs[row, first : first + chains])
        record = {"path": str(path), "resolved": str(path.resolve()), "sampler": ens.sampler,
                  "seed": ens.seed, "created": ens.created, "theory": ens.theory, "row": row,
                  "chains": [first, first + chains]}
    if fields.dtype.kind not in "fc" or not np.all(np.isfinite(fields)):
        raise EnsembleError(f"{what}: {path} row {row} holds non-finite fields")
    return StartFields(fields, record)


def find_start(name: str, model_path=None) -> Path:
    """The file ``[sample] start`` names: a relative path is looked up from the current
    directory, then beside the model file ``model_path``."""
    candidates = [Path(name)]
    if not Path(name).is_absolute() and model_path is not None:
        candidates.append(Path(model_path).parent / name)
    return next((c for c in candidates if c.exists()), Path(name))
