"""Run a batch of Markov chains into an HDF5 ensemble, in blocks, resumably.

A *chain sampler* is any object with

    sampler: str                          # its registered name (latticeflow.samplers), e.g. "mixed"
    n_chains: int
    mcmc_columns: list[str]               # e.g. ["accepted", "delta_h"]
    start(state: ChainState | None) -> None  # None: fresh start (thermalise); else restore
    advance(rows: int) -> Block           # the next `rows` steps of every chain
    state() -> ChainState                 # what a resume needs (fields, RNG, step size), typed
    extra() -> dict                       # settings to record (tuned step size, ...)

:func:`run_ensemble` starts a fresh sampler *before* creating the file (so an interrupted
thermalisation leaves no file behind), or reopens an existing file — refusing different
physics — restores the sampler from the file's ``state`` and continues until the file
holds ``n`` configurations.  Each block is committed with the state it ends in, so a
killed run resumes exactly where the last committed block ended.  ``keep`` names the
settings that define the chains (seed, integrator, the flow's weights, ...): they are
recorded in the file's ``extra`` and a resume that changes one is refused.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import ensemble
from ..errors import EnsembleError
from ..files import RunLock
from ..interrupts import check_stop
from .state import ChainState

__all__ = ["Block", "run_ensemble", "run_guard", "generator_state", "restore_generator"]

KEPT = "resume_keeps"  #: the key of ``extra`` that records ``keep``


@dataclass
class Block:
    """``rows`` steps of ``C`` chains: observables and mcmc columns ``(rows, C)``,
    configurations ``(rows, C, *field)`` or None."""

    observables: dict[str, np.ndarray]
    mcmc: dict[str, np.ndarray]
    configs: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def generator_state(gen) -> np.ndarray:
    """A torch.Generator's state as a uint8 numpy array (storable in HDF5)."""
    return gen.get_state().numpy().copy()


def restore_generator(gen, state: np.ndarray) -> None:
    import torch

    gen.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8).copy()))


def run_ensemble(sampler, *, theory, path, n: int, config_text: str, seed: int,
                 block: int = 100, store_configs: bool = True, progress: bool = True,
                 desc: str | None = None, keep: dict | None = None, weights=None) -> dict:
    """Generate (or continue) ``path`` until it holds ``n`` configurations.

    ``keep``: ``{name: value}`` (JSON values) of the settings a resume must not change; a
    file recorded with other values is refused naming the first that differs.
    ``weights``: the sampler's :class:`~latticeflow.ensemble.Weighting`, recorded in a new
    file (default: the sampler's ``weights`` attribute, else what a built-in sampler's name
    implies).

    Returns ``{"path", "sampler", "n", "rows_added", "seconds", "resumed"}``.
    """
    path, weights = Path(path), weights or getattr(sampler, "weights", None)
    keep = json.loads(json.dumps(keep or {}))
    chains = sampler.n_chains
    target = ensemble.rows_needed(n, chains)
    added, total_seconds, accepted = 0, 0.0, []
    with run_guard(sampler, theory, path, config_text, seed, store_configs, keep, weights) as (writer, resumed):
        bar = tqdm(total=target * chains, initial=min(writer.n_rows, target) * chains, unit="cfg",
                   desc=desc or sampler.sampler, disable=not progress, dynamic_ncols=True)
        with bar:
            while writer.n_rows < target:
                check_stop()  # an interrupt that Python swallowed (interrupts.py)
                rows = min(block, target - writer.n_rows)
                t0 = time.perf_counter()
                blk = sampler.advance(rows)
                seconds = time.perf_counter() - t0
                writer.append(observables=blk.observables, mcmc=blk.mcmc,
                              configs=blk.configs if writer.has_configs else None,
                              state=sampler.state().to_arrays(), seconds=seconds, extra=sampler.extra())
                added, total_seconds = added + rows, total_seconds + seconds
                if "accepted" in blk.mcmc:
                    accepted.append(float(np.mean(blk.mcmc["accepted"])))
                    bar.set_postfix(acc=f"{np.mean(accepted):.3f}", refresh=False)
                bar.update(rows * chains)
        n_rows = writer.n_rows
    return {"path": str(path), "sampler": sampler.sampler, "n": n_rows * chains, "rows_added": added,
            "seconds": total_seconds, "resumed": resumed}


