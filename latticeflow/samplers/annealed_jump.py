"""``annealed-jump``: k HMC trajectories then m annealed instanton jumps per step, for 2D U(1)
and the Schwinger model (:mod:`latticeflow.mcmc.flow_jumps`; docs/flow_jumps.md).

Each jump draws q = ±1, a centre and a direction, shifts the links by the instanton and runs
N = ``jump_steps`` HMC trajectories of the actions interpolating between the current sector
and the jumped one, S_λ(x) = (1 − λ) S_eff(x) + λ S_eff(J x), λ = n/N, and accepts the end
point with min(1, e^{−W}), W the work (non-equilibrium candidate Monte Carlo): the field
relaxes towards the new sector where the plain jump (N = 0, the same acceptance as
``instanton-jump``) is rejected for the fermion determinant of the jumped links.  The
transport uses the exact (dense) determinant whatever ``[hmc] fermions`` the base chain
integrates, and by default the base HMC's step size, tuned in thermalisation and then
frozen (``jump_md_steps = 0``); or ``jump_md_steps`` steps of ``jump_trajectory_length``.
No flow: it runs on a model file without weights; rows are plain chain averages.
"""

from dataclasses import dataclass

from ..ensemble.format import Weighting
from ..errors import ConfigError
from ..schema import between, key, one_of, positive
from .flows import integrator_keeps
from .registry import SamplerKind, register_sampler

NAME = "annealed-jump"


@dataclass(frozen=True)
class Options:
    """The ``[sample]`` keys of the annealed-jump sampler."""

    updates_per_step: int = key(1, "`annealed-jump`, `flow-jump`: HMC trajectories of the theory per step, "
                                   "before its jumps", between(1, 100_000))
    jumps_per_step: int = key(1, "`annealed-jump`, `flow-jump`: annealed jumps (Q → Q ± 1 proposals with a "
                                 "transport) per step", between(1, 100_000))
    jump_steps: int = key(2, "`annealed-jump`, `flow-jump`: N, the HMC trajectories of a jump's transport "
                             "(λ = n/N; 0: the plain instanton jump)", between(0, 10_000))
    jump_md_steps: int = key(0, "`annealed-jump`, `flow-jump`: MD steps of a transport trajectory; 0: the "
                                "base HMC's integrator (its step size tuned in thermalisation, then frozen)",
                             between(0, 100_000))
    jump_trajectory_length: float = key(1.0, "`annealed-jump`, `flow-jump`: the transport trajectories' "
                                             "length (with jump_md_steps >= 1)", positive)
    fresh_start: str = key("hot", "`annealed-jump`, `flow-jump`: a new file's chains start `hot` or `cold`, "
                                  "unless `start` names an ensemble file", one_of("hot", "cold"))


def applies(theory) -> str | None:
    """Why annealed jumps cannot sample ``theory`` (one line), or None."""
    from ..mcmc.flow_jumps import transport_problem

    return transport_problem(theory)


def chains(ctx, flow=None):
    """The chain sampler of ``ctx`` (``flow``: that of a flow jump, its maps)."""
    from ..mcmc.flow_jumps import AnnealedJumpChains
    from ..training.jump_work import jump_parts

    s, h = ctx.cfg.sample, ctx.cfg.hmc
    problem = applies(ctx.theory)
    if problem:
        raise ConfigError(f"sample.sampler: {s.sampler}: {problem}")
    parts = jump_parts(ctx.theory, s, h, flow)
    return AnnealedJumpChains(ctx.theory, parts.hmc, parts.jump, s.chains, s.updates_per_step, s.jumps_per_step,
                              follow=parts.follow, name=s.sampler, thermalization=s.thermalization, tune=h.tune,
                              start=s.fresh_start, seed=s.seed, store_configs=ctx.store_configs,
                              progress=ctx.progress, device=ctx.device, start_fields=ctx.start_fields)


def build(ctx):
    return chains(ctx)


def keeps(cfg, theory) -> dict:
    """The seed, every option and the base integrator's settings."""
    s = cfg.sample
    return {"sample.seed": s.seed} | {f"sample.{k}": v for k, v in s.options} | integrator_keeps(cfg, theory)


KIND = register_sampler(SamplerKind(
    NAME, "annealed instanton jumps", build, Weighting("jump_work"),
    "HMC, then instanton jumps with a short transport to the new sector, accepted on its work "
    "(2D U(1), Schwinger)", options=Options, needs_flow=False, keeps=keeps, reads=("thermalization",),
    applies=applies, baseline=True))
