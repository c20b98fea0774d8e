"""The library pipeline: model sources, overrides, and every command as a function.

``latticeflow.train``, ``sample``, ``hmc``, ``analyze``, ``compare`` and ``exact`` are these
functions; the ``latticeflow`` command only parses arguments and prints what they return.
This is the one module that wires configs, theories, flows, samplers, ensembles and the
analysis together (the flow-vs-HMC study on top of it is :mod:`latticeflow.study`).

Example:
    >>> import latticeflow
    >>> latticeflow.exact("models/u1_L8_b2.toml")["observables"]["plaquette"]  # doctest: +SKIP
    0.6977746580...
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import ExitStack
from pathlib import Path

from . import ensemble, resources
from .config import Config, anneal_problem, load_config, with_options
from .parallel import split_over_ranks
from .samplers import (build_sampler, flow_density, flow_proposal, flow_sampler, resume_keeps,  # re-exported
                       SamplerContext, sampler_from_flags, sampler_kind)
from .training.distributed import rank_device
from .errors import ConfigError, LatticeflowError
from .files import RUNS, atomic_copy, check_input, check_writable, input_problem
from .schema import check_value, convert, table_fields
from .training import MODEL, load_flow, run_config
from .training.run_files import INTERRUPTED
from .training import train as _train

__all__ = ["resolve_model", "load_model", "flow_proposal", "flow_density", "flow_sampler", "override", "on_device", "exact", "hmc", "sample",
           "analyze", "compare", "train", "default_output", "continues"]


def _config(config) -> Config:
    if isinstance(config, Config):
        return config
    if not isinstance(config, (str, Path)):
        raise LatticeflowError(f"expected a model file path or a Config, got {type(config).__name__}")
    return load_config(config)


def _path(value, what: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise LatticeflowError(f"{what}: expected a file path, got {value!r}")
    return Path(value)


def _check_n(n, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise LatticeflowError(f"-n: must be an integer >= {minimum} (got {n!r})")
    return n


def override(cfg: Config, section: str, flag_names: dict[str, str] | None = None, **values) -> Config:
    """``cfg`` with keys of ``[section]`` replaced (None: keep), each checked like the TOML
    key; an error names the command-line flag (``flag_names``) or the key."""
    table = getattr(cfg, section)
    fields = {f.name: f for f in table_fields(type(table))}
    changes = {}
    for key, value in values.items():
        if value is None:
            continue
        name = (flag_names or {}).get(key, f"{section}.{key}")
        changes[key] = check_value(name, convert(name, value, fields[key].type), fields[key].check)
    if not changes:
        return cfg
    return dataclasses.replace(cfg, **{section: dataclasses.replace(table, **changes)})


def on_device(cfg: Config, device: str | None, sections=("train", "sample", "hmc")) -> Config:
    """``cfg`` with ``device`` (``--device``) in each of ``sections`` (None: unchanged)."""
    for section in sections:
        cfg = override(cfg, section, {"device": "--device"}, device=device)
    return cfg


def continues(out) -> bool:
    """Whether a run writing ``out`` continues it: it exists and holds committed rows (a file
    stopped before its first block starts afresh, see :func:`ensemble.holds_no_rows`)."""
    return Path(out).exists() and not ensemble.holds_no_rows(out)


def check_ensemble_fits(cfg: Config, n: int, out, chains: int, configs: bool, columns: int) -> None:
    """Refuse, before any work, an ensemble that cannot be written or would not fit on disk."""
    check_writable(out)
    if not continues(out):  # a resumed file already holds part of it
        need = resources.ensemble_bytes(cfg.theory, n, columns, configs)
        resources.check_disk(need, out, f"an ensemble of {n} configurations")


def train(config_or_path, out=None, steps: int | None = None, resume: bool = False,
          progress: bool = True, device: str | None = None):
    """Train the flow of a model file by reverse KL (:func:`latticeflow.training.train`),
    after checking that the run directory can be written and a step fits in memory
    (``device`` overrides ``[train] device``)."""
    cfg = on_device(_config(config_or_path), device, ("train",))
    rank_device(cfg.train.device, "--device" if device else "train.device")  # refused before any file
    _require_flow(cfg, "train")
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


# --- model sources ------------------------------------------------------------------------
def resolve_model(source, weights_needed: bool = True) -> tuple[Config, Path]:
    """``(config, weights)`` of a training run directory or of a model TOML whose weights are
    shipped beside it (same stem, ``.pt``; ``weights_needed=False``: a classical sampler's
    model, whose weights may be absent)."""
    source = _path(source, "sample")
    if source.is_dir():
        return run_config(source), source
    if source.suffix != ".toml":
        raise LatticeflowError(f"{source}: expected a run directory or a model .toml file")
    cfg = load_config(source)
    weights = source.with_suffix(".pt")
    if weights_needed and cfg.flow is not None:
        _check_weights(source, weights)
    return cfg, weights


def _check_weights(source: Path, weights: Path) -> None:
    problem = input_problem(weights, "weights file")
    if problem == "no such file":
        raise LatticeflowError(f"{source}: no shipped weights {weights.name} beside it "
                               f"(train them: latticeflow train {source})")
    if problem:
        raise LatticeflowError(f"{weights}: {problem}")


def _require_flow(cfg: Config, what: str = "sample") -> None:
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path or 'the model file'}: no [flow] table, so there is no "
                               f"flow to {what}")


def load_model(source):
    """``(config, flow)`` from a run directory or a model TOML with weights beside it."""
    cfg, weights = resolve_model(source)
    _require_flow(cfg)
    return cfg, load_flow(weights, cfg)


# --- commands -----------------------------------------------------------------------------
def reference_values(theory) -> tuple[dict, list[str]]:
    """The theory's exact values that are finite, and the names of those that overflowed
    (e.g. Bessel sums at an extreme β); never a NaN passed on as a reference."""
    import math

    import numpy as np

    try:
        with np.errstate(all="ignore"):
            values = theory.exact()
    except MemoryError:
        return {}, ["all of them (they need more memory than this machine has)"]
    good = {k: v for k, v in values.items() if math.isfinite(v)}
    return good, sorted(set(values) - set(good))


def exact(config) -> dict:
    """``{"theory": params, "observables": {name: value}}``: analytic reference values."""
    theory = _config(config).theory.build()
    values, bad = reference_values(theory)
    if bad:
        raise LatticeflowError(f"exact: {', '.join(bad)} cannot be computed at {theory!r} (the "
                               "couplings or the lattice are too extreme for the exact formulas)")
    return {"theory": theory.params(), "observables": values}


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

    _check_n(n)
    kind = sampler_kind("hmc")
    cfg = override(on_device(_config(config), device, ("hmc",)), "hmc",
                   {"chains": "--chains", "seed": "--seed"}, chains=chains, seed=seed)
    where = rank_device(cfg.hmc.device, "--device" if device else "hmc.device")
    out = _path(out, "--out") if out is not None else default_output(cfg, "hmc")
    with split_over_ranks(cfg, "hmc", out, n, where) as (cfg, out, n, finish):  # torchrun: this rank's part
        theory, h = cfg.theory.build(), cfg.hmc
        resources.check_memory(resources.hmc_bytes(cfg.theory, h.chains), f"HMC with {h.chains} chains")
        check_ensemble_fits(cfg, n, out, h.chains, configs, len(theory.observable_names) + 2)
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

    _check_n(n)
    sampler = sampler_from_flags(sampler, iid)
    cfg, weights = (_config(source), None) if flow is not None else resolve_model(source, weights_needed=False)
    asked = cfg.sample.sampler
    cfg = override(on_device(cfg, device, ("sample",)), "sample",
                   {"chains": "--chains", "seed": "--seed", "sampler": "--sampler", "start": "--start"},
                   chains=chains, seed=seed, sampler=sampler, start=None if start is None else str(start))
    if cfg.sample.sampler != asked:  # --sampler: the new kind's options (the file's of another kind dropped)
        cfg = dataclasses.replace(cfg, sample=with_options(cfg.sample, dict(cfg.sample.options), legacy=True))
    kind = sampler_kind(cfg.sample.sampler)
    if kind.needs_flow and flow is None:
        _require_flow(cfg)
        if not Path(source).is_dir():
            _check_weights(Path(source), weights)
    where = rank_device(cfg.sample.device, "--device" if device else "sample.device")  # before any file
    theory, s = cfg.theory.build(), cfg.sample
    if s.start != "flow" and not kind.has_chains:
        raise ConfigError(f"{'--start' if start else 'sample.start'}: {kind.name} draws independent "
                          "samples, it has no chains to start")
    if out is None:
        is_run = not isinstance(source, Config) and Path(source).is_dir()
        out = Path(source) / f"{s.sampler}.h5" if is_run else default_output(cfg, s.sampler)
    out = _path(out, "--out")
    with split_over_ranks(cfg, "sample", out, n, where) as (cfg, out, n, finish):  # torchrun: this rank's part
        s = cfg.sample
        store = s.configs and configs
        need = (resources.flow_bytes(cfg.theory, cfg.flow, s.batch_size, kind.flow_gradients)
                if kind.needs_flow else resources.hmc_bytes(cfg.theory, s.chains))
        need += s.block * s.chains * resources.field_bytes(cfg.theory) * (2 if store else 0)
        resources.check_memory(need, f"sampling ({s.chains} chains, blocks of {s.block}, "
                                     f"batch {s.batch_size})")
        check_ensemble_fits(cfg, n, out, s.chains, store, len(theory.observable_names) + 6)
        given = None if s.start == "flow" or continues(out) else _start_fields(cfg, theory, start)
        if flow is None and kind.needs_flow:
            flow = load_flow(weights, cfg)
        chain_sampler = build_sampler(cfg, theory, flow if kind.needs_flow else None, store, progress,
                                      device=where, start_fields=given)
        return finish(run_ensemble(chain_sampler, theory=theory, path=out, n=n, config_text=cfg.toml,
                                   seed=s.seed, block=s.block, store_configs=store, progress=progress,
                                   desc=s.sampler, keep=resume_keeps(cfg, theory, s.sampler, flow if kind.needs_flow else None),
                                   weights=kind.weights))


def _start_fields(cfg: Config, theory, flag):
    """The :class:`~latticeflow.ensemble.start.StartFields` of ``[sample] start`` for this
    rank's chains (under torchrun rank r starts from chains r·C … (r+1)·C − 1 of the file)."""
    from .ensemble.start import start_fields

    what, name = ("--start" if flag else "sample.start"), cfg.sample.start
    candidates = [Path(name)]
    if not Path(name).is_absolute() and cfg.path is not None:
        candidates.append(Path(cfg.path).parent / name)
    found = next((c for c in candidates if c.exists()), Path(name))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    first = int(os.environ.get("RANK", "0")) * cfg.sample.chains if world > 1 else 0
    return start_fields(found, theory.name, theory.field_shape, cfg.sample.chains, first, what)


