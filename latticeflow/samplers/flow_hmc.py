"""``flow-hmc``: HMC in the flow's latent space (:mod:`latticeflow.mcmc.flow_hmc`)."""

from ..ensemble.format import Weighting
from .flows import flow_keeps, integrator_keeps
from .registry import SamplerKind, register_sampler


def build(ctx):
    import torch

    from ..mcmc.flow_hmc import FlowHMCChains

    s, h = ctx.cfg.sample, ctx.cfg.hmc
    extra = {"start_fields": ctx.start_fields} if ctx.start_fields is not None else {}
    flow = ctx.flow.to(getattr(torch, s.dtype)).to(ctx.device).eval()
    return FlowHMCChains(ctx.theory, flow, h, thermalization=s.thermalization, tune=h.tune,
                         progress=ctx.progress, batch_size=s.batch_size, device=ctx.device,
                         n_chains=s.chains, seed=s.seed, store_configs=ctx.store_configs, **extra)


register_sampler(SamplerKind(
    "flow-hmc", "flow HMC", build, Weighting("delta_h"), "HMC in the flow's latent space",
    flow_gradients=True,
    keeps=lambda cfg, theory: flow_keeps(cfg, theory) | integrator_keeps(cfg, theory, physical=False),
    reads=("thermalization",)))
