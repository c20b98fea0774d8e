"""Build a flow from a theory and the ``[flow]`` table of a model file.

``build_flow(theory, flow_config)`` dispatches on ``theory.name`` through ``BUILDERS``:

- ``phi4``: :class:`NormalPrior` + ``layers`` checkerboard couplings
  (:class:`CheckerboardCoupling`) with alternating parity, each with its own periodic
  :class:`ConvNet` conditioner (``hidden``, ``kernel_size``, ``activation``) and an
  ``affine`` or ``spline`` (``bins`` on [−``bound``, ``bound``]) bijection, Z₂-symmetrised when ``z2`` is on;
  with ``momentum_scaling`` a :class:`MomentumScaling` layer (learnable correlated Gaussian
  prior, ``flows/momentum_scaling.py``) comes first.
- ``u1``: gauge-equivariant couplings, built in ``flows/u1_coupling.py``.

Every conditioner's last layer starts at zero, so a freshly built flow is the identity
map: its density is the prior's.  Parameters are created in torch's default dtype
(float32 unless changed); call ``.double()`` on the flow for float64.
"""

from __future__ import annotations

from typing import Callable

from ..errors import LatticeflowError
from .bijections import Affine, RationalQuadraticSpline
from .coupling import CheckerboardCoupling
from .flow import Flow
from .nets import ConvNet
from .priors import NormalPrior
from .momentum_scaling import MomentumScaling
from .u1_coupling import build_u1_flow

__all__ = ["build_flow", "BUILDERS", "SPLINE_BOUND", "AFFINE_SCALE_BOUND"]

#: default half-width (``[flow] bound``) of the interval on which the φ⁴ spline acts
#: (identity tails outside); φ⁴ fields at the reference points have |φ| ≲ 3, the prior
#: N(0, 1) likewise.  A prior value beyond the bound passes a layer unchanged, which can give
#: a huge action once the flow has learnt to shrink the field.
SPLINE_BOUND = 5.0
#: bound on |log scale| of each affine map (keeps early training from blowing up).
AFFINE_SCALE_BOUND = 5.0


def _scalar_bijection(flow_config):
    if flow_config.bijection == "affine":
        return Affine(scale_bound=AFFINE_SCALE_BOUND)
    if flow_config.bijection == "spline":
        return RationalQuadraticSpline(bins=flow_config.bins, bound=getattr(flow_config, "bound", SPLINE_BOUND))
    raise LatticeflowError(f"flow.bijection: {flow_config.bijection!r} is not available for phi4 "
                           "(use 'affine' or 'spline')")


def build_phi4_flow(theory, flow_config) -> Flow:
    """Checkerboard-coupling flow for a real scalar field on ``theory.shape``."""
    layers = [MomentumScaling(theory.dim)] if getattr(flow_config, "momentum_scaling", False) else []
    for i in range(flow_config.layers):
        bijection = _scalar_bijection(flow_config)
        net = ConvNet(theory.dim, 1, bijection.n_params, hidden=flow_config.hidden,
                      kernel_size=flow_config.kernel_size, activation=flow_config.activation)
        layers.append(CheckerboardCoupling(bijection, net, mask_parity=i % 2, z2=flow_config.z2))
    return Flow(NormalPrior(theory.shape), layers)


#: theory name -> builder(theory, flow_config) -> Flow.  A new theory adds its entry here.
BUILDERS: dict[str, Callable] = {
    "phi4": build_phi4_flow,
    "u1": build_u1_flow,
}


def build_flow(theory, flow_config) -> Flow:
    """The :class:`Flow` for ``theory`` with the architecture ``flow_config`` (a ``FlowConfig``).

    Example:
        >>> from latticeflow.config import FlowConfig
        >>> from latticeflow.theories import Phi4
        >>> flow = build_flow(Phi4((8, 8), m2=-4.0, lam=8.0), FlowConfig(layers=4))
        >>> x, log_q = flow.sample(5)
        >>> x.shape, log_q.shape
        (torch.Size([5, 8, 8]), torch.Size([5]))
    """
    builder = BUILDERS.get(theory.name)
    if builder is None:
        raise LatticeflowError(f"flow: no flow architecture for the {theory.name} theory")
    return builder(theory, flow_config)
