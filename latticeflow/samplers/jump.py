"""``instanton-jump``: k base updates (HMC trajectories of the ``[hmc]`` integrator, or heat-bath
sweeps) then m instanton jumps per step, for 2D U(1) and the Schwinger model
(:mod:`latticeflow.mcmc.jumps`).  The jumps change the topological sector in one exact
Metropolis step, which HMC at large β almost never does (docs/instanton_jumps.md).  For the
Schwinger model the jump's Metropolis test uses the exact determinant by default
(``jump_determinant = "exact"``), also when HMC integrates pseudofermions: the trajectories
refresh φ from its heat bath, so the chain's state is the links alone and the jump is a
Metropolis step on their marginal e^{−S_gauge} det D†D (:mod:`latticeflow.mcmc.jumps`).  No flow:
it runs on a model file without weights; rows are plain chain averages (not reweighted)."""

from dataclasses import dataclass

from ..ensemble.format import Weighting
from ..errors import ConfigError
from ..schema import between, key, one_of
from .flows import integrator_keeps
from .registry import SamplerKind, register_sampler

NAME = "instanton-jump"
BASES = ("hmc", "heatbath")


@dataclass(frozen=True)
class Options:
    """The ``[sample]`` keys of the instanton-jump sampler."""

    updates_per_step: int = key(1, f"`{NAME}`: base updates per step (HMC trajectories or heat-bath sweeps), "
                                   "before its jumps", between(1, 100_000))
    jumps_per_step: int = key(1, f"`{NAME}`: instanton jumps (Q → Q ± 1 proposals) per step",
                              between(1, 100_000))
    jump_base: str = key("hmc", f"`{NAME}`: the base update: `hmc` (the `[hmc]` integrator, its step size "
                                "tuned during thermalisation) or `heatbath` (pure U(1))", one_of(*BASES))
    overrelaxation: int = key(0, f"`{NAME}` with `jump_base = \"heatbath\"`: overrelaxation sweeps after each "
                                 "heat-bath sweep", between(0, 1000))
    fresh_start: str = key("hot", f"`{NAME}`: a new file's chains start `hot` (random links) or `cold` (unit "
                                  "links), unless `start` names an ensemble file", one_of("hot", "cold"))
    jump_determinant: str = key("exact", f"`{NAME}`, Schwinger: the jump's Metropolis test uses the `exact` "
                                         "log det(D†D) (dense, V ≤ 32², also under pseudofermion HMC) or "
                                         "the `action` HMC integrates (with pseudofermions: a heat bath, "
                                         "then fixed φ; exact, but accepted ~40× less often)",
                                one_of("exact", "action"))


def _base(ctx):
    """The base update of ``[sample] jump_base``: an HMC, or the heat-bath kernel."""
    s, theory = ctx.cfg.sample, ctx.theory
    if s.jump_base == "hmc":
        if s.overrelaxation:
            raise ConfigError("sample.overrelaxation: overrelaxation sweeps belong to jump_base = \"heatbath\"; "
                              "HMC has none (remove the key)")
        from ..mcmc.hmc import HMC

        return HMC.from_config(theory, ctx.cfg.hmc)
    if theory.has_fermions:
        raise ConfigError(f"sample.jump_base: heatbath updates pure U(1) only; the {theory.name} theory "
                          "has fermions (use jump_base = \"hmc\")")
    try:
        from ..mcmc.heatbath import HeatbathKernel
    except ImportError:
        raise ConfigError("sample.jump_base: heatbath needs the heat-bath kernel (latticeflow.mcmc.heatbath), "
                          "which this installation lacks; use jump_base = \"hmc\"") from None
    return HeatbathKernel(theory, overrelaxation=s.overrelaxation)


def applies(theory) -> str | None:
    """Why instanton jumps cannot sample ``theory`` (one line), or None."""
    from ..mcmc.jumps import jump_problem

    return jump_problem(theory)


def build(ctx):
    from ..mcmc.jumps import InstantonJump, jump_chains

    problem = applies(ctx.theory)
    if problem:
        raise ConfigError(f"sample.sampler: {NAME}: {problem}")
    s, h = ctx.cfg.sample, ctx.cfg.hmc
    if s.jump_determinant != "exact" and not ctx.theory.has_fermions:
        raise ConfigError(f"sample.jump_determinant: the {ctx.theory.name} theory has no fermion determinant "
                          "(remove the key)")
    base = _base(ctx)
    try:  # the [hmc] fermion settings, as HMC's
        jump = InstantonJump(ctx.theory, determinant=s.jump_determinant, **dict(h.options))
    except ValueError as exc:
        raise ConfigError(f"sample.jump_determinant: {exc}") from None
    options = {"tune": h.tune} if s.jump_base == "hmc" else {}
    return jump_chains(ctx.theory, base, jump, s.chains, s.updates_per_step, s.jumps_per_step,
                       thermalization=s.thermalization, start=s.fresh_start, seed=s.seed,
                       store_configs=ctx.store_configs, progress=ctx.progress, device=ctx.device,
                       start_fields=ctx.start_fields, **options)


def keeps(cfg, theory) -> dict:
    """Seed, steps per update, base (and its overrelaxation), and the integrator and fermion
    settings (the jump's fermion settings are the integrator's)."""
    s = cfg.sample
    names = ("seed", "updates_per_step", "jumps_per_step", "jump_base", "overrelaxation", "jump_determinant")
    own = {f"sample.{k}": getattr(s, k) for k in names}
    return own | (integrator_keeps(cfg, theory) if s.jump_base == "hmc"
                  else {f"hmc.{k}": v for k, v in theory.md_keeps(dict(cfg.hmc.options)).items()})


register_sampler(SamplerKind(
    NAME, "instanton jumps", build, Weighting("jump_delta_s"),
    "base updates (HMC or heat bath), then instanton jumps Q → Q ± 1, every step (2D U(1), Schwinger)",
    options=Options, needs_flow=False, keeps=keeps, reads=("thermalization",), applies=applies,
    baseline=True))
