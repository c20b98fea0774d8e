"""``ne-mcmc``: non-equilibrium MCMC with a defect for 2D U(1) and the Schwinger model
(:mod:`latticeflow.mcmc.nemcmc`, :mod:`latticeflow.theories.defect`; docs/nonequilibrium.md).

Each step transports C fresh c = 0 configurations — the defect's plaquettes free, the
topology unfrozen — through N updates to c = 1 and accepts an end point with min(1,
e^{−(W′ − W)}), W the work.  The c = 0 starts are exact independent draws for pure U(1),
and HMC trajectories at c = 0 from the current path's start for the Schwinger model.  The
updates: heat-bath sweeps (pure U(1)) or HMC trajectories of the ``[hmc]`` integrator at its
configured step size, or — with ``[hmc] tune`` — the step size tuned once at c = 1 during
``[sample] thermalization`` (then frozen; never tuned inside a protocol).  No flow: it runs
on a model file without weights.  Rows are plain chain averages (the chain is exact); the
proposals' e^{−W} give the ESS and ΔF = −log⟨e^{−W}⟩ in ``analyze``.
"""

from dataclasses import dataclass, fields

from ..ensemble.format import Weighting
from ..errors import ConfigError
from ..schema import Check, between, key, one_of
from .flows import integrator_keeps
from .registry import SamplerKind, register_sampler

NAME = "ne-mcmc"
UPDATES = ("auto", "heatbath", "hmc")
_UNIT_LIST = Check(lambda v: v is None or len(v) >= 2, "at least two values (c_0 = 0, …, c_N = 1)")


@dataclass(frozen=True)
class Options:
    """The ``[sample]`` keys of the ne-mcmc sampler."""

    protocol_steps: int = key(16, f"`{NAME}`: N, the updates of one transport from c = 0 to c = 1, "
                                  "with c_n = n/N", between(1, 100_000))
    protocol: tuple[float, ...] | None = key(None, f"`{NAME}`: tabulated c_0 = 0 ≤ c_1 ≤ … ≤ c_N = 1 "
                                                   "instead of the linear schedule (N = its length − 1)",
                                              _UNIT_LIST)
    defect_length: int = key(1, f"`{NAME}`: plaquettes of the defect, a segment along direction 1 at "
                                "x_0 = 0 (1 … L_1)", between(1, 100_000))
    protocol_update: str = key("auto", f"`{NAME}`: the update of each protocol step: `heatbath` (a "
                                       "sweep with the couplings β K_c; pure U(1)), `hmc` (one trajectory "
                                       "of the `[hmc]` integrator) or `auto` (heatbath for pure U(1), "
                                       "hmc with fermions)", one_of(*UPDATES))
    overrelaxation: int = key(0, f"`{NAME}` with heatbath: overrelaxation sweeps after each heat-bath "
                                 "sweep of the protocol", between(0, 1000))
    prior_updates: int = key(1, f"`{NAME}`, Schwinger: HMC trajectories at c = 0 from the start of a "
                                "chain's current path to the next start", between(1, 100_000))


def applies(theory) -> str | None:
    """Why a defect cannot be put into ``theory`` (one line), or None: 2D U(1), Schwinger."""
    from ..theories.defect import defect_problem

    return defect_problem(theory, 1)


def _check(ctx) -> None:
    """One-line refusals beyond :func:`~latticeflow.mcmc.nemcmc.transport_parts`'s: other
    theories, keys that do not apply, start fields."""
    s, theory, defaults = ctx.cfg.sample, ctx.theory, {f.name: f.default for f in fields(Options)}
    problem = applies(theory)
    if problem:
        raise ConfigError(f"sample.sampler: {s.sampler}: {problem}")
    if s.defect_length > theory.shape[1]:
        raise ConfigError(f"sample.defect_length: the defect is a segment of 1 … L_1 = {theory.shape[1]} "
                          f"plaquettes (got {s.defect_length})")
    if s.protocol is not None and s.protocol_steps not in (defaults["protocol_steps"], len(s.protocol) - 1):
        raise ConfigError(f"sample.protocol_steps: {s.protocol_steps} differs from the {len(s.protocol) - 1} "
                          "steps of sample.protocol; give one of them")
    heat_bath = s.protocol_update == "heatbath" or (s.protocol_update == "auto" and not theory.has_fermions)
    if not heat_bath and s.overrelaxation != defaults["overrelaxation"]:
        raise ConfigError("sample.overrelaxation: only for protocol_update = \"heatbath\"")
    if not theory.has_fermions and s.prior_updates != defaults["prior_updates"]:
        raise ConfigError("sample.prior_updates: pure U(1) starts are exact independent draws at c = 0; "
                          "prior_updates is for the Schwinger model")
    if ctx.start_fields is not None:
        raise ConfigError(f"sample.start: {s.sampler} chains start at the end point of a transport from c = 0; "
                          "they take no start fields")


def chains(ctx, parts, transport, record: dict, name: str = NAME):
    """The :class:`~latticeflow.mcmc.nemcmc.NEMCMCChains` of a transport made from ``parts``
    (shared with ``snf``): thermalisation only where there is something to thermalise (a tuned
    HMC or the Schwinger model's chain of starts)."""
    from ..mcmc.nemcmc import NEMCMCChains, NonEquilibriumKernel

    s, h, theory = ctx.cfg.sample, ctx.cfg.hmc, ctx.theory
    warm = theory.has_fermions or (parts.hmc is not None and h.tune)  # else nothing to thermalise: exact starts
    return NEMCMCChains(theory, NonEquilibriumKernel(transport, parts.starts), s.chains, hmc=parts.hmc,
                        tune=h.tune, seed=s.seed, thermalization=s.thermalization if warm else 0,
                        store_configs=ctx.store_configs, device=ctx.device, progress=ctx.progress,
                        name=name, record=record)


def build(ctx):
    from ..mcmc.nemcmc import Transport, transport_parts, transport_record

    _check(ctx)
    parts = transport_parts(ctx.theory, ctx.cfg.sample, ctx.cfg.hmc, ctx.device)
    record = transport_record(ctx.theory, ctx.cfg.sample, parts)
    return chains(ctx, parts, Transport(parts.defect, parts.protocol, parts.update), record)


def keeps(cfg, theory) -> dict:
    """The seed, every option, and with HMC the integrator's settings."""
    s = cfg.sample
    own = {f"sample.{k}": v for k, v in s.options}
    hmc = s.protocol_update == "hmc" or theory.has_fermions
    return {"sample.seed": s.seed} | own | (integrator_keeps(cfg, theory) if hmc else {})


register_sampler(SamplerKind(
    NAME, "NE-MCMC (defect)", build, Weighting("log_weight", proposals=True),
    "non-equilibrium transports from a defect (2D U(1), Schwinger): Metropolis on the work (no flow)",
    options=Options, needs_flow=False, keeps=keeps, applies=applies, baseline=True))
