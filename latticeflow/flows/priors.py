"""Prior (base) distributions of the flows: N(0, 1) per site for scalar fields, uniform
(Haar) per link for U(1) and SU(N) gauge fields (docs/design.md §2).

A prior has ``sample(n, generator=None) -> (n, *shape)`` and ``log_prob(x) -> (n,)``, the
log-density summed over all sites (and directions) of one configuration.
"""

from __future__ import annotations

import math

import torch

from ..groups import haar_sun

__all__ = ["NormalPrior", "UniformAnglePrior", "HaarPrior"]


class _Prior:
    #: True for priors on complex fields (SU(N) links): the flow keeps fields complex
    is_complex = False

    def __init__(self, shape, dtype=None, device=None):
        self.shape = tuple(int(n) for n in ((shape,) if isinstance(shape, int) else shape))
        if any(n < 1 for n in self.shape):
            raise ValueError(f"prior shape must have positive extents, got {self.shape}")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.device = device
        self.numel = math.prod(self.shape)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[x.dim() - len(self.shape):]) != self.shape or x.dim() < len(self.shape):
            raise ValueError(f"expected trailing shape {self.shape}, got {tuple(x.shape)}")

    def _sum_sites(self, t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=tuple(range(-len(self.shape), 0)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class NormalPrior(_Prior):
    r"""Independent standard normal per site, :math:`\log r(z) = -\tfrac12 \sum_x z_x^2 - \tfrac{V}{2}\log 2π`.

    The prior of the real-NVP flows for φ⁴ theory.

    References:
        Albergo, Kanwar, Shanahan, arXiv:1904.12072.

    Arguments:
        shape: shape of one configuration, e.g. ``(L, L)`` for a scalar field.
        dtype, device: of the samples (default: torch's default dtype, CPU).

    Example:
        >>> prior = NormalPrior((8, 8), dtype=torch.float64)
        >>> z = prior.sample(16, generator=torch.Generator().manual_seed(0))
        >>> z.shape, prior.log_prob(z).shape
        (torch.Size([16, 8, 8]), torch.Size([16]))
    """

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n configurations, shape (n, *shape)."""
        return torch.randn((n, *self.shape), generator=generator, dtype=self.dtype, device=self.device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of configurations (..., *shape), summed over sites: shape (...)."""
        self._check(x)
        return self._sum_sites(-0.5 * x**2) - 0.5 * self.numel * math.log(2 * math.pi)


class UniformAnglePrior(_Prior):
    r"""Uniform (Haar) measure on U(1) link angles, :math:`\log r = -V_\text{links} \log 2π`.

    Samples lie in [0, 2π); ``log_prob`` is constant, for any real angle (angles are
    defined mod 2π).

    References:
        Kanwar et al., arXiv:2003.06413.

    Arguments:
        shape: shape of one configuration, e.g. ``(dim, L, L)`` for 2D links.
        dtype, device: of the samples (default: torch's default dtype, CPU).

    Example:
        >>> prior = UniformAnglePrior((2, 8, 8), dtype=torch.float64)
        >>> theta = prior.sample(4)
        >>> theta.shape, bool(torch.allclose(prior.log_prob(theta), torch.tensor(-128 * math.log(2 * math.pi), dtype=torch.float64)))
        (torch.Size([4, 2, 8, 8]), True)
    """

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n configurations of angles in [0, 2π), shape (n, *shape)."""
        u = torch.rand((n, *self.shape), generator=generator, dtype=self.dtype, device=self.device)
        return 2 * math.pi * u

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-numel·log 2π for each configuration in (..., *shape): shape (...)."""
        self._check(x)
        batch = x.shape[: x.dim() - len(self.shape)]
        return torch.full(batch, -self.numel * math.log(2 * math.pi), dtype=x.dtype, device=x.device)


class HaarPrior(_Prior):
    r"""Haar measure on SU(N) links, with density 1 with respect to the *normalised* Haar
    measure (total volume 1): :math:`\log r = 0` (docs/conventions.md).

    Densities of SU(N) flows are therefore densities with respect to normalised Haar
    measure on every link, and the loss bounds ``log Z`` with ``Z = ∫ Π dU e^{−S}`` in the
    same measure (the ``Z`` of the character expansion, :mod:`latticeflow.theories.exact`).

    References:
        Boyda et al., arXiv:2008.05456.

    Arguments:
        shape: shape of one configuration *including* the matrix axes, e.g. ``(2, L, L, N, N)``.
        dtype, device: the *real* dtype of the flow (samples are drawn in complex128; the
            flow casts them to its complex dtype).

    Example:
        >>> prior = HaarPrior((2, 4, 4, 3, 3))
        >>> u = prior.sample(2, generator=torch.Generator().manual_seed(0))
        >>> u.shape, u.dtype, prior.log_prob(u)
        (torch.Size([2, 2, 4, 4, 3, 3]), torch.complex128, tensor([0., 0.], dtype=torch.float64))
    """

    is_complex = True

    def __init__(self, shape, dtype=None, device=None):
        super().__init__(shape, dtype, device)
        if len(self.shape) < 2 or self.shape[-1] != self.shape[-2] or self.shape[-1] not in (2, 3):
            raise ValueError(f"HaarPrior needs a shape ending in (N, N) with N = 2 or 3, got {self.shape}")
        self.N = self.shape[-1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n configurations of Haar-random SU(N) matrices, ``(n, *shape)``, complex128."""
        u = haar_sun((n, *self.shape[:-2]), self.N, generator=generator)
        return u if self.device is None else u.to(self.device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """0 for every configuration in (..., *shape): shape (...), in x's real dtype."""
        self._check(x)
        batch = x.shape[: x.dim() - len(self.shape)]
        return torch.zeros(batch, dtype=x.real.dtype, device=x.device)
