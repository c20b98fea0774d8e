"""U(1) and SU(N) helpers: Haar sampling, Lie-algebra projection, exponentials, eigen-phases.

Conventions
-----------
- U(1) links are angles θ (any real, meaningful mod 2π); ``wrap_angle`` maps to [0, 2π),
  ``principal_angle`` to (−π, π].
- SU(N) links are complex ``(..., N, N)`` matrices.  The Lie algebra is represented by
  traceless *Hermitian* matrices P, and links move as ``U ← exp(iεP) U`` (docs/design.md §2);
  ``project_antihermitian`` gives the traceless anti-Hermitian part ``A = iP``.
- Matrix computations that feed the action or accept/reject run in complex128.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "wrap_angle",
    "principal_angle",
    "haar_sun",
    "random_algebra",
    "project_antihermitian",
    "project_hermitian",
    "expi",
    "exp_algebra",
    "su_n_generators",
    "dagger",
    "reunitarize",
    "eigenphases",
    "is_special_unitary",
]


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angle mod 2π in [0, 2π).

    ``torch.remainder`` of a tiny negative angle can round up to exactly 2π; that value is
    mapped to 0, so the result is always inside the half-open interval.
    """
    r = torch.remainder(theta, 2 * math.pi)
    return torch.where(r >= 2 * math.pi, r - 2 * math.pi, r)


def principal_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angle in (−π, π]: ``arg exp(iθ)``."""
    return math.pi - torch.remainder(math.pi - theta, 2 * math.pi)


def dagger(u: torch.Tensor) -> torch.Tensor:
    """Conjugate transpose over the last two axes."""
    return u.transpose(-1, -2).conj()


def _eye_like(u: torch.Tensor) -> torch.Tensor:
    return torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)


def _fix_det(u: torch.Tensor) -> torch.Tensor:
    """Divide a unitary matrix by an N-th root of its determinant so det = 1."""
    n = u.shape[-1]
    phase = torch.angle(torch.linalg.det(u))
    return u * torch.exp(-1j * phase / n)[..., None, None].to(u.dtype)


def haar_sun(shape: tuple[int, ...], N: int, dtype=torch.complex128,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-random SU(N) matrices of shape ``(*shape, N, N)``.

    N = 2: a uniform unit quaternion a₀ + i a⃗·σ⃗.  N ≥ 3: QR of a complex Ginibre matrix
    with the phases of R's diagonal fixed (Mezzadri, math-ph/0609050), then the
    determinant divided out.
    """
    if N == 2:
        # SU(2) ≅ unit quaternions: a uniform point on S³ is Haar-distributed
        a = torch.randn((*shape, 4), dtype=torch.float64, generator=generator)
        a = a / a.norm(dim=-1, keepdim=True)
        row0 = torch.stack([torch.complex(a[..., 0], a[..., 3]), torch.complex(a[..., 2], a[..., 1])], -1)
        row1 = torch.stack([torch.complex(-a[..., 2], a[..., 1]), torch.complex(a[..., 0], -a[..., 3])], -1)
        return torch.stack([row0, row1], -2).to(dtype)
    real = torch.randn((*shape, N, N, 2), dtype=torch.float64, generator=generator)
    z = torch.view_as_complex(real) / math.sqrt(2)
    q, r = torch.linalg.qr(z)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    q = q * (d / d.abs())[..., None, :]
    return _fix_det(q).to(dtype)


def project_antihermitian(m: torch.Tensor) -> torch.Tensor:
    """Traceless anti-Hermitian part ``(M − M†)/2 − tr(M − M†)/(2N)``."""
    a = (m - dagger(m)) / 2
    tr = torch.diagonal(a, dim1=-2, dim2=-1).sum(-1)
    return a - tr[..., None, None] / m.shape[-1] * _eye_like(m)


def project_hermitian(m: torch.Tensor) -> torch.Tensor:
    """Traceless Hermitian P with ``iP`` the traceless anti-Hermitian part of M."""
    return -1j * project_antihermitian(m)


