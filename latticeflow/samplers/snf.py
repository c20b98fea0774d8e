"""``snf``: a stochastic normalizing flow on a defect — the ``ne-mcmc`` sampler with trained
maps between its updates (arXiv:2201.08862, arXiv:2412.00200, arXiv:2510.25704;
docs/nonequilibrium.md, "Stochastic normalizing flows").

Each step transports C fresh c = 0 configurations to c = 1 as ``ne-mcmc`` does, but before
the update of protocol step n it moves the links near the defect by a map f_n — the
model's U(1) gauge-equivariant couplings, restricted to the links within ``patch`` of the
defect plaquettes (:mod:`latticeflow.flows.defect_flow`), cut into ``maps`` maps — and the
work gains S_{c_n}[f_n(U)] − S_{c_n−1}[U] − log|det J_n| for it.  An end point is accepted
with min(1, e^{−(W′ − W)}): exact for any weights of the maps.  The maps are trained by
``latticeflow train`` with ``[train] objective = "work"`` (:mod:`latticeflow.training.work`);
they run in ``[sample] dtype`` (the moved links are added to the float64 fields).

Its ``[sample]`` keys are those of ``ne-mcmc`` (protocol, defect, updates, starts) plus
``maps`` and ``patch``; the refusals are ``ne-mcmc``'s, and a flow that is not made of U(1)
gauge-equivariant couplings, or does not split into ``maps`` maps, is refused in one line.
The same model file with ``--sampler ne-mcmc`` gives plain NE-MCMC with the same protocol.
"""

from dataclasses import dataclass

from ..ensemble.format import Weighting
from ..schema import between, key
from . import ne_mcmc
from .registry import SamplerKind, register_sampler

NAME = "snf"


@dataclass(frozen=True)
class Options(ne_mcmc.Options):
    """The ``[sample]`` keys of the snf sampler: those of ``ne-mcmc`` and the maps'."""

    maps: int = key(1, f"`{NAME}`: distinct maps, the flow's couplings cut into this many equal groups; "
                       "protocol step n = 1 … N uses map ⌊(n − 1)·maps/N⌋ (maps = N: one per step)",
                    between(1, 100_000))
    patch: int = key(1, f"`{NAME}`: the maps move only the links with a plaquette within this "
                        "(Chebyshev) distance of a defect plaquette; the others are frozen", between(0, 100_000))


def build(ctx):
    import torch

    from ..mcmc.nemcmc import transport_parts, transport_record
    from ..training.work import snf_transport

    s = ctx.cfg.sample
    ne_mcmc._check(ctx)
    parts = transport_parts(ctx.theory, s, ctx.cfg.hmc, ctx.device)
    flow = ctx.flow.to(getattr(torch, s.dtype)).to(ctx.device).eval().requires_grad_(False)
    transport = snf_transport(flow, parts, s.maps, s.patch)
    record = transport_record(ctx.theory, s, parts) | {"maps": s.maps, "patch": s.patch}
    return ne_mcmc.chains(ctx, parts, transport, record, NAME)


def keeps(cfg, theory) -> dict:
    """``ne-mcmc``'s (seed, every option, the integrator with HMC) and the maps' precision."""
    return ne_mcmc.keeps(cfg, theory) | {"sample.dtype": cfg.sample.dtype}


register_sampler(SamplerKind(
    NAME, "SNF (defect)", build, Weighting("log_weight", proposals=True),
    "a stochastic normalizing flow: ne-mcmc with the model's trained maps near the defect (2D U(1), Schwinger)",
    options=Options, needs_flow=True, keeps=keeps, reads=("thermalization",), applies=ne_mcmc.applies))
