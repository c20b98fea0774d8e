"""Ensemble files: C independent Markov chains advanced together, stored in one HDF5 file.

The format is :mod:`.format` (layout, checks), writing :mod:`.writer`, reading :mod:`.reader`.

Layout (format version 1; the contract of docs/design.md §6, also in ``docs/ensemble.md``).
Axis 0 is Monte Carlo time ("rows"), axis 1 the chain; a file holds ``n_rows × n_chains``
configurations.

Root attributes
    ``format`` = ``"latticeflow-ensemble"``, ``version`` = 1, ``theory`` (JSON of
    ``Theory.params()``), ``sampler`` (a registered name: ``hmc``, ``flow-mcmc``,
    ``flow-iid``, ``mixed``, ``flow-hmc``, …), ``weight_column`` and ``reweighted`` (how the
    rows are weighted, :class:`~.format.Weighting`; files written before they were recorded
    take them from their sampler's name), ``config`` (the TOML text), ``seed``, ``created``
    (ISO 8601, UTC), ``latticeflow_version``, ``n_chains``, ``n_rows`` (rows COMMITTED — the
    source of truth), ``generation_seconds`` (cumulative wall time) and ``extra`` (JSON:
    sampler settings such as a tuned step size).
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
(:func:`latticeflow.interrupts.deferred_signals`); the only unsafe window is a SIGKILL (or power loss) during
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


from ..errors import EnsembleError
from ..interrupts import deferred_signals
from .format import FORMAT, LEGACY_SAMPLERS, VERSION, Weighting, rows_needed
from .reader import Ensemble, LazyConfigs, open
from .writer import EnsembleWriter, create, holds_no_rows, open_for_append, read_resume_state
from .plan import check_fits, continues

__all__ = ["EnsembleError", "FORMAT", "VERSION", "LEGACY_SAMPLERS", "Weighting", "create", "open_for_append", "read_resume_state",
           "holds_no_rows", "continues", "check_fits", "open", "rows_needed",
           "deferred_signals", "EnsembleWriter", "Ensemble", "LazyConfigs"]
