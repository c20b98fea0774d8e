"""``mixed``: k HMC trajectories, then m flow independence proposals per step
(:mod:`latticeflow.mcmc.mixed`)."""

from ..ensemble.format import Weighting
from .flows import flow_density, flow_keeps, flow_proposal, integrator_keeps
from .registry import SamplerKind, register_sampler


def build(ctx):
    from ..mcmc.hmc import HMC
    from ..mcmc.mixed import MixedKernel

    s, h = ctx.cfg.sample, ctx.cfg.hmc
    extra = {"start_fields": ctx.start_fields} if ctx.start_fields is not None else {}
    return MixedKernel(ctx.theory, HMC.from_config(ctx.theory, h), flow_proposal(ctx.flow, s.dtype, ctx.device),
                       flow_density(ctx.flow, s.dtype, ctx.device), n_chains=s.chains,
                       hmc_per_step=s.hmc_per_step, flow_per_step=s.flow_per_step,
                       thermalization=s.thermalization, tune=h.tune, batch_size=s.batch_size, seed=s.seed,
                       store_configs=ctx.store_configs, progress=ctx.progress, device=ctx.device, **extra)


def keeps(cfg, theory) -> dict:
    s = cfg.sample
    return (flow_keeps(cfg, theory) | integrator_keeps(cfg, theory)
            | {"sample.hmc_per_step": s.hmc_per_step, "sample.flow_per_step": s.flow_per_step})


register_sampler(SamplerKind(
    "mixed", "mixed HMC + flow kernel", build, Weighting("log_weight", proposals=True),
    "HMC trajectories, then flow independence proposals, every step", keeps=keeps,
    reads=("hmc_per_step", "flow_per_step", "thermalization")))
