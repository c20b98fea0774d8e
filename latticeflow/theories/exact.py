"""Exact results for the reference theories (docs/design.md §1).

- U(1), 2D torus with V plaquettes: Z = Σ_n I_n(β)^V; plaquette, Wilson loops, and the
  topological charge distribution.  The plaquette angles of a 2D torus are V independent
  angles with weight e^{β cos φ} whose principal values sum to 2πQ, so

      Z(θ) = Σ_Q P(Q) e^{iθQ} ∝ Σ_{n∈ℤ} J(n + θ/2π)^V,   J(ν) = ∫_{−π}^{π} dφ e^{β cos φ} cos νφ,

  and ⟨Q²⟩ = −Z''(0)/Z(0).
- SU(2), 2D torus: Z = Σ_{n≥1} (2 I_n(β)/β)^V and ⟨½ tr U_P⟩ = (1/V) ∂_β ln Z.
- SU(N), infinite volume: z_N(β) = Σ_k det[I_{k+i−j}(β/N)], ⟨(1/N) Re tr U_P⟩ = ∂_β ln z_N.
- SU(N), 2D torus (character expansion): with the one-plaquette coefficients
  c_λ(β) = ∫ dU χ_λ(U) e^{(β/N) Re tr U} = Σ_k det[I_{λ_j + k − j + i}(β/N)]_{i,j=1..N}
  (normalised Haar measure; λ_1 ≥ … ≥ λ_N = 0 the highest weight of an irrep of
  dimension d_λ), Z = Σ_λ (c_λ/d_λ)^V and ⟨(1/N) Re tr U_P⟩ = (1/V) ∂_β ln Z.  For N = 2 this
  is the SU(2) sum above; the tests check the coefficients against direct Weyl
  integration over the eigen-phases.
- Free scalar field (λ = 0, m² > 0) with the no-½ action: G(x) = (1/V) Σ_p e^{ipx}/[2(p̂² + m²)].

Bessel functions are evaluated exponentially scaled (``scipy.special.ive``) so that large
volumes and couplings do not overflow.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ive, logsumexp

__all__ = [
    "u1_plaquette",
    "u1_wilson_loop",
    "u1_q_squared",
    "u1_topological_susceptibility",
    "u1_charge_distribution",
    "su2_plaquette_torus",
    "sun_character_coefficients",
    "sun_plaquette_torus",
    "sun_plaquette_infinite_volume",
    "free_propagator",
    "free_chi2",
    "free_log_z",
]

_NMAX = 60  # |n| cut-off of the character sums; I_n(β) for n > 60 is negligible for β ≤ 20


def _nmax(beta: float, volume: int) -> int:
    """The |n| cut-off of a U(1) character sum over V plaquettes: I_n(β)^V/I_0(β)^V ≈
    e^{−V n²/(2β)} must have fallen below e^{−40} (at least ``_NMAX``)."""
    return max(_NMAX, math.ceil(math.sqrt(80.0 * beta / max(volume, 1))) + 10)


def _phi_max(beta: float) -> float:
    """Where e^{β(cos φ − 1)} < e^{−60}: the quadrature of J(ν) covers |φ| ≤ this (π up to
    β ≈ 30), so that its nodes resolve the peak of width 1/√β at any β."""
    return min(math.pi, math.sqrt(240.0 / beta)) if beta > 0 else math.pi


#: P(Q) by its quadrature on |ν| ≤ 60 holds up to β = this × V (where _nmax exceeds 60)
MAX_BETA_PER_PLAQUETTE = 40


def _check(beta: float, volume: int) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if volume < 1:
        raise ValueError(f"volume must be >= 1, got {volume}")


def _log_bessel(n: np.ndarray, beta: float) -> np.ndarray:
    """log I_n(β) up to the common additive constant β (ive = I e^{−β})."""
    with np.errstate(divide="ignore"):
        return np.log(ive(n, beta))


def u1_wilson_loop(beta: float, volume: int, area: int) -> float:
    """⟨cos W⟩ of a contractible loop enclosing ``area`` plaquettes on the 2D torus."""
    _check(beta, volume)
    nmax = _nmax(beta, volume - area + 1)
    n = np.arange(-nmax, nmax + 1)
    ln, ln1 = _log_bessel(n, beta), _log_bessel(n + 1, beta)
    num = logsumexp((volume - area) * ln + area * ln1)
    den = logsumexp(volume * ln)
    return float(np.exp(num - den))


def u1_plaquette(beta: float, volume: int) -> float:
    """⟨cos θ_P⟩ on the 2D torus with ``volume`` plaquettes."""
    return u1_wilson_loop(beta, volume, 1)


def _gauss_legendre(n: int = 400, half_width: float = math.pi):
    x, w = np.polynomial.legendre.leggauss(n)
    return half_width * x, half_width * w


def _j_and_derivatives(nu: np.ndarray, beta: float):
    """J(ν), J'(ν), J''(ν) scaled by e^{−β}: ∫ e^{β(cos φ − 1)} {cos νφ, −φ sin νφ, −φ² cos νφ} dφ."""
    phi, w = _gauss_legendre(half_width=_phi_max(beta))
    weight = w * np.exp(beta * (np.cos(phi) - 1.0))
    arg = np.outer(nu, phi)
    j0 = np.cos(arg) @ weight
    j1 = -(np.sin(arg) * phi) @ weight
    j2 = -(np.cos(arg) * phi**2) @ weight
    return j0, j1, j2