def random_algebra(shape: tuple[int, ...], N: int, dtype=torch.complex128,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian traceless Hermitian matrices with density ∝ exp(−tr P²).

    P = Σ_a p_a T_a with generators normalised tr(T_a T_b) = δ_ab/2 and p_a ~ N(0, 1),
    so ``tr P² = ½ Σ p_a²``: the HMC kinetic energy is ``tr P²``.
    """
    real = torch.randn((*shape, N, N, 2), dtype=torch.float64, generator=generator)
    g = torch.view_as_complex(real)
    h = (g + dagger(g)) / 2  # GUE: off-diagonal re/im ~ N(0, 1/2), diagonal ~ N(0, 1)
    tr = torch.diagonal(h, dim1=-2, dim2=-1).sum(-1)
    h = h - tr[..., None, None] / N * torch.eye(N, dtype=h.dtype)
    return (h / math.sqrt(2)).to(dtype)


def expi(p: torch.Tensor, eps: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``exp(i eps P)`` for Hermitian P (unitary; special if P is traceless)."""
    return torch.linalg.matrix_exp(1j * eps * p)


def exp_algebra(p: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``exp(iεP)`` for *traceless* Hermitian P (an SU(N) matrix).

    Closed form for SU(2), 5× faster than ``matrix_exp``: P² = r² 1 with r² = ½ tr P², so
    exp(iεP) = cos(εr) 1 + i sin(εr)/r P.  Other N use :func:`expi`.
    """
    if p.shape[-1] != 2:
        return expi(p, eps)
    r = torch.sqrt(0.5 * (p.abs() ** 2).sum((-2, -1)))
    sinc = torch.where(r > 0, torch.sin(eps * r) / r.clamp(min=1e-300), torch.full_like(r, eps))
    eye = torch.eye(2, dtype=p.dtype, device=p.device)
    return torch.cos(eps * r)[..., None, None] * eye + (1j * sinc)[..., None, None] * p


def su_n_generators(N: int) -> torch.Tensor:
    """Generalised Gell-Mann generators ``T_a``, ``(N²−1, N, N)``, ``tr T_a T_b = δ_ab/2``."""
    gens = []
    for j in range(N):
        for k in range(j + 1, N):
            sym = torch.zeros(N, N, dtype=torch.complex128)
            sym[j, k] = sym[k, j] = 0.5
            anti = torch.zeros(N, N, dtype=torch.complex128)
            anti[j, k], anti[k, j] = -0.5j, 0.5j
            gens += [sym, anti]
    for m in range(1, N):
        diag = torch.zeros(N, dtype=torch.complex128)
        diag[:m] = 1.0
        diag[m] = -m
        gens.append(torch.diag(diag) / math.sqrt(2 * m * (m + 1)))
    return torch.stack(gens)


def reunitarize(u: torch.Tensor) -> torch.Tensor:
    """Closest SU(N) matrix in the polar sense: ``U (U†U)^{-1/2}``, det fixed to 1."""
    w, s, vh = torch.linalg.svd(u)
    return _fix_det(w @ vh)


def eigenphases(u: torch.Tensor) -> torch.Tensor:
    """Eigen-phases of SU(N) matrices, ``(..., N)`` in (−π, π], sorted ascending.

    For SU(N) the phases sum to 0 mod 2π (used by the spectral flows of arXiv:2008.05456).
    """
    ev = torch.linalg.eigvals(u)
    return torch.sort(torch.angle(ev), dim=-1).values


def is_special_unitary(u: torch.Tensor, atol: float = 1e-10) -> bool:
    """True if every matrix satisfies U†U = 1 and det U = 1 within ``atol``."""
    unit = torch.allclose(dagger(u) @ u, _eye_like(u).expand_as(u), atol=atol)
    det = torch.allclose(torch.linalg.det(u), torch.ones((), dtype=u.dtype), atol=atol)
    return bool(unit and det)