@contextlib.contextmanager
def run_guard(sampler, theory, path: Path, config_text: str, seed: int, store_configs: bool, keep: dict,
              weights=None):
    """The guard rails of a run around its blocks: one writer at a time (a lock beside the
    file); a file stopped before its first block replaced; a resume refused unless the
    physics, the sampler, the kept settings and the resume state fit (the file untouched);
    the sampler started — restored from the file, or fresh before the file exists, so that
    an interrupted thermalisation leaves no file.  Yields ``(writer, resumed)``."""
    with RunLock(path.with_name(f".{path.name}.lock"), str(path)):
        if ensemble.holds_no_rows(path):
            # stopped or failed before its first block: no data to keep, and continuing it would
            # keep that run's settings (and start from the flow, not from [sample] start)
            path.unlink()
        resumed = path.exists()
        spec = dict(theory=theory.params(), sampler=sampler.sampler, n_chains=sampler.n_chains,
                    observables=list(theory.observable_names), mcmc=list(sampler.mcmc_columns))
        if resumed:
            arrays = ensemble.read_resume_state(path, **spec, field_shape=theory.field_shape)
            _check_kept(path, keep, store_configs)
            try:
                state = ChainState.from_arrays(arrays)
            except (ValueError, TypeError) as exc:
                raise EnsembleError(f"{path}: {exc}; the file is left as it is") from None
            _check_state(state, path, sampler.n_chains, theory.field_shape)
            try:
                sampler.start(state)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError, UnicodeDecodeError) as exc:
                raise EnsembleError(f"{path}: its resume state is damaged ({type(exc).__name__}: "
                                    f"{exc}); the file is left as it is") from None
            writer = ensemble.open_for_append(path, **spec, field_shape=theory.field_shape)
        else:
            sampler.start(None)
            writer = ensemble.create(path, **spec, config_text=config_text, seed=seed,
                                     field_shape=theory.field_shape if store_configs else None,
                                     field_dtype=theory.field_dtype,
                                     extra=sampler.extra() | ({KEPT: keep} if keep else {}), weights=weights)
        with writer:
            yield writer, resumed


def _check_kept(path: Path, keep: dict, store_configs: bool) -> None:
    """Refuse to continue a file made with other ``keep`` settings (files written before
    they were recorded are not checked), or one that stores configurations with a run that
    produces none (``--no-configs``)."""
    with ensemble.open(path) as ens:
        held, stores = ens.extra.get(KEPT, {}), ens.has_configs
    if stores and not store_configs:
        raise EnsembleError(f"{path} stores configurations and this run stores none (--no-configs or "
                            "configs = false): continue it storing them, or write a new file")
    for name, value in keep.items():
        if name in held and held[name] != value:
            raise EnsembleError(f"{path} was made with {name} = {held[name]!r}, this run has "
                                f"{value!r}; a resume keeps the settings its chains were made with: "
                                f"restore {name}, or write a new file")


def _check_state(state: ChainState | None, path: Path, chains: int, field_shape) -> None:
    """A resume state whose fields or weights cannot belong to this run is damage, refused
    before the file is touched (NaN fields would otherwise be sampled on)."""
    if state is None:
        return
    want = {"field": (chains, *field_shape), "log_weight": (chains,)}
    for key, shape in want.items():
        a = getattr(state, key)
        if a is None:
            continue
        if tuple(a.shape) != shape and not (key == "field" and a.size == 0):
            raise EnsembleError(f"{path}: its resume state {key} has shape {tuple(a.shape)}, this "
                                f"run needs {shape}; the file is left as it is")
        finite = np.isfinite(a) if key == "field" else ~np.isnan(a) & ~np.isposinf(a)
        if a.dtype.kind in "fc" and not np.all(finite):
            raise EnsembleError(f"{path}: its resume state {key} is not finite; the file is left "
                                "as it is")