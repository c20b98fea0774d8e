"""``flow-iid``: independent flow samples with log weights, for reweighting."""

from ..ensemble.format import Weighting
from .flows import flow_keeps, flow_proposal
from .registry import IID, SamplerKind, register_sampler


def build(ctx):
    from ..mcmc.flow_samplers import IIDWithWeights

    if ctx.start_fields is not None:
        raise ValueError(f"{IID} draws independent samples: it has no chains to start")
    s = ctx.cfg.sample
    return IIDWithWeights(ctx.theory, flow_proposal(ctx.flow, s.dtype, ctx.device), n_chains=s.chains,
                          batch_size=s.batch_size, seed=s.seed, store_configs=ctx.store_configs)


register_sampler(SamplerKind(
    IID, "reweighted flow samples", build, Weighting("log_weight", reweighted=True),
    "i.i.d. flow samples with log weights (reweighting)", has_chains=False, keeps=flow_keeps,
    reads=()))
