"""``hmc``: tuned Hybrid Monte Carlo (:mod:`latticeflow.mcmc.hmc`), made by ``latticeflow hmc``
from the ``[hmc]`` table."""

from ..ensemble.format import Weighting
from .flows import integrator_keeps
from .registry import SamplerKind, register_sampler


def build(ctx):
    from ..mcmc.hmc import HMC
    from ..mcmc.hmc_chains import HMCChains

    h = ctx.cfg.hmc
    return HMCChains(ctx.theory, HMC.from_config(ctx.theory, h), h.chains, h.thermalization, h.tune,
                     h.start, h.seed, store_configs=ctx.store_configs, progress=ctx.progress,
                     device=ctx.device)


register_sampler(SamplerKind(
    "hmc", "HMC", build, Weighting("delta_h"), "tuned HMC (leapfrog or Omelyan), from [hmc]",
    needs_flow=False, command="hmc", baseline=True,
    keeps=lambda cfg, theory: integrator_keeps(cfg, theory) | {"hmc.seed": cfg.hmc.seed}))
