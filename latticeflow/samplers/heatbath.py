"""``heatbath``: heat bath + overrelaxation of pure U(1) and SU(N) gauge fields
(:mod:`latticeflow.mcmc.heatbath`), the update production pure-gauge codes run, as C chains
of :class:`~latticeflow.mcmc.heatbath.HeatbathChains`.  No flow; rejection-free, so every row
has weight 1 (``log_weight`` = 0, like ``direct``) and ``accepted`` is always true;
``heatbath_tries`` records the proposals per link update of its rejection samplers."""

from dataclasses import dataclass

from ..ensemble.format import Weighting
from ..errors import ConfigError
from ..schema import between, key, one_of
from .registry import SamplerKind, register_sampler


@dataclass(frozen=True)
class Options:
    """The ``[sample]`` keys of the heat bath."""

    overrelaxation: int = key(1, "`heatbath`: overrelaxation sweeps after each heat-bath sweep", between(0, 1000))
    sweeps_per_step: int = key(1, "`heatbath`: heat-bath sweeps (each with its overrelaxation) per stored step",
                               between(1, 100_000))
    fresh_start: str = key("hot", "`heatbath`: a new file's chains start `hot` (random links) or `cold` "
                                  "(unit links), unless `start` names an ensemble file", one_of("hot", "cold"))


def applies(theory) -> str | None:
    """Why the heat bath cannot sample ``theory`` (one line), or None."""
    from ..mcmc.heatbath import heatbath_problem

    return heatbath_problem(theory)


def build(ctx):
    from ..mcmc.heatbath import HeatbathChains, HeatbathKernel

    problem = applies(ctx.theory)
    if problem:
        raise ConfigError(f"sample.sampler: heatbath: {problem}")
    s = ctx.cfg.sample
    return HeatbathChains(ctx.theory, HeatbathKernel(ctx.theory, s.overrelaxation), s.chains, s.sweeps_per_step,
                          seed=s.seed, thermalization=s.thermalization, start=s.fresh_start,
                          start_fields=ctx.start_fields, store_configs=ctx.store_configs, device=ctx.device,
                          progress=ctx.progress)


def keeps(cfg, theory) -> dict:
    s = cfg.sample
    return {"sample.seed": s.seed, "sample.overrelaxation": s.overrelaxation,
            "sample.sweeps_per_step": s.sweeps_per_step}


register_sampler(SamplerKind(
    "heatbath", "heat bath + overrelaxation", build, Weighting("log_weight"),
    "heat bath and overrelaxation of pure U(1) and SU(N) gauge links (no flow)",
    options=Options, needs_flow=False, keeps=keeps, reads=("thermalization",), applies=applies, baseline=True))
