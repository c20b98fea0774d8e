"""SU(N) heat bath and overrelaxation in SU(2) subgroups (Cabibbo–Marinari), for
:class:`~latticeflow.mcmc.heatbath.HeatbathKernel`.

Conventions
-----------
- The local action of a link U is −Re tr(U W), W = Σ_P (β_P/N) × staple_P
  (``heatbath.staple_terms``, the convention of ``SUN.staples``); M = U W.
- Subgroups: the SU(2) matrices r acting on rows (i, j) of U, U → R U, for
  (i, j) = (0, 1) (N = 2), and (0, 1), (0, 2), (1, 2) (N = 3), in this order; after each,
  M → R M.  The weight of r is exp(Re tr(r m)) with m the (i, j) block of M, and
  Re tr(r m) = k Re tr(r v) with k v (k ≥ 0, v ∈ SU(2)) the quaternion part of m
  (:func:`su2_part`).
- SU(2) elements as pairs (a, b) of complex numbers, |a|² + |b|² = 1: the matrix
  ``[[a, b], [−b*, a*]]`` (a = x₀ + i x₃, b = x₂ + i x₁ for the unit quaternion x).
- Heat bath: x = r v is distributed as exp(2k x₀) on SU(2) with Haar measure: x₀ from
  √(1 − x₀²) e^{α x₀}, α = 2k (:func:`su2_x0`: Kennedy–Pendleton for α ≥ 0.85, below a
  Haar proposal with acceptance e^{α(x₀−1)}, whichever accepts more), x⃗ uniform on the
  sphere of radius √(1 − x₀²); then r = x v†.  k = 0: r is Haar.
- Overrelaxation: R = (v†)², the reflection g ↦ v₀† g† v₀† of the subgroup element (v₀:
  the v of the coset's representative): it keeps Re tr(r m), preserves the Haar measure and
  is an involution (afterwards v is v†, so a second one multiplies by v² v†² = 1).
- Links are reunitarised (:func:`latticeflow.groups.reunitarize`) after a step where
  |U†U − 1| exceeds 1e-12 somewhere: rounding drift only.

References:
    N. Cabibbo, E. Marinari, Phys. Lett. B 119 (1982) 387;
    A. D. Kennedy, B. J. Pendleton, Phys. Lett. B 156 (1985) 393;
    M. Creutz, Phys. Rev. D 21 (1980) 2308; Phys. Rev. D 36 (1987) 515.
"""

from __future__ import annotations

import math

import torch

from ..groups import dagger, reunitarize
from .heatbath import LinkSet, rejection_sample, staple_terms

__all__ = ["SUNUpdate", "su2_part", "su2_mul", "su2_dagger", "su2_x0", "su2_heatbath", "KP_THRESHOLD", "DRIFT"]

F64 = torch.float64
#: α from which Kennedy–Pendleton accepts more than the Haar proposal (≈ 0.5 each there)
KP_THRESHOLD = 0.85
#: reunitarise when |U†U − 1| exceeds this
DRIFT = 1e-12


