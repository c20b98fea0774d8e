"""Gauge-equivariant coupling layers for 2D lattice gauge theories, written against a
small *loop group* interface so that U(1) and SU(N) share the masks and the coupling logic.

A layer (Kanwar et al., arXiv:2003.06413, Sec. III; Boyda et al., arXiv:2008.05456;
tutorial arXiv:2101.08176, Sec. 5) acts on links ``(batch, 2, L_0, L_1, ...)`` through the
untraced plaquettes ``P(x)`` they close.  The loop group (:class:`LoopGroup`) says what a
loop is and how to compute, transform and read it:

- ``plaquettes(links)``: ``P(x)`` for every site (U(1): the angle θ_01(x); SU(N): the
  matrix U_01(x));
- ``rectangle(P, a, links)``: the 2x1 loop around the plaquettes at ``x`` and ``x + a_hat``
  (U(1): the sum of the two plaquette angles; SU(N): the matrix, from the links);
- ``features(loop, mask)``: gauge-invariant real channels of a loop (U(1): cos, sin),
  zero outside ``mask``;
- ``transform(bijection, loops, params, inverse)``: the conjugation-equivariant map of the
  active loops and its log-det, as the change that ``update_links`` applies (U(1): the new
  angles from a circle bijection; SU(N): the left factor R with new loop ``R P``);
- ``orient(loops, sign)``: the active loops as the map sees them (U(1): unchanged; SU(N):
  ``P`` for μ = 0 and ``P†`` for μ = 1, so that the active link is the loop's first factor);
- ``update_links(links_mu, active, old, change, sign)``: move each active link so that its
  oriented loop ``old`` becomes the new one (U(1): θ ← θ + s (P′ − P); SU(N): U ← R U).

The U(1) instance, :class:`U1Loops`, follows; the derivation below is written for it.
For U(1) the plaquette angles ``P(x) = theta_01(x)`` are gauge invariant:

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

Symmetries of a layer: gauge equivariance (exact), translations along ``mu`` by any
amount and along ``nu`` by multiples of 4 (the conditioner is a periodic CNN).  A stack
following :func:`latticeflow.lattice.gauge_mask_schedule` alternates ``mu``, so the flow
is equivariant under translations by multiples of 4 along each axis.  Reflections and
charge conjugation ``theta -> -theta`` are not built in.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..groups import wrap_angle
from ..lattice import extent_key, plaquette_masks_2d, shift
from ..schema import Check
from ..theories.u1 import plaquette_angles

__all__ = ["GaugeEquivariantCoupling", "LoopGroup", "U1Loops", "U1_LOOPS", "loop_channels", "masks_fit", "LOOPS", "LOOPS_CHECK", "loops_check"]

LOOPS = ("plaquette", "rectangle")


def loops_check(*extra: str) -> Check:
    """The check of the ``[flow] loops`` key of the gauge flows: ``"plaquette"``, optionally
    ``"rectangle"`` and the group's ``extra`` inputs (SU(N): ``"eigenbasis"``)."""
    allowed = set(LOOPS) | set(extra)
    optional = " and ".join(f'"{name}"' for name in (*LOOPS[1:], *extra))
    return Check(lambda v: bool(v) and set(v) <= allowed and "plaquette" in v and len(set(v)) == len(v),
                 f'containing "plaquette" and optionally {optional}, each once')


#: the ``loops`` check of the U(1) flows
LOOPS_CHECK = loops_check()


