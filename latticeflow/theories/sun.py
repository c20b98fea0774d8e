"""SU(N) lattice gauge theory (Wilson action), N = 2 or 3, d ≥ 2.

Conventions
-----------
- Links ``U_μ(x)``: complex tensor ``(batch, d, *lattice, N, N)`` in SU(N).
- Plaquette ``U_μν(x) = U_μ(x) U_ν(x+μ) U_μ(x+ν)† U_ν(x)†`` for μ < ν.
- Action ``S = −(β/N) Σ_x Σ_{μ<ν} Re tr U_μν(x)``.
- Gauge transformation ``U_μ(x) → g(x) U_μ(x) g(x+μ)†``.
- Observable ``plaquette`` = volume average of ``(1/N) Re tr U_μν``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..groups import dagger, haar_sun, project_hermitian
from ..lattice import planes, rectangular_loop, shift
from ..schema import key, one_of, positive
from .base import MAX_EXACT_VOLUME, Theory, register_theory
from .field_space import SUNField

__all__ = ["SUN", "plaquettes", "sun_action", "wilson_loop_sun", "gauge_transform_sun"]


def _tr(u: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(u, dim1=-2, dim2=-1).sum(-1)


def plaquettes(u: torch.Tensor) -> torch.Tensor:
    """U_μν(x) for all planes: ``(batch, n_planes, *lattice, N, N)``."""
    d = u.shape[1]
    out = []
    for mu, nu in planes(d):
        u_mu, u_nu = u[:, mu], u[:, nu]
        out.append(u_mu @ shift(u_nu, mu) @ dagger(shift(u_mu, nu)) @ dagger(u_nu))
    return torch.stack(out, dim=1)


def sun_action(u: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(β/N) Σ Re tr U_P`` per configuration, ``(batch,)``."""
    n = u.shape[-1]
    return -(beta / n) * _tr(plaquettes(u)).real.flatten(1).sum(1)


def wilson_loop_sun(u: torch.Tensor, a: int, b: int, mu: int = 0, nu: int = 1) -> torch.Tensor:
    """Volume average of ``(1/N) Re tr`` of the a×b loop in the (μ, ν) plane, ``(batch,)``."""
    loop = rectangular_loop(u[:, mu], u[:, nu], a, b, mu, nu, torch.matmul, dagger)
    return _tr(loop).real.flatten(1).mean(1) / u.shape[-1]


def gauge_transform_sun(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Apply ``U_μ(x) → g(x) U_μ(x) g(x+μ)†``; ``g`` is ``(batch, *lattice, N, N)``."""
    d = u.shape[1]
    return torch.stack([g @ u[:, mu] @ dagger(shift(g, mu)) for mu in range(d)], dim=1)


@register_theory
class SUN(Theory):
    """SU(N) gauge theory with Wilson action, N ∈ {2, 3}.

    References:
        arXiv:2008.05456 (SU(N) gauge-equivariant flows).

    Arguments:
        shape: lattice extents, d >= 2.
        beta: inverse coupling, > 0.
        N: 2 or 3.

    Example:
        >>> theory = SUN((4, 4), beta=2.0, N=2)
        >>> u = theory.random_field(2)
        >>> theory.action(u).shape
        torch.Size([2])
    """

    name = "sun"
    @dataclass(frozen=True)
    class couplings:
        beta: float = key(doc="inverse coupling β (S = −(β/N) Σ Re tr U_P)", check=positive)
        N: int = key(doc="number of colours", check=one_of(2, 3))

    min_dim = 2
    observable_names = ("plaquette", "wilson_1x2", "wilson_2x2")
    headline_observables = ("plaquette",)

    def __init__(self, shape, beta: float, N: int):
        super().__init__(shape)
        if N not in (2, 3):
            raise ValueError("SU(N) is implemented for N = 2, 3")
        self.beta = float(beta)
        self.N = int(N)
        self.field_space = SUNField(self.N)

    @property
    def field_shape(self):
        return (self.dim, *self.shape, self.N, self.N)

    def action(self, x):
        return sun_action(x, self.beta)

    def staples(self, u: torch.Tensor) -> torch.Tensor:
        """Staple sums ``A_μ(x)``, ``(batch, d, *lattice, N, N)``.

        Defined so that the plaquettes containing ``U_μ(x)`` contribute
        ``Σ Re tr U_P = Re tr (U_μ(x) A_μ(x))``; HMC's analytic force is built from it.
        """
        d = u.shape[1]
        out = torch.zeros_like(u)
        for mu in range(d):
            for nu in range(d):
                if nu == mu:
                    continue
                u_mu, u_nu = u[:, mu], u[:, nu]
                up = shift(u_nu, mu) @ dagger(shift(u_mu, nu)) @ dagger(u_nu)
                down_nu = shift(u_nu, nu, -1)
                down = dagger(shift(down_nu, mu)) @ dagger(shift(u_mu, nu, -1)) @ down_nu
                out[:, mu] += up + down
        return out

    def force(self, u):
        """F = −(β / 2N) · project_hermitian(U_μ(x) A_μ(x)), traceless Hermitian per link.

        With ``P = Σ_a p_a T_a``, ``tr T_a T_b = δ_ab/2``, the kick ``p_a ← p_a − ε ∂S/∂ω_a``
        for ``U = exp(iω_a T_a) U`` is ``P ← P + εF`` with ``F = −Σ_a T_a ∂S/∂ω_a``; and
        ∂S/∂ω_a = −(β/N) Re tr(i T_a U A) = (β/N) Im tr(T_a U A), Σ_a T_a tr(T_a X) =
        ½ (X − tr X / N), which gives the projection above
        (``project_hermitian(M) = −i [(M − M†)/2 − tr(M − M†)/2N]``).
        """
        return -(self.beta / (2 * self.N)) * project_hermitian(u @ self.staples(u))

    def observables(self, x):
        u = x.to(torch.complex128)
        return {
            "plaquette": _tr(plaquettes(u)).real.flatten(1).mean(1) / self.N,
            "wilson_1x2": wilson_loop_sun(u, 1, 2),
            "wilson_2x2": wilson_loop_sun(u, 2, 2),
        }

    def exact(self):
        """2D only: the torus plaquette (character expansion); infinite-volume plaquette and
        Wilson loops for N = 2, 3."""
        if self.dim != 2 or self.volume > MAX_EXACT_VOLUME:
            return {}
        from . import exact

        p_inf = exact.sun_plaquette_infinite_volume(self.beta, self.N)
        out = {}
        if self.N == 2:
            out["plaquette"] = exact.su2_plaquette_torus(self.beta, self.volume)
        else:
            out["plaquette"] = exact.sun_plaquette_torus(self.beta, self.N, self.volume)
        out["plaquette_infinite_volume"] = p_inf
        out["wilson_1x2_infinite_volume"] = p_inf**2
        out["wilson_2x2_infinite_volume"] = p_inf**4
        return out

    def random_field(self, batch, generator=None):
        return haar_sun((batch, *self.field_shape[:-2]), self.N, generator=generator)

    def gauge_transform(self, x, generator=None):
        g = haar_sun((x.shape[0], *self.shape), self.N, generator=generator)
        return gauge_transform_sun(x, g)