def su2_part(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The quaternion part (a, b) of complex 2×2 blocks ``m`` ``(..., 2, 2)``: the matrix
    q = [[a, b], [−b*, a*]] = (m + σ₂ m* σ₂)/2 with Re tr(r m) = Re tr(r q) for every SU(2) r."""
    return (m[..., 0, 0] + m[..., 1, 1].conj()) / 2, (m[..., 0, 1] - m[..., 1, 0].conj()) / 2


def su2_mul(x: tuple, y: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of SU(2) elements given as (a, b), [[a, b], [−b*, a*]]."""
    (a, b), (c, d) = x, y
    return a * c - b * d.conj(), a * d + b * c.conj()


def su2_dagger(x: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    return x[0].conj(), -x[1]


def _x0_proposal(u: torch.Tensor, alpha: torch.Tensor):
    """x₀ for √(1 − x₀²) e^{α x₀}: Kennedy–Pendleton (α ≥ KP_THRESHOLD): λ² =
    −(log u₀ + cos²(2πu₁) log u₂)/(2α) ~ Γ(3/2), x₀ = 1 − 2λ², accepted where u₃² ≤ 1 − λ²;
    else x₀ = √u₀ cos(2πu₁) (the semicircle density √(1 − x₀²), Haar), accepted where
    log u₂ < α(x₀ − 1)."""
    kp = alpha >= KP_THRESHOLD
    cos2 = torch.cos(2 * math.pi * u[..., 1])
    lam2 = -(torch.log(u[..., 0]) + cos2**2 * torch.log(u[..., 2])) / (2 * torch.where(kp, alpha, 1.0))
    x0_kp, ok_kp = 1 - 2 * lam2, u[..., 3] ** 2 <= 1 - lam2
    x0_haar = torch.sqrt(u[..., 0]) * cos2
    ok_haar = torch.log(u[..., 2]) < alpha * (x0_haar - 1)
    return torch.where(kp, x0_kp, x0_haar), torch.where(kp, ok_kp, ok_haar)


def su2_x0(alpha: torch.Tensor, generator: torch.Generator, rounds: int = 3):
    """Exact draws x₀ ∈ [−1, 1] from √(1 − x₀²) e^{α x₀} (α ``(n,)`` ≥ 0); returns
    ``(x0, tries)``."""
    return rejection_sample(_x0_proposal, [alpha.to(F64)], 4, generator, rounds)


def su2_heatbath(k: torch.Tensor, generator: torch.Generator, rounds: int = 3):
    """SU(2) elements x = (a, b) ``(n,)`` each, distributed as exp(2k Re a) = exp(k Re tr x)
    with Haar measure, one per entry of k ``(n,)`` ≥ 0, and the proposals each took ``(n,)``
    (a = x₀ + i x₃, b = x₂ + i x₁)."""
    x0, tries = su2_x0(2 * k, generator, rounds)
    u = (1 - torch.rand((k.shape[0], 2), dtype=F64, generator=generator)).to(k.device)
    cos_t, phi = 2 * u[:, 0] - 1, 2 * math.pi * u[:, 1]
    radius = torch.sqrt((1 - x0**2).clamp(min=0))
    rho = radius * torch.sqrt((1 - cos_t**2).clamp(min=0))
    return torch.complex(x0, radius * cos_t), torch.complex(rho * torch.sin(phi), rho * torch.cos(phi)), tries


def _subgroups(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


class SUNUpdate:
    """Heat bath and overrelaxation of one :class:`LinkSet` of SU(N) links ``(C, d, V, N, N)``,
    in place (module docstring)."""

    def __init__(self, N: int):
        self.N, self.subgroups = int(N), _subgroups(int(N))
        self.updates_per_link = len(self.subgroups)

    def _m(self, links, s: LinkSet, weights):
        """The set's links U and M = U W ``(C, n, N, N)``."""
        w_sum = 0
        for (up, down), (w_up, w_down) in zip(staple_terms(links, s, torch.matmul, dagger), weights):
            w_up, w_down = (w if isinstance(w, float) else w[..., None, None] for w in (w_up, w_down))
            w_sum = w_sum + (w_up * up + w_down * down) / self.N
        u = links[:, s.mu, s.sites]
        return u, u @ w_sum

    def _apply(self, r: tuple, i: int, j: int, *mats) -> None:
        """Left-multiply rows (i, j) of each of ``mats`` ``(C, n, N, N)`` by the SU(2)
        elements ``r`` = (a, b) ``(C, n)``, in place."""
        a, b = r[0][..., None], r[1][..., None]
        for m in mats:
            row_i, row_j = m[..., i, :], m[..., j, :]
            new_i, new_j = a * row_i + b * row_j, a.conj() * row_j - b.conj() * row_i
            m[..., i, :], m[..., j, :] = new_i, new_j

    def _part(self, m, i: int, j: int):
        """The quaternion part of block (i, j) of M as (k, v): k ≥ 0 and v ∈ SU(2) (1 where k = 0)."""
        a, b = (m[..., i, i] + m[..., j, j].conj()) / 2, (m[..., i, j] - m[..., j, i].conj()) / 2  # su2_part
        k = torch.sqrt(a.real**2 + a.imag**2 + b.real**2 + b.imag**2)
        inv = torch.where(k > 0, 1 / k, 0.0)
        return k, (torch.where(k > 0, a * inv, 1.0 + 0j), b * inv)

    def heatbath(self, links, s: LinkSet, weights, generator, rounds) -> torch.Tensor:
        u, m = self._m(links, s, weights)
        tries = torch.zeros(u.shape[0], dtype=F64, device=u.device)
        for i, j in self.subgroups:
            k, v = self._part(m, i, j)
            xa, xb, t = su2_heatbath(k.flatten(), generator, rounds)
            self._apply(su2_mul((xa.view(k.shape), xb.view(k.shape)), su2_dagger(v)), i, j, u, m)
            tries += t.view(k.shape).sum(1)
        links[:, s.mu, s.sites] = u
        return tries

    def overrelax(self, links, s: LinkSet, weights) -> None:
        u, m = self._m(links, s, weights)
        for i, j in self.subgroups:
            v_dag = su2_dagger(self._part(m, i, j)[1])
            self._apply(su2_mul(v_dag, v_dag), i, j, u, m)
        links[:, s.mu, s.sites] = u

    def project(self, x):
        eye = torch.eye(self.N, dtype=x.dtype, device=x.device)
        if (dagger(x) @ x - eye).abs().max() > DRIFT:
            return reunitarize(x)
        return x
