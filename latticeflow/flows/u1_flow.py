"""The flow architecture of 2D U(1) gauge theory (arXiv:2003.06413, 2101.08176).

Uniform (Haar) prior + ``layers`` gauge-equivariant couplings
(:class:`~latticeflow.flows.gauge_coupling.GaugeEquivariantCoupling` with
:class:`~latticeflow.flows.gauge_coupling.U1Loops`) cycling through
:func:`latticeflow.lattice.gauge_mask_schedule`.  Each layer has its own
:class:`~latticeflow.flows.nets.ConvNet` (``hidden``, ``kernel_size``, ``activation``; last
layer zero, so the fresh flow is the identity) and a circle bijection: ``"ncp"``
(:class:`NCPMixture` with ``components``) or ``"spline"`` (:class:`CircularSpline` with
``bins``), both with a learnable rotation.  The masks need d = 2 and L divisible by 4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..lattice import gauge_mask_schedule
from ..schema import between, key
from .circle import CircularSpline, NCPMixture
from .flow import Flow
from .gauge_coupling import LOOPS_CHECK, U1_LOOPS, GaugeEquivariantCoupling, loop_channels, masks_fit
from .nets import ConvNet
from .priors import UniformAnglePrior
from .registry import FlowArchitecture, FlowConfig, register_architecture

__all__ = ["build_u1_flow", "U1Options", "NCPKernel", "CircularSplineKernel"]



@dataclass(frozen=True)
class U1Options:
    loops: tuple[str, ...] = key(("plaquette",), "frozen loops fed to the conditioner: "
                                 '`"plaquette"`, and `"rectangle"` (the 2x1 loops without active links)',
                                 LOOPS_CHECK)


@dataclass(frozen=True)
class NCPKernel:
    """``ncp``: a mixture of non-compact projections with a learned rotation."""

    components: int = key(6, "NCP mixture components", between(1, 256))

    def make(self):
        return NCPMixture(components=self.components, rotation=True)


@dataclass(frozen=True)
class CircularSplineKernel:
    """``spline``: a circular rational-quadratic spline with a learned rotation."""

    bins: int = key(8, "spline bins", between(2, 256))

    def make(self):
        return CircularSpline(bins=self.bins, rotation=True)


def build_u1_flow(theory, spec) -> Flow:
    """The gauge-equivariant U(1) flow on ``theory.shape`` (a theory or a ``TheoryConfig``)
    with the architecture ``spec`` (a :class:`FlowConfig`, or one already resolved).

    Example:
        >>> from latticeflow.config import parse_config
        >>> cfg = parse_config('[theory]\\nname="u1"\\nL=8\\nbeta=2.0\\n[flow]\\nbijection="ncp"\\nlayers=8\\n')
        >>> flow = build_u1_flow(cfg.theory, cfg.flow)
        >>> x, log_q = flow.sample(2)
        >>> x.shape, log_q.shape
        (torch.Size([2, 2, 8, 8]), torch.Size([2]))
    """
    shape = tuple(theory.shape)
    if isinstance(spec, FlowConfig):
        spec = U1_ARCHITECTURE.resolve(spec, shape)
    layers = []
    channels = loop_channels(spec.loops)
    for mu, offset in gauge_mask_schedule(spec.layers):
        bijection = spec.kernel.make()
        net = ConvNet(2, channels, bijection.n_params, hidden=spec.hidden,
                      kernel_size=spec.kernel_size, activation=spec.activation)
        layers.append(GaugeEquivariantCoupling(bijection, net, mu, offset, spec.loops, U1_LOOPS))
    return Flow(UniformAnglePrior((2, *shape)), layers)


U1_ARCHITECTURE = register_architecture(FlowArchitecture(
    theory="u1", build=build_u1_flow, options=U1Options,
    bijections={"ncp": NCPKernel, "spline": CircularSplineKernel},
    check_lattice=lambda shape: masks_fit(shape, "U(1)"), bijection_kind="circle maps",
    doc="gauge-equivariant couplings (`flows/u1_flow.py`, `flows/gauge_coupling.py`)"))

#: the Schwinger model's links are U(1) links: the same flows, trained on its S_eff
SCHWINGER_ARCHITECTURE = register_architecture(dataclasses.replace(
    U1_ARCHITECTURE, theory="schwinger",
    doc="the U(1) gauge-equivariant couplings (`flows/u1_flow.py`), trained on the exact S_eff"))
