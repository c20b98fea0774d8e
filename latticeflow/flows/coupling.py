"""Checkerboard coupling layers for real scalar fields ``(batch, *lattice)``.

One layer splits the lattice into two checkerboard halves (``lattice.checkerboard``):
the *frozen* half is copied unchanged and, masked into one input channel, fed to a
conditioner network; the conditioner returns ``n_params`` channels, the raw parameters of
an elementwise bijection applied to each site of the *active* half.  The Jacobian is
triangular, so ``log|det|`` is the sum of the elementwise log-derivatives over the active
sites (real NVP, arXiv:1605.08803; for φ⁴ arXiv:1904.12072, 2101.08176).

Z₂ symmetry φ → −φ.  With ``z2=True`` the conditioner output is symmetrised,

    θ(c) = ½ [ n(c) + R n(−c) ],      so that     θ(−c) = R θ(c),

with R the bijection's ``reflect_params`` (−f(−x | θ) = f(x | Rθ)).  Then the layer maps
−x to −(layer x) with the same log-det, for any network n and any bijection that has a
reflection: the equivariance is exact and needs no special (odd) network, at the price of
two network passes.

A :class:`~latticeflow.flows.nets.ParityConvNet` conditioner, whose outputs are an odd
function O and an even function E of its input, needs one pass: R is a linear involution, so

    θ(c) = ½ [ (E + O)(c) + R (E − O)(c) ]      satisfies     θ(−c) = R θ(c)

as well (the even part of θ is the R = +1 projection of E, the odd part the R = −1 one of O).
"""

from __future__ import annotations

import torch
from torch import nn

from ..lattice import checkerboard
from .bijections import ElementwiseBijection
from .nets import ParityConvNet

__all__ = ["CheckerboardCoupling"]


class CheckerboardCoupling(nn.Module):
    """Checkerboard coupling: transform one parity of sites conditioned on the other.

    References:
        Dinh et al., arXiv:1605.08803; Albergo, Kanwar, Shanahan, arXiv:1904.12072;
        Albergo et al., arXiv:2101.08176.

    Arguments:
        bijection: an :class:`ElementwiseBijection` of the real line.
        net: conditioner ``(B, 1, *lattice) -> (B, bijection.n_params, *lattice)``, e.g. a
            periodic :class:`~latticeflow.flows.nets.ConvNet` (then the layer works on any
            even lattice, whatever it was built for).
        mask_parity: the *frozen* sites are those with ``sum(coords) % 2 == mask_parity``.
        z2: make the layer commute with φ → −φ: one pass of a :class:`ParityConvNet`
            ``net``, or two passes of any other (symmetrised).

    ``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)`` with fields
    ``(batch, *lattice)`` and ``logdet`` of shape ``(batch,)``.

    Example:
        >>> from latticeflow.flows import Affine
        >>> from latticeflow.flows.nets import ConvNet
        >>> layer = CheckerboardCoupling(Affine(), ConvNet(2, 1, 2), mask_parity=0, z2=True)
        >>> x = torch.randn(3, 8, 8)
        >>> y, logdet = layer(x)
        >>> y.shape, logdet.shape
        (torch.Size([3, 8, 8]), torch.Size([3]))
    """

    def __init__(self, bijection: ElementwiseBijection, net: nn.Module, mask_parity: int,
                 z2: bool = False):
        super().__init__()
        if mask_parity not in (0, 1):
            raise ValueError(f"mask_parity must be 0 or 1, got {mask_parity}")
        if z2:
            bijection.reflect_params(torch.zeros(bijection.n_params))  # fails early if it has none
        elif isinstance(net, ParityConvNet):
            raise ValueError("a ParityConvNet conditioner is for Z2-equivariant layers (z2=True)")
        self.bijection, self.net = bijection, net
        self.mask_parity, self.z2 = mask_parity, z2
        self._masks: dict = {}

    def extra_repr(self) -> str:
        return f"bijection={self.bijection!r}, mask_parity={self.mask_parity}, z2={self.z2}"

    def _frozen_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-site mask for the lattice of ``x`` and the flat indices of the active sites
        (cached per shape and device: no host round trip per call on a GPU)."""
        key = (tuple(x.shape[1:]), x.device)
        if key not in self._masks:
            mask = checkerboard(key[0], self.mask_parity)
            active = (~mask).flatten().nonzero().squeeze(-1)
            self._masks[key] = (mask.to(device=x.device), active.to(device=x.device))
        return self._masks[key]

    def conditioner(self, frozen: torch.Tensor) -> torch.Tensor:
        """Raw bijection parameters ``(B, *lattice, n_params)`` from the masked field ``(B, *lattice)``."""
        if isinstance(self.net, ParityConvNet):
            odd, even = (t.movedim(1, -1) for t in self.net(frozen.unsqueeze(1)))
            return 0.5 * ((even + odd) + self.bijection.reflect_params(even - odd))
        if self.z2:
            both = self.net(torch.cat([frozen, -frozen]).unsqueeze(1))
            n_plus, n_minus = both.movedim(1, -1).chunk(2)
            return 0.5 * (n_plus + self.bijection.reflect_params(n_minus))
        return self.net(frozen.unsqueeze(1)).movedim(1, -1)

    def _couple(self, x: torch.Tensor, inverse: bool):
        mask, active = self._frozen_mask(x)
        frozen = x * mask
        params = self.conditioner(frozen)
        # transform only the active sites: flatten the lattice and gather them
        flat = x.flatten(1)
        x_active = flat.index_select(1, active)
        p_active = params.flatten(1, -2).index_select(1, active)
        apply = self.bijection.inverse if inverse else self.bijection.forward
        y_active, ld = apply(x_active, p_active)
        y = flat.index_copy(1, active, y_active).view_as(x)
        return y, ld.sum(1)

    def forward(self, x: torch.Tensor):
        """``(y, log|det ∂y/∂x|)``; shapes ``(B, *lattice)`` and ``(B,)``."""
        return self._couple(x, inverse=False)

    def inverse(self, y: torch.Tensor):
        """``(x, log|det ∂x/∂y|)``; the frozen sites are the same on both sides."""
        return self._couple(y, inverse=True)
