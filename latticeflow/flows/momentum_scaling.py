"""A translation-invariant linear layer for real scalar fields, diagonal in momentum space.

    y = F⁻¹[ s(p) · F x ],      log s(p) = Σ_k c_k b_k(p̂²),      p̂² = Σ_μ 4 sin²(p_μ/2)

with a few learnable coefficients c_k and fixed basis functions of the lattice momentum
(``BASIS``).  s depends on p only through p̂², so s(p) = s(−p): the map is a real,
symmetric, positive-definite circulant matrix; it commutes with lattice translations and
with φ → −φ, and log|det| = Σ_p log s(p) does not depend on the field.  Because the
coefficients multiply functions of p̂² (not one number per momentum), one layer trained at
L = 8 runs on any lattice.

Placed right after the N(0, 1) prior it makes the prior a learnable correlated Gaussian,
e.g. the free-field form s(p) ∝ (p̂² + m²)^(−1/2) (c_1 = −½).  Checkerboard couplings with
small kernels adjust the long-wavelength modes (the magnetisation) only slowly; this layer
sets their width directly at negligible cost.  All c_k = 0 is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MomentumScaling", "BASIS"]

#: basis functions b_k(p̂²) of log s(p); d is the lattice dimension (p̂² ≤ 4d)
BASIS = (
    ("const", lambda p2, d: torch.ones_like(p2)),
    ("log1p", lambda p2, d: torch.log1p(p2)),
    ("linear", lambda p2, d: p2 / (4 * d)),
    ("zero_mode", lambda p2, d: 1.0 / (1.0 + 4.0 * p2)),
)


class MomentumScaling(nn.Module):
    """``forward(x) -> (y, logdet)``, ``inverse(y) -> (x, logdet)`` for fields ``(B, *lattice)``.

    Arguments:
        dim: lattice dimension d (the last d axes of the field are transformed).

    Example:
        >>> layer = MomentumScaling(2)
        >>> x = torch.randn(3, 8, 8)
        >>> y, logdet = layer(x)
        >>> torch.allclose(y, x, atol=1e-6), logdet.tolist()
        (True, [0.0, 0.0, 0.0])
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.coefficients = nn.Parameter(torch.zeros(len(BASIS)))
        self._p2: dict = {}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, basis={[name for name, _ in BASIS]}"

    def log_scale(self, shape, dtype, device) -> torch.Tensor:
        """log s(p) on the momentum grid of a lattice ``shape``, shape ``shape``."""
        key = (tuple(shape), dtype, device)
        if key not in self._p2:
            grids = torch.meshgrid(*[2 * torch.pi * torch.fft.fftfreq(n, dtype=torch.float64)
                                     for n in shape], indexing="ij")
            p2 = sum(4 * torch.sin(p / 2) ** 2 for p in grids)
            self._p2[key] = torch.stack([b(p2, self.dim) for _, b in BASIS], -1).to(dtype=dtype, device=device)
        return self._p2[key] @ self.coefficients.to(dtype)

    def _scale(self, x: torch.Tensor, sign: float):
        axes = tuple(range(-self.dim, 0))
        log_s = sign * self.log_scale(x.shape[-self.dim:], x.dtype, x.device)
        y = torch.fft.ifftn(torch.fft.fftn(x, dim=axes) * torch.exp(log_s), dim=axes).real
        return y, log_s.sum().expand(x.shape[0])

    def forward(self, x: torch.Tensor):
        return self._scale(x, 1.0)

    def inverse(self, y: torch.Tensor):
        return self._scale(y, -1.0)
