"""``direct``: exact, independent configurations where a theory can draw them (pure 2D U(1):
plaquettes from von Mises with the torus constraint, links in a maximal-tree gauge;
:mod:`latticeflow.theories.u1_direct`).  No flow, no Markov chain, no autocorrelation:
the baseline every flow for pure 2D U(1) must be measured against."""

from ..ensemble.format import Weighting
from ..errors import ConfigError
from .registry import SamplerKind, register_sampler


def applies(theory) -> str | None:
    """Why ``theory`` cannot be drawn exactly (one line), or None."""
    return theory.exact_sampling_problem()


def build(ctx):
    from ..mcmc.direct import DirectSamples

    problem = applies(ctx.theory)
    if problem:
        raise ConfigError(f"sample.sampler: direct: {problem}")
    if ctx.start_fields is not None:
        raise ConfigError("sample.start: direct draws independent samples, it has no chains to start")
    s = ctx.cfg.sample
    return DirectSamples(ctx.theory, s.chains, s.seed, ctx.store_configs, s.batch_size)


register_sampler(SamplerKind(
    "direct", "direct (exact i.i.d.)", build, Weighting("log_weight"),
    "exact independent draws where the theory allows it (pure 2D U(1))",
    needs_flow=False, has_chains=False,
    keeps=lambda cfg, theory: {"sample.seed": cfg.sample.seed},
    reads=(), applies=applies, baseline=True))
