"""``flow-jump``: ``annealed-jump`` with the model's trained maps between the transport's
updates (:mod:`latticeflow.mcmc.flow_jumps`; docs/flow_jumps.md).

Before update n of a forward transport the links are moved by f_n — the model's U(1)
gauge-equivariant couplings on every link of the lattice, cut into ``maps`` groups (step n
uses group ⌊(n − 1)·maps/N⌋) — and a backward transport applies f_n⁻¹ after it; the work gains
S_λ(f(x)) − S_λ(x) − log|det ∂f/∂x|.  Exact for any weights of the maps.  The maps are trained
by ``latticeflow train`` with ``[train] objective = "jump-work"``
(:mod:`latticeflow.training.jump_work`); they run in ``[sample] dtype`` (float64 recommended:
the backward moves invert the couplings by bisection, exact to the dtype's round-off).

Why the whole lattice and no patch: the instanton adds the same flux 2πq/V to every
plaquette, so gauge invariantly the jump has no centre in the plaquettes (the centre only
moves its Polyakov loops); maps confined to a patch would see a uniform change everywhere
else.  Same keys as ``annealed-jump`` plus ``maps``; the same model file with ``--sampler
annealed-jump`` gives the transport without maps.
"""

from dataclasses import dataclass

from ..ensemble.format import Weighting
from ..schema import between, key
from . import annealed_jump
from .registry import SamplerKind, register_sampler

NAME = "flow-jump"


@dataclass(frozen=True)
class Options(annealed_jump.Options):
    """The ``[sample]`` keys of the flow-jump sampler: those of ``annealed-jump`` and ``maps``."""

    maps: int = key(1, "`flow-jump`: distinct maps, the flow's couplings cut into this many equal groups; "
                       "transport step n = 1 … N uses map ⌊(n − 1)·maps/N⌋", between(1, 100_000))


def build(ctx):
    import torch

    flow = ctx.flow.to(getattr(torch, ctx.cfg.sample.dtype)).to(ctx.device).eval().requires_grad_(False)
    return annealed_jump.chains(ctx, flow)


def keeps(cfg, theory) -> dict:
    """``annealed-jump``'s and the maps' precision."""
    return annealed_jump.keeps(cfg, theory) | {"sample.dtype": cfg.sample.dtype}


KIND = register_sampler(SamplerKind(
    NAME, "flow-assisted instanton jumps", build, Weighting("jump_work"),
    "annealed-jump with the model's trained maps in the transport (2D U(1), Schwinger)",
    options=Options, needs_flow=True, keeps=keeps, reads=("thermalization",), applies=annealed_jump.applies))
