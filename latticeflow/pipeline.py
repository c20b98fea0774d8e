"""The library API: every command as a function.

``latticeflow.train``, ``sample``, ``hmc`` and ``load_model`` are these functions, and
``analyze``, ``compare`` and ``exact`` those of :mod:`latticeflow.results` (re-exported
here); the ``latticeflow`` command only parses arguments and prints what they return.
Each function checks what a run needs before it writes anything (the configuration and
its overrides, :mod:`latticeflow.config.overrides`; memory and disk, :mod:`latticeflow.resources`,
:func:`latticeflow.ensemble.check_fits`), then hands over to the library (the sampler
registry, the chain driver, the trainer).  The flow-vs-HMC study on top of it is
:mod:`latticeflow.study`.

Example:
    >>> import latticeflow
    >>> latticeflow.exact("models/u1_L8_b2.toml")["observables"]["plaquette"]  # doctest: +SKIP
    0.6977746580...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import ensemble, resources
from .config import Config, anneal_problem, with_options
from .config.overrides import as_config, as_path, check_n, on_device, override
from .errors import ConfigError, LatticeflowError
from .files import RUNS, check_writable
from .parallel import first_chain, split_over_ranks
from .results import analyze, compare, ensemble_theory, exact, reference_values, write_comparison
from .samplers import (SamplerContext, build_sampler, flow_density, flow_proposal, flow_sampler, resume_keeps,
                       sampler_from_flags, sampler_kind)
from .training import load_flow
from .training.run_files import check_weights, load_model, require_flow, resolve_model
from .training import train as _train
from .training.distributed import rank_device

__all__ = ["resolve_model", "load_model", "flow_proposal", "flow_density", "flow_sampler", "build_sampler",
           "override", "on_device", "check_n", "exact", "hmc", "sample", "analyze", "compare", "train",
           "default_output", "reference_values", "ensemble_theory", "write_comparison"]


def train(config_or_path, out=None, steps: int | None = None, resume: bool = False,
          progress: bool = True, device: str | None = None):
    """Train the flow of a model file by reverse KL (:func:`latticeflow.training.train`),
    after checking that the run directory can be written and a step fits in memory
    (``device`` overrides ``[train] device``)."""
    cfg = on_device(as_config(config_or_path), device, ("train",))
    rank_device(cfg.train.device, "--device" if device else "train.device")  # refused before any file
    require_flow(cfg, "train")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise LatticeflowError(f"--steps: must be an integer >= 1 (got {steps!r})")
    t = cfg.train
    problem = None if resume else anneal_problem(cfg.theory, t, steps or t.steps)
    if problem:
        raise ConfigError(f"train.{problem[0]}: {problem[1]}")
    check_writable(out if out is not None else RUNS, directory=True)
    need = resources.flow_bytes(cfg.theory, cfg.flow, t.batch_size, True)
    resources.check_memory(need, f"a training step at batch {t.batch_size}")
    return _train(cfg, out=out, steps=steps, resume=resume, progress=progress)


def default_output(cfg: Config, kind: str) -> Path:
    """``runs/<model>-<sampler>.h5``."""
    return RUNS / f"{cfg.name}-{kind}.h5"


def hmc(config, n: int, out=None, chains: int | None = None, seed: int | None = None,
        configs: bool = True, progress: bool = True, device: str | None = None) -> dict:
    """Generate (or continue) an HMC ensemble file for a model/study; returns the run summary.

    Arguments:
        config: a TOML path or :class:`~latticeflow.config.Config` (``[theory]``, ``[hmc]``).
        n: configurations the file should hold (resumes an existing ``out``).
        out: HDF5 path (default ``runs/<name>-hmc.h5``).
        chains, seed: override ``[hmc] chains`` / ``seed`` (recorded in the file's config).
        configs: store the fields (observables are always stored).
        device: override ``[hmc] device``.
    """
    from .mcmc.driver import run_ensemble

    check_n(n)
    kind = sampler_kind("hmc")
    cfg = override(on_device(as_config(config), device, ("hmc",)), "hmc",
                   {"chains": "--chains", "seed": "--seed"}, chains=chains, seed=seed)
    where = rank_device(cfg.hmc.device, "--device" if device else "hmc.device")
    out = as_path(out, "--out") if out is not None else default_output(cfg, "hmc")
    with split_over_ranks(cfg, "hmc", out, n, where) as (cfg, out, n, finish):  # torchrun: this rank's part
        theory, h = cfg.theory.build(), cfg.hmc
        resources.check_memory(resources.hmc_bytes(cfg.theory, h.chains), f"HMC with {h.chains} chains")
        ensemble.check_fits(cfg.theory, n, out, h.chains, configs, len(theory.observable_names) + 2)
        sampler = kind.build(SamplerContext(cfg, theory, None, configs, progress, where))
        return finish(run_ensemble(sampler, theory=theory, path=out, n=n,
                                   config_text=cfg.toml, seed=h.seed, block=h.block,
                                   store_configs=configs, progress=progress, desc=kind.name,
                                   keep=resume_keeps(cfg, theory, kind.name), weights=kind.weights))


def sample(source, n: int, out=None, iid: bool = False, chains: int | None = None,
           seed: int | None = None, configs: bool = True, progress: bool = True, *,
           flow=None, sampler: str | None = None, device: str | None = None,
           start: str | None = None) -> dict:
    """Exact ensemble with the sampler of ``[sample] sampler`` (any registered kind,
    :mod:`latticeflow.samplers`): with a trained flow, Metropolis independence chains
    (``flow-mcmc``), raw samples with log weights for reweighting (``flow-iid``, or
    ``iid=True``), HMC interleaved with flow proposals (``mixed``) or HMC in the flow's
    latent space (``flow-hmc``); a classical kind needs no flow.  Returns the run summary.

    Arguments:
        source: a training run directory, or a model TOML with its weights beside it (none
            needed for a classical sampler); with ``flow`` given, the model's :class:`Config`
            (or TOML path) alone.
        n: configurations the file should hold (resumes an existing ``out``).
        out: HDF5 path (default: in the run directory, or ``runs/<name>-<sampler>.h5``).
        chains, seed, sampler: override ``[sample] chains`` / ``seed`` / ``sampler``
            (recorded in the file's config).
        configs: store the fields (observables are always stored).
        flow: an already loaded flow to sample.
        device: override ``[sample] device``.
        start: override ``[sample] start`` (``"flow"``, or an ensemble file whose last
            configurations start a new file's chains; a resumed file ignores it).
    """
    from .mcmc.driver import run_ensemble

    check_n(n)
    sampler = sampler_from_flags(sampler, iid)
    cfg, weights = (as_config(source), None) if flow is not None else resolve_model(source, weights_needed=False)
    asked = cfg.sample.sampler
    cfg = override(on_device(cfg, device, ("sample",)), "sample",
                   {"chains": "--chains", "seed": "--seed", "sampler": "--sampler", "start": "--start"},
                   chains=chains, seed=seed, sampler=sampler, start=None if start is None else str(start))
    if cfg.sample.sampler != asked:  # --sampler: the new kind's options (the file's of another kind dropped)
        own = {k: v for k, v in cfg.sample.options if v is not None}  # None: unset (TOML has no such value)
        cfg = dataclasses.replace(cfg, sample=with_options(cfg.sample, own, legacy=True))
    kind = sampler_kind(cfg.sample.sampler)
    idle = kind.idle_key_problem(cfg.sample) if cfg.sample.sampler == asked else None  # --sampler: not the file's choice
    if kind.needs_flow and flow is None:
        require_flow(cfg)
        if not Path(source).is_dir():
            check_weights(Path(source), weights)
    where = rank_device(cfg.sample.device, "--device" if device else "sample.device")  # before any file
    theory, s = cfg.theory.build(), cfg.sample
    if s.start != "flow" and not kind.has_chains:
        raise ConfigError(f"{'--start' if start else 'sample.start'}: {kind.name} draws independent "
                          "samples, it has no chains to start")
    if out is None:
        is_run = not isinstance(source, Config) and Path(source).is_dir()
        out = Path(source) / f"{s.sampler}.h5" if is_run else default_output(cfg, s.sampler)
    out = as_path(out, "--out")
    with split_over_ranks(cfg, "sample", out, n, where) as (cfg, out, n, finish):  # torchrun: this rank's part
        s = cfg.sample
        store = s.configs and configs
        need = (resources.flow_bytes(cfg.theory, cfg.flow, s.batch_size, kind.flow_gradients)
                if kind.needs_flow else resources.hmc_bytes(cfg.theory, s.chains))
        need += s.block * s.chains * resources.field_bytes(cfg.theory) * (2 if store else 0)
        resources.check_memory(need, f"sampling ({s.chains} chains, blocks of {s.block}, "
                                     f"batch {s.batch_size})")
        ensemble.check_fits(cfg.theory, n, out, s.chains, store, len(theory.observable_names) + 6)
        given = None if s.start == "flow" or ensemble.continues(out) else _start_fields(cfg, theory, start)
        if flow is None and kind.needs_flow:
            flow = load_flow(weights, cfg)
        chain_sampler = build_sampler(cfg, theory, flow if kind.needs_flow else None, store, progress,
                                      device=where, start_fields=given)
        result = finish(run_ensemble(chain_sampler, theory=theory, path=out, n=n, config_text=cfg.toml,
                                     seed=s.seed, block=s.block, store_configs=store, progress=progress,
                                     desc=s.sampler, keep=resume_keeps(cfg, theory, s.sampler, flow if kind.needs_flow else None),
                                     weights=kind.weights))
        return result | ({"notes": [idle]} if idle else {})


def _start_fields(cfg: Config, theory, flag):
    """The :class:`~latticeflow.ensemble.start.StartFields` of ``[sample] start`` for this
    rank's chains."""
    from .ensemble.start import find_start, start_fields

    return start_fields(find_start(cfg.sample.start, cfg.path), theory.name, theory.field_shape,
                        cfg.sample.chains, first_chain(cfg.sample.chains),
                        "--start" if flag else "sample.start")


