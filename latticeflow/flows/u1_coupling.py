"""Gauge-equivariant coupling layers for 2D U(1) lattice gauge theory.

A layer (Kanwar et al., arXiv:2003.06413, Sec. III; tutorial arXiv:2101.08176, Sec. 5)
acts on link angles ``theta`` of shape ``(batch, 2, L_0, L_1)`` through the plaquette
angles ``P(x) = theta_01(x)``, which are gauge invariant:

1. The masks of :func:`latticeflow.lattice.plaquette_masks_2d` split the plaquettes into
   *active* (one per active link), *passive* and *frozen* ones.  The active ``mu``-links
   sit on the lines ``x_nu = offset (mod 4)``, ``nu = 1 - mu``.
2. A conditioner network sees gauge-invariant features that the layer does not change
   (:meth:`GaugeEquivariantCoupling.features`) and returns the raw parameters of a circle
   bijection ``h``, which maps every active plaquette ``P -> P' = h(P)``.
3. Each active link moves by the change of its plaquette,
   ``theta_mu(x) <- theta_mu(x) + s_mu (P'(x) - P(x))`` with ``s_0 = +1``, ``s_1 = -1``
   (the sign with which ``theta_mu(x)`` enters ``P(x)``), wrapped to [0, 2π).  The
   passive plaquette ``P(x - nu_hat)`` absorbs the opposite change; frozen ones do not move.

Because the update of a link is a gauge-invariant angle, the layer commutes with gauge
transformations: ``f(g·U) = g·f(U)``, and ``log q(g·U) = log q(U)``.

Jacobian.  Ordered as (active links, other links), the map is block triangular: the
other links are copied, each new active link depends on its own old value only through
``P(x)`` (``d theta'/d theta = s_mu h'(P) s_mu = h'(P)``) and on other links only through
plaquettes and features that do not contain any active link.  Hence
``log|det J| = Σ_active log h'(P(x))``; the tests check this against the full autograd
Jacobian.

Conditioner inputs (``loops``), all zero outside the sites listed:

- ``"plaquette"``: ``cos P``, ``sin P`` on the frozen plaquettes (``x_nu = offset+1,
  offset+2``).
- ``"rectangle"`` adds the two 2x1 loops ``R_a(x) = P(x) + P(x + a_hat)`` (``a`` = 0, 1:
  the loop around the plaquettes at ``x`` and ``x + a_hat``).  Those that contain no
  active link are

  * ``R_mu(x)`` (long side along the active links): its ``mu``-links lie on the lines
    ``x_nu`` and ``x_nu + 1``, so it is unaffected for ``x_nu = offset+1, offset+2`` —
    the pairs of frozen plaquettes;
  * ``R_nu(x)`` (long side across the active links): its ``mu``-links lie on ``x_nu`` and
    ``x_nu + 2``, so it is unaffected for ``x_nu = offset+1`` (two frozen plaquettes) *and*
    for ``x_nu = offset+3``: there the active link is the loop's middle rung, it enters
    the passive and the active plaquette with opposite signs and cancels.  This
    ``passive + active`` loop tells the conditioner the sum that the layer redistributes
    between the two plaquettes it changes.

  Those are exactly the rectangles used; :meth:`features` is unchanged by the layer
  (tested), which is what makes the coupling invertible.

Symmetries of a layer: gauge invariance (exact), translations along ``mu`` by any
amount and along ``nu`` by multiples of 4 (the conditioner is a periodic CNN).  A stack
following :func:`latticeflow.lattice.gauge_mask_schedule` alternates ``mu``, so the flow
is equivariant under translations by multiples of 4 along each axis.  Reflections and
charge conjugation ``theta -> -theta`` are not built in.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..groups import wrap_angle
from ..lattice import gauge_mask_schedule, plaquette_masks_2d, shift
from ..theories.u1 import plaquette_angles
from .bijections import ElementwiseBijection
from .circle import CircularSpline, NCPMixture
from .flow import Flow
from .nets import ConvNet
from .priors import UniformAnglePrior

__all__ = ["GaugeEquivariantCoupling", "build_u1_flow", "loop_channels"]

LOOPS = ("plaquette", "rectangle")


def loop_channels(loops: Sequence[str]) -> int:
    """Number of conditioner input channels for the given loop types (cos and sin each)."""
    unknown = set(loops) - set(LOOPS)
    if unknown or "plaquette" not in loops:
        raise ValueError(f"loops must contain 'plaquette' and optionally 'rectangle', got {loops!r}")
    return 2 + (4 if "rectangle" in loops else 0)


class GaugeEquivariantCoupling(nn.Module):
    r"""One gauge-equivariant coupling layer for 2D U(1) link angles.

    Transforms the active plaquettes with a circle bijection conditioned on frozen
    loops and moves the active ``mu``-links accordingly (see the module docstring for the
    masks, the link update and the loops used).

    References:
        Kanwar et al., "Equivariant flow-based sampling for lattice gauge theory",
        arXiv:2003.06413, eqs. (8)-(10); Albergo et al., arXiv:2101.08176, Sec. 5.

    Arguments:
        bijection: circle map (:class:`NCPMixture`, :class:`CircularSpline`).
        net: conditioner ``(B, loop_channels(loops), L_0, L_1) -> (B, bijection.n_params, L_0, L_1)``.
        mu: direction of the active links, 0 or 1.
        offset: active links on the lines ``x_{1-mu} = offset (mod 4)``.
        loops: ``("plaquette",)`` or ``("plaquette", "rectangle")``.

    ``forward(theta) -> (theta', logdet)`` and ``inverse(theta') -> (theta, logdet)`` with
    ``theta`` of shape ``(batch, 2, L_0, L_1)``, ``L_i`` divisible by 4, and ``logdet`` of
    shape ``(batch,)``.

    Example:
        >>> bij = NCPMixture(components=2)
        >>> net = ConvNet(2, loop_channels(["plaquette"]), bij.n_params, hidden=(4,), zero_init=False)
        >>> layer = GaugeEquivariantCoupling(bij, net, mu=0, offset=1)
        >>> theta = 2 * math.pi * torch.rand(3, 2, 8, 8)
        >>> y, ld = layer(theta)
        >>> x, ld_inv = layer.inverse(y)
        >>> bool(torch.allclose(torch.cos(x - theta), torch.ones_like(x), atol=1e-5)), ld.shape
        (True, torch.Size([3]))
    """

    def __init__(self, bijection: ElementwiseBijection, net: nn.Module, mu: int, offset: int,
                 loops: Sequence[str] = ("plaquette",)):
        super().__init__()
        if mu not in (0, 1):
            raise ValueError(f"mu must be 0 or 1, got {mu}")
        self.bijection, self.net = bijection, net
        self.mu, self.offset = int(mu), int(offset) % 4
        self.loops = tuple(loops)
        self.in_channels = loop_channels(self.loops)
        self.sign = 1.0 if mu == 0 else -1.0
        self._mask_cache: dict = {}

    def extra_repr(self) -> str:
        return f"mu={self.mu}, offset={self.offset}, loops={self.loops}, bijection={self.bijection!r}"

    def masks(self, shape, device=None) -> dict[str, torch.Tensor]:
        """Boolean site masks ``(L_0, L_1)``: ``active``, ``frozen`` plaquettes and the
        unaffected rectangles ``rect0``, ``rect1`` (``R_a`` with long side along axis a)."""
        key = (tuple(shape), str(device))
        if key not in self._mask_cache:
            mu, nu = self.mu, 1 - self.mu
            m = plaquette_masks_2d(shape, mu, self.offset)
            x_nu = torch.arange(shape[nu]).view([-1, 1] if nu == 0 else [1, -1]).expand(*shape)
            line = (x_nu - self.offset) % 4
            rect = {mu: (line == 1) | (line == 2), nu: (line == 1) | (line == 3)}
            masks = {"active": m["active"], "frozen": m["frozen"], "rect0": rect[0], "rect1": rect[1]}
            self._mask_cache[key] = {k: v.to(device) for k, v in masks.items()}
        return self._mask_cache[key]

    def features(self, plaq: torch.Tensor) -> torch.Tensor:
        """Conditioner input from plaquette angles ``(B, L_0, L_1)``: ``(B, C, L_0, L_1)``,
        cos/sin of the loops that the layer leaves unchanged, zero elsewhere."""
        masks = self.masks(plaq.shape[1:], plaq.device)
        loops = [(plaq, masks["frozen"])]
        if "rectangle" in self.loops:
            loops += [(plaq + shift(plaq, a), masks[f"rect{a}"]) for a in (0, 1)]
        chans = []
        for angle, mask in loops:
            m = mask.to(plaq.dtype)
            chans += [torch.cos(angle) * m, torch.sin(angle) * m]
        return torch.stack(chans, dim=1)

    def _couple(self, theta: torch.Tensor, inverse: bool):
        if theta.dim() != 4 or theta.shape[1] != 2:
            raise ValueError(f"expected link angles (batch, 2, L_0, L_1), got {tuple(theta.shape)}")
        plaq = plaquette_angles(theta)[:, 0]
        active = self.masks(plaq.shape[1:], plaq.device)["active"]
        params = self.net(self.features(plaq)).movedim(1, -1)[:, active]  # (B, n_active, n_params)
        p_old = plaq[:, active]
        map_ = self.bijection.inverse if inverse else self.bijection.forward
        p_new, logabsdet = map_(p_old, params)
        delta = torch.zeros_like(plaq)
        delta[:, active] = p_new - p_old
        moved = torch.where(active, wrap_angle(theta[:, self.mu] + self.sign * delta), theta[:, self.mu])
        links = [moved, theta[:, 1]] if self.mu == 0 else [theta[:, 0], moved]
        return torch.stack(links, dim=1), logabsdet.sum(-1)

    def forward(self, theta: torch.Tensor):
        return self._couple(theta, inverse=False)

    def inverse(self, theta: torch.Tensor):
        return self._couple(theta, inverse=True)


def _make_bijection(flow_config) -> ElementwiseBijection:
    if flow_config.bijection == "ncp":
        return NCPMixture(components=flow_config.components, rotation=True)
    if flow_config.bijection == "spline":
        return CircularSpline(bins=flow_config.bins, rotation=True)
    raise ValueError(f"bijection {flow_config.bijection!r} is not a circle map (use 'ncp' or 'spline')")


def build_u1_flow(theory, flow_config) -> Flow:
    """Gauge-equivariant flow for 2D U(1): uniform (Haar) prior + ``flow_config.layers``
    couplings cycling through :func:`latticeflow.lattice.gauge_mask_schedule`.

    Each layer has its own :class:`~latticeflow.flows.nets.ConvNet` (``hidden``,
    ``kernel_size``, ``activation``; last layer zero, so the fresh flow is the identity) and
    a circle bijection (``"ncp"``: :class:`NCPMixture` with ``components``; ``"spline"``:
    :class:`CircularSpline` with ``bins``; both with a learnable rotation).

    Arguments:
        theory: anything with a 2D ``shape`` (a :class:`~latticeflow.theories.U1` or a
            :class:`~latticeflow.config.TheoryConfig`).
        flow_config: a :class:`~latticeflow.config.FlowConfig`.

    Example:
        >>> from latticeflow.config import parse_config
        >>> cfg = parse_config('[theory]\\nname="u1"\\nL=8\\nbeta=2.0\\n[flow]\\nbijection="ncp"\\nlayers=8\\n')
        >>> flow = build_u1_flow(cfg.theory, cfg.flow)
        >>> x, log_q = flow.sample(2)
        >>> x.shape, log_q.shape
        (torch.Size([2, 2, 8, 8]), torch.Size([2]))
    """
    shape = tuple(theory.shape)
    if getattr(theory, "name", "u1") != "u1":
        raise ValueError(f"build_u1_flow builds flows for the u1 theory, not {theory.name!r}")
    if len(shape) != 2 or any(n % 4 for n in shape):
        raise ValueError(f"gauge-equivariant U(1) flows need a 2D lattice with L divisible by 4, got {shape}")
    layers = []
    channels = loop_channels(flow_config.loops)
    for mu, offset in gauge_mask_schedule(flow_config.layers):
        bijection = _make_bijection(flow_config)
        net = ConvNet(2, channels, bijection.n_params, hidden=flow_config.hidden,
                      kernel_size=flow_config.kernel_size, activation=flow_config.activation)
        layers.append(GaugeEquivariantCoupling(bijection, net, mu, offset, flow_config.loops))
    return Flow(UniformAnglePrior((2, *shape)), layers)