def u1_q_squared(beta: float, volume: int) -> float:
    """⟨Q²⟩ of the geometric charge on the 2D torus with ``volume`` plaquettes."""
    _check(beta, volume)
    nmax = _nmax(beta, volume)
    n = np.arange(-nmax, nmax + 1, dtype=float)
    j0, j1, j2 = _j_and_derivatives(n, beta)
    scale = j0.max()
    j0, j1, j2 = j0 / scale, j1 / scale, j2 / scale
    v = volume
    z = np.sum(j0**v)
    z2 = np.sum(v * (v - 1) * j0 ** (v - 2) * j1**2 + v * j0 ** (v - 1) * j2) / (2 * math.pi) ** 2
    return float(max(-z2 / z, 0.0))  # a non-negative quantity; round-off leaves ~1e-19 either side at large β


def u1_topological_susceptibility(beta: float, volume: int) -> float:
    """χ_Q = ⟨Q²⟩/V on the 2D torus."""
    return u1_q_squared(beta, volume) / volume


def u1_charge_distribution(beta: float, volume: int, qmax: int = 10) -> dict[int, float]:
    """P(Q) for |Q| ≤ qmax on the 2D torus (normalised over that range).

    P(Q) ∝ ∫_ℝ dν J(ν)^V cos(2πνQ): the Fourier sum over n and the θ integral combine
    into one integral over the real line, done by quadrature on |ν| ≤ 60, which holds the
    integrand up to β ≈ 45 V (:data:`MAX_BETA_PER_PLAQUETTE`); beyond, a ValueError.
    """
    _check(beta, volume)
    if _nmax(beta, volume) > _NMAX:
        raise ValueError(f"P(Q) by quadrature is limited to beta <= {MAX_BETA_PER_PLAQUETTE} V")
    nu = np.linspace(0.0, _NMAX, 12001)
    j0, _, _ = _j_and_derivatives(nu, beta)
    f = (j0 / j0[0]) ** volume
    q = np.arange(0, qmax + 1)
    integrand = f[None, :] * np.cos(2 * math.pi * np.outer(q, nu))
    p = np.trapezoid(integrand, nu, axis=1)
    p = np.clip(p, 0.0, None)
    full = {int(k): float(p[abs(k)]) for k in range(-qmax, qmax + 1)}
    total = sum(full.values())
    return {k: val / total for k, val in full.items()}


def su2_plaquette_torus(beta: float, volume: int) -> float:
    """⟨½ tr U_P⟩ for SU(2) on the 2D torus with ``volume`` plaquettes."""
    _check(beta, volume)
    n = np.arange(1, _NMAX + 1)
    c = 2 * ive(n, beta) / beta
    dc = (ive(n - 1, beta) + ive(n + 1, beta)) / beta - 2 * ive(n, beta) / beta**2
    scale = c.max()
    c, dc = c / scale, dc / scale
    return float(np.sum(c ** (volume - 1) * dc) / np.sum(c**volume))


def _irreps(N: int, lmax: int):
    """Highest weights λ = (λ_1 ≥ … ≥ λ_{N−1} ≥ λ_N = 0) with λ_1 ≤ lmax, and dimensions."""
    weights = [(l,) for l in range(lmax + 1)]
    for _ in range(N - 2):
        weights = [w + (m,) for w in weights for m in range(w[-1] + 1)]
    out = []
    for w in weights:
        lam = np.array(w + (0,))
        l = lam + N - np.arange(1, N + 1)  # λ_j + N − j, strictly decreasing
        dim = np.prod([(l[i] - l[j]) / (j - i) for i in range(N) for j in range(i + 1, N)])
        out.append((tuple(int(v) for v in lam), int(round(dim))))
    return out


