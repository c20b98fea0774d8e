"""The flow architecture of real scalar φ⁴ theory (arXiv:1904.12072, 2101.08176).

:class:`NormalPrior` + ``layers`` checkerboard couplings (:class:`CheckerboardCoupling`)
with alternating parity, each with its own periodic :class:`ConvNet` conditioner
(``hidden``, ``kernel_size``, ``activation``) and an ``affine`` or ``spline`` bijection,
Z₂-equivariant when ``z2`` is on (``z2_conditioner``: a symmetrised network, two passes, or
an odd-trunk :class:`ParityConvNet`, one pass); with ``momentum_scaling`` a :class:`MomentumScaling`
layer (a learnable correlated Gaussian prior, ``flows/momentum_scaling.py``) comes first.
The checkerboard needs even extents.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..lattice import extent_key
from ..schema import between, key, one_of, positive
from .bijections import Affine, RationalQuadraticSpline
from .coupling import CheckerboardCoupling
from .flow import Flow
from .momentum_scaling import MomentumScaling
from .nets import ConvNet, ParityConvNet
from .priors import NormalPrior
from .registry import FlowArchitecture, FlowConfig, register_architecture

__all__ = ["build_phi4_flow", "Phi4Options", "AffineKernel", "SplineKernel", "AFFINE_SCALE_BOUND"]

#: bound on |log scale| of each affine map (keeps early training from blowing up).
AFFINE_SCALE_BOUND = 5.0


@dataclass(frozen=True)
class Phi4Options:
    z2: bool = key(True, "make the flow commute with φ → −φ")
    z2_conditioner: str = key("symmetrised", "how, with z2: `symmetrised`, ½[n(c) + R n(−c)] of any "
                                             "network (two passes), or `odd`, one pass of an odd tanh "
                                             "trunk whose features, half kept and half squared, give "
                                             "the odd and the even parameters (needs activation = "
                                             "\"tanh\"; docs/performance.md)", one_of("symmetrised", "odd"))
    momentum_scaling: bool = key(False, "first layer y = F⁻¹[s(p̂²) F x], a learnable "
                                        "translation-invariant Gaussian correlation of the prior "
                                        "(`flows/momentum_scaling.py`)")


@dataclass(frozen=True)
class AffineKernel:
    """``affine``: y = e^s x + t, |s| ≤ 5 (real NVP)."""

    def make(self):
        return Affine(scale_bound=AFFINE_SCALE_BOUND)


@dataclass(frozen=True)
class SplineKernel:
    """``spline``: rational-quadratic spline on [−bound, bound], identity tails."""

    bins: int = key(8, "spline bins", between(2, 256))
    # φ⁴ fields at the reference points have |φ| ≲ 3, the prior N(0, 1) likewise.  A prior
    # value beyond the bound passes a layer unchanged, which can give a huge action once the
    # flow has learnt to shrink the field.
    bound: float = key(5.0, "the spline acts on [−bound, bound], identity outside", positive)

    def make(self):
        return RationalQuadraticSpline(bins=self.bins, bound=self.bound)


def _checkerboard_fits(shape):
    if any(n % 2 for n in shape):
        return extent_key(shape), "the checkerboard mask needs even extents"
    return None


def _keys_fit(spec):
    if spec.z2_conditioner != "odd":
        return None
    if not spec.z2:
        return "z2_conditioner", '"odd" is a Z2-equivariant conditioner: it needs z2 = true'
    if not spec.hidden or spec.hidden[-1] < 2:
        return ("hidden", f'the odd conditioner (z2_conditioner = "odd") needs a last hidden layer '
                          f"of at least 2 channels (half odd features, half squared), got {list(spec.hidden)}")
    if spec.activation != "tanh":
        return ("activation", f'the odd conditioner (z2_conditioner = "odd") runs tanh, the one odd '
                              f'activation: set activation = "tanh" (got "{spec.activation}")')
    return None


def build_phi4_flow(theory, spec) -> Flow:
    """Checkerboard-coupling flow for a real scalar field on ``theory.shape``, with the
    architecture ``spec`` (a :class:`FlowConfig`, or one already resolved)."""
    if isinstance(spec, FlowConfig):
        spec = PHI4_ARCHITECTURE.resolve(spec, tuple(theory.shape))
    layers = [MomentumScaling(theory.dim)] if spec.momentum_scaling else []
    for i in range(spec.layers):
        bijection = spec.kernel.make()
        if spec.z2_conditioner == "odd":  # resolve() made sure z2 is on
            net = ParityConvNet(theory.dim, 1, bijection.n_params, hidden=spec.hidden,
                                kernel_size=spec.kernel_size)
        else:
            net = ConvNet(theory.dim, 1, bijection.n_params, hidden=spec.hidden,
                          kernel_size=spec.kernel_size, activation=spec.activation)
        layers.append(CheckerboardCoupling(bijection, net, mask_parity=i % 2, z2=spec.z2))
    return Flow(NormalPrior(theory.shape), layers)


PHI4_ARCHITECTURE = register_architecture(FlowArchitecture(
    theory="phi4", build=build_phi4_flow, options=Phi4Options,
    bijections={"affine": AffineKernel, "spline": SplineKernel},
    check_lattice=_checkerboard_fits, check_keys=_keys_fit, bijection_kind="maps of the real line",
    doc="checkerboard couplings (`flows/phi4_flow.py`)"))