def analyze(path) -> dict:
    """The ``analyze --json`` object of one ensemble file (exact values included)."""
    import numpy as np

    from . import ensemble
    from .analysis.summary import summarize

    with ensemble.open(_path(path, "analyze")) as ens:
        theory = ensemble_theory(ens)
        for name, values in ens.observables.items():
            if not np.all(np.isfinite(values)):
                raise ensemble.EnsembleError(f"{path}: observables/{name} holds non-finite values "
                                             "in committed rows (the file is damaged)")
        for name in ("log_weight", "proposal_log_weight"):  # −inf is a NaN proposal; NaN, +inf never
            weights = ens.mcmc.get(name)
            if weights is not None and weights.size and (np.isnan(weights).any() or np.isposinf(weights).any()
                                                         or not np.isfinite(weights).any()):
                raise ensemble.EnsembleError(f"{path}: mcmc/{name} holds NaN or +inf, or no finite "
                                             "weight at all (the file is damaged)")
        return summarize(ens, reference_values(theory)[0], theory.derived_observables())


def ensemble_theory(ens):
    """The theory of an open ensemble; an EnsembleError if its metadata describe none."""
    from .errors import EnsembleError
    from .theories import theory_from_params

    try:
        return theory_from_params(ens.theory)
    except (ValueError, TypeError, KeyError, LatticeflowError) as exc:
        raise EnsembleError(f"{ens.path}: its theory attribute does not describe a known theory "
                            f"({exc})") from None