def sun_character_coefficients(beta: float, N: int, lmax: int = 16):
    """One-plaquette character coefficients of SU(N): ``[(λ, d_λ, c_λ, ∂_β c_λ)]``.

    ``c_λ = Σ_k det[I_{λ_j + k − j + i}(β/N)]`` (module docstring), returned scaled by the
    common factor e^{−β}, which cancels in every ratio.  Irreps with λ_1 ≤ ``lmax``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b = beta / N
    ks = np.arange(-_NMAX // 2, _NMAX // 2 + 1)
    i, j = np.arange(N)[:, None], np.arange(N)[None, :]
    out = []
    for lam, dim in _irreps(N, lmax):
        m = ks[:, None, None] + (np.array(lam)[None, :] - j + i)[None]  # orders λ_j + k − j + i
        mat, dmat = ive(m, b), (ive(m - 1, b) + ive(m + 1, b)) / (2 * N)
        c = np.linalg.det(mat).sum()
        dc = sum(_ddet(a, da) for a, da in zip(mat, dmat))
        out.append((lam, dim, float(c), float(dc)))
    return out


def sun_plaquette_torus(beta: float, N: int, volume: int) -> float:
    """⟨(1/N) Re tr U_P⟩ for SU(N) on the 2D torus with ``volume`` plaquettes:
    Σ_λ (c_λ/d_λ)^{V−1} ∂c_λ/d_λ / Σ_λ (c_λ/d_λ)^V."""
    _check(beta, volume)
    coeffs = sun_character_coefficients(beta, N)
    ratio = np.array([c / d for _, d, c, _ in coeffs])
    dratio = np.array([dc / d for _, d, _, dc in coeffs])
    scale = np.abs(ratio).max()
    ratio, dratio = ratio / scale, dratio / scale
    return float(np.sum(ratio ** (volume - 1) * dratio) / np.sum(ratio**volume))


def sun_plaquette_infinite_volume(beta: float, N: int) -> float:
    """⟨(1/N) Re tr U_P⟩ for SU(N) in 2D at infinite volume: d ln z_N / dβ."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b = beta / N
    ks = np.arange(-_NMAX // 2, _NMAX // 2 + 1)
    idx = np.arange(N)[:, None] - np.arange(N)[None, :]
    m = ks[:, None, None] + idx[None]  # (K, N, N) Bessel orders k + i − j
    mat = ive(m, b)
    dmat = (ive(m - 1, b) + ive(m + 1, b)) / (2 * N)
    det = np.linalg.det(mat)
    # d det / dβ = det · tr(M^{-1} dM); use the adjugate form to stay finite where det → 0
    ddet = np.array([_ddet(a, da) for a, da in zip(mat, dmat)])
    # mat and dmat share the scale e^{−b} per entry, which cancels in the ratio
    return float(ddet.sum() / det.sum())


def _ddet(a: np.ndarray, da: np.ndarray) -> float:
    """Derivative of det(A) along dA by Jacobi's formula, row by row (no inverse)."""
    total = 0.0
    for i in range(a.shape[0]):
        b = a.copy()
        b[i] = da[i]
        total += np.linalg.det(b)
    return total


def _momenta_squared(shape) -> np.ndarray:
    grids = np.meshgrid(*[2 * np.pi * np.arange(n) / n for n in shape], indexing="ij")
    return sum(4 * np.sin(p / 2) ** 2 for p in grids)


def free_propagator(shape, m2: float) -> np.ndarray:
    """Free-field G(x) on the periodic lattice ``shape``, for the action with no factor ½."""
    if not m2 > 0:
        raise ValueError("the free field needs m2 > 0")
    g_p = 1.0 / (2 * (_momenta_squared(shape) + m2))
    return np.fft.ifftn(g_p).real


def free_chi2(m2: float) -> float:
    """χ₂ = Σ_x G(x) = G̃(0) = 1/(2m²)."""
    return 1.0 / (2 * m2)


def free_log_z(shape, m2: float) -> float:
    """log Z = (V/2) log 2π − ½ Σ_p log[2(p̂² + m²)]."""
    v = math.prod(shape)
    return float(v / 2 * math.log(2 * math.pi) - 0.5 * np.log(2 * (_momenta_squared(shape) + m2)).sum())
