"""``flow-mcmc``: Metropolis independence chains fed by flow proposals (arXiv:1904.12072)."""

from ..ensemble.format import Weighting
from .flows import flow_density, flow_keeps, flow_proposal
from .registry import SamplerKind, register_sampler


def build(ctx):
    from ..mcmc.flow_samplers import IndependenceMetropolis

    s = ctx.cfg.sample
    extra = {"start_fields": ctx.start_fields} if ctx.start_fields is not None else {}
    return IndependenceMetropolis(ctx.theory, flow_proposal(ctx.flow, s.dtype, ctx.device),
                                  n_chains=s.chains, batch_size=s.batch_size, seed=s.seed,
                                  store_configs=ctx.store_configs,
                                  density=flow_density(ctx.flow, s.dtype, ctx.device), **extra)


register_sampler(SamplerKind(
    "flow-mcmc", "flow-MCMC", build, Weighting("log_weight", proposals=True),
    "Metropolis independence chains fed by the flow", keeps=flow_keeps,
    reads=()))