def compare(paths, labels: list[str] | None = None, out=None):
    """Side-by-side table of ensembles of one theory, and with ``out`` its files there:
    ``comparison.md``, ``comparison.json`` and one PNG per stored observable.

    Returns ``(table, markdown, figures)``.
    """
    from . import ensemble

    if len(paths) < 2:
        raise LatticeflowError("compare: give at least two ensemble files")
    if labels is not None and len(labels) != len(paths):
        raise LatticeflowError(f"--labels: expected {len(paths)} comma-separated names")
    if out is not None:
        check_writable(out, directory=True)
    with ExitStack() as stack:
        ensembles = [stack.enter_context(ensemble.open(p)) for p in paths]
        return write_comparison(ensembles, labels, out)


def write_comparison(ensembles, labels=None, out=None):
    """:func:`compare` for open ensembles."""
    import json

    from .analysis.compare import compare_ensembles, comparison_markdown
    from .analysis.plots import plot_comparison
    from .files import atomic_write_text

    theories = {json.dumps(e.theory, sort_keys=True) for e in ensembles}
    if len(theories) > 1:
        raise LatticeflowError("compare: the files hold different theories: " + " vs ".join(sorted(theories)))
    theory = ensemble_theory(ensembles[0])
    reference = reference_values(theory)[0]
    table = compare_ensembles(ensembles, reference, labels, theory.derived_observables())
    markdown = comparison_markdown(table)
    figures = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", markdown + "\n")
        atomic_write_text(out / "comparison.json", json.dumps(table, indent=2) + "\n")
        figures = plot_comparison(ensembles, [e["label"] for e in table["ensembles"]], out,
                                  list(table["observables"]), reference, theory.exact_distributions())
    return table, markdown, figures