class LoopGroup:
    """The interface a gauge group offers the coupling layer; see the module docstring."""

    #: real feature channels per loop type
    channels_per_loop: int = 2

    def plaquettes(self, links: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def rectangle(self, plaq: torch.Tensor, a: int, links: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, loop: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    #: extra conditioner channels that :meth:`active_context` adds
    context_channels: int = 0

    def active_context(self, links, active_loops, active, mu):
        """``(channels, context)``: extra conditioner input ``(B, context_channels, L_0, L_1)``
        that the layer leaves unchanged (or None), and whatever ``transform`` can reuse."""
        return None, None

    def transform(self, bijection, loops: torch.Tensor, params: torch.Tensor, inverse: bool, context=None):
        """``(change, logdet)``: what ``update_links`` applies, and logdet ``(batch, n_active)``."""
        raise NotImplementedError

    def orient(self, loops: torch.Tensor, sign: float) -> torch.Tensor:
        return loops

    def update_links(self, links_mu, active, old_active, new_active, sign):
        raise NotImplementedError


class U1Loops(LoopGroup):
    """U(1): loops are angles ``(batch, L_0, L_1)``; products of loops are sums."""

    def plaquettes(self, theta):
        if theta.dim() != 4 or theta.shape[1] != 2:
            raise ValueError(f"expected link angles (batch, 2, L_0, L_1), got {tuple(theta.shape)}")
        return plaquette_angles(theta)[:, 0]

    def rectangle(self, plaq, a, links=None):
        return plaq + shift(plaq, a)

    def features(self, loop, mask):
        m = mask.to(loop.dtype)
        return [torch.cos(loop) * m, torch.sin(loop) * m]

    def transform(self, bijection, loops, params, inverse, context=None):
        return (bijection.inverse if inverse else bijection.forward)(loops, params)

    def update_links(self, theta_mu, active, old_active, new_active, sign):
        delta = torch.zeros_like(theta_mu)
        delta[:, active] = new_active - old_active
        return torch.where(active, wrap_angle(theta_mu + sign * delta), theta_mu)


U1_LOOPS = U1Loops()


def masks_fit(shape, group: str):
    """Why the gauge-equivariant masks cannot tile ``shape`` — ``(key, reason)`` — or None."""
    if len(shape) != 2:
        return "dim", f"gauge-equivariant {group} flows are implemented in 2D"
    if any(n % 4 for n in shape):
        return extent_key(shape), "the gauge-equivariant masks need L divisible by 4"
    return None


def loop_channels(loops: Sequence[str], per_loop: int = 2) -> int:
    """Number of conditioner input channels for the given loop types."""
    unknown = set(loops) - set(LOOPS)
    if unknown or "plaquette" not in loops:
        raise ValueError(f"loops must contain 'plaquette' and optionally 'rectangle', got {loops!r}")
    return per_loop * (1 + (2 if "rectangle" in loops else 0))


class GaugeEquivariantCoupling(nn.Module):
    r"""One gauge-equivariant coupling layer for 2D links.

    Transforms the active plaquettes with a conjugation-equivariant map conditioned on
    frozen loops and moves the active ``mu``-links accordingly (see the module docstring for
    the masks, the link update and the loops used).

    References:
        Kanwar et al., "Equivariant flow-based sampling for lattice gauge theory",
        arXiv:2003.06413, eqs. (8)-(10); Boyda et al., arXiv:2008.05456;
        Albergo et al., arXiv:2101.08176, Sec. 5.

    Arguments:
        bijection: the map of the active loops (U(1): :class:`NCPMixture`, :class:`CircularSpline`).
        net: conditioner ``(B, loop_channels(loops), L_0, L_1) -> (B, bijection.n_params, L_0, L_1)``.
        mu: direction of the active links, 0 or 1.
        offset: active links on the lines ``x_{1-mu} = offset (mod 4)``.
        loops: ``("plaquette",)`` or ``("plaquette", "rectangle")``.
        group: the :class:`LoopGroup` (default U(1)).

    ``forward(links) -> (links', logdet)`` and ``inverse(links') -> (links, logdet)`` with
    links of shape ``(batch, 2, L_0, L_1, ...)``, ``L_i`` divisible by 4, and ``logdet`` of
    shape ``(batch,)``.

    Example:
        >>> import math
        >>> from latticeflow.flows.circle import NCPMixture
        >>> from latticeflow.flows.nets import ConvNet
        >>> bij = NCPMixture(components=2)
        >>> net = ConvNet(2, loop_channels(["plaquette"]), bij.n_params, hidden=(4,), zero_init=False)
        >>> layer = GaugeEquivariantCoupling(bij, net, mu=0, offset=1)
        >>> theta = 2 * math.pi * torch.rand(3, 2, 8, 8)
        >>> y, ld = layer(theta)
        >>> x, ld_inv = layer.inverse(y)
        >>> bool(torch.allclose(torch.cos(x - theta), torch.ones_like(x), atol=1e-5)), ld.shape
        (True, torch.Size([3]))
    """

    def __init__(self, bijection, net: nn.Module, mu: int, offset: int,
                 loops: Sequence[str] = ("plaquette",), group: LoopGroup = U1_LOOPS):
        super().__init__()
        if mu not in (0, 1):
            raise ValueError(f"mu must be 0 or 1, got {mu}")
        self.bijection, self.net, self.group = bijection, net, group
        self.mu, self.offset = int(mu), int(offset) % 4
        self.loops = tuple(loops)
        self.in_channels = loop_channels(self.loops, group.channels_per_loop) + group.context_channels
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

    def features(self, plaq: torch.Tensor, links: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioner input from the plaquettes ``(B, L_0, L_1, ...)`` (and the links, which
        SU(N) rectangles are computed from): ``(B, C, L_0, L_1)``, the features of the loops
        that the layer leaves unchanged, zero elsewhere."""
        masks = self.masks(plaq.shape[1:3], plaq.device)
        loops = [(plaq, masks["frozen"])]
        if "rectangle" in self.loops:
            loops += [(self.group.rectangle(plaq, a, links), masks[f"rect{a}"]) for a in (0, 1)]
        chans = []
        for loop, mask in loops:
            chans += self.group.features(loop, mask)
        return torch.stack(chans, dim=1)

    def _couple(self, links: torch.Tensor, inverse: bool):
        plaq = self.group.plaquettes(links)
        active = self.masks(plaq.shape[1:3], plaq.device)["active"]
        old_active = self.group.orient(plaq[:, active], self.sign)
        extra, context = self.group.active_context(links, old_active, active, self.mu)
        features = self.features(plaq, links)
        if extra is not None:
            features = torch.cat([features, extra.to(features.dtype)], dim=1)
        params = self.net(features).movedim(1, -1)[:, active]  # (B, n_active, n_params)
        new_active, logabsdet = self.group.transform(self.bijection, old_active, params, inverse, context)
        moved = self.group.update_links(links[:, self.mu], active, old_active, new_active, self.sign)
        out = [moved, links[:, 1]] if self.mu == 0 else [links[:, 0], moved]
        return torch.stack(out, dim=1), logabsdet.sum(-1)

    def forward(self, links: torch.Tensor):
        return self._couple(links, inverse=False)

    def inverse(self, links: torch.Tensor):
        return self._couple(links, inverse=True)
