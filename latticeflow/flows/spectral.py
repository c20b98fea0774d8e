r"""Spectral maps of SU(N) matrices (N = 2, 3): conjugation-equivariant bijections that move
the eigenvalues and keep the eigenvectors (Boyda et al., arXiv:2008.05456, Sec. III).

A matrix ``P = V diag(e^{iθ}) V†`` is mapped to ``h(P) = V diag(e^{iθ'}) V†``, where θ' is
a function of the eigen-phases θ only (and of conditioner parameters that are invariant).
Then ``h(g P g†) = g h(P) g†`` for every g: the map is conjugation-equivariant, which is what
a gauge-equivariant coupling needs (the loops it acts on transform by conjugation).

The canonical cell
------------------
The eigen-phases are defined up to permutation and each up to 2π.  Every conjugacy class
has exactly one representative in the *Weyl alcove*

    θ_1 ≥ θ_2 ≥ … ≥ θ_N,   θ_1 − θ_N ≤ 2π,   Σ_k θ_k = 0,

(:func:`alcove_phases`: take the phases in (−π, π], their sum is 2πs with s an integer;
move the |s| largest (s > 0) or smallest (s < 0) down or up by 2π; sort).  The alcove is
the simplex of *gaps* ``a_k = θ_k − θ_{k+1}`` (k = 1 … N−1) and ``a_0 = 2π − (θ_1 − θ_N)``,
all ≥ 0 and summing to 2π: the arcs between neighbouring eigenvalues on the circle.  The
map from gaps back to phases is linear, θ_1 = Σ_k (N−k) a_k / N, θ_{k+1} = θ_k − a_k.

Stick breaking takes the simplex to the unit cube: ``c_k = a_k / (2π − Σ_{j<k} a_j)``, so
``a_k = 2π c_k Π_{j<k} (1 − c_j)`` with Jacobian ``|∂a/∂c| = (2π)^{N−1} Π_j (1 − c_j)^{N−1−j}``
(j = 1 … N−1; for N = 3 this is 4π² (1 − c_1)).  Each face of the cube that is not
collapsed is a face of the simplex (two eigenvalues meet), so a map of the cube that keeps
its faces, here monotone splines of [0, 1] fixing 0 and 1, keeps degenerate classes
degenerate and the identity (c = 0) fixed.

The maps
--------
SU(2) (one cell coordinate, c_1 = φ/π for eigenvalues e^{±iφ}): ``c_1' = f_1(c_1)``.
SU(3) (two): ``c_1' = f_1(c_1)``, then ``c_2' = f_2(c_2)`` with raw spline parameters that
depend on c_1' as well, ``p_2 = Σ_b B_b(c_1') p_{2,b}`` over the Fourier basis
``B = (1, cos πc, sin πc, cos 2πc, sin 2πc)`` (autoregressive, so the map is not a product
of 1D maps and can follow the joint density of the two gaps).  f are rational-quadratic
splines on [0, 1] with K bins and K + 1 knot derivatives.  The Jacobian of the cube map is
triangular: ``|∂c'/∂c| = f_1'(c_1) f_2'(c_2)``.  Zero raw parameters give the identity.

Jacobian with respect to Haar measure
-------------------------------------
Weyl's integration formula writes the Haar measure in eigen-coordinates as
``dμ(P) ∝ |Δ(θ)|² d^{N−1}θ dμ(V)``, with ``|Δ(θ)|² = Π_{i<j} |e^{iθ_i} − e^{iθ_j}|² =
Π_{i<j} 4 sin²((θ_i − θ_j)/2)``; the map fixes V, so a density q with respect to Haar
measure becomes ``q'(h(P)) = q(P) / J`` with

    log J = log|∂θ'/∂θ| + log|Δ(θ')|² − log|Δ(θ)|²,
    log|∂θ'/∂θ| = Σ_k log f_k'(c_k) + Σ_j (N−1−j) [log(1 − c_j') − log(1 − c_j)]

(the constant Jacobians of θ ↔ a and the (2π)^{N−1} cancel between θ and θ').  This is the
``logdet`` the maps return; the tests check it against the autograd Jacobian of the map in
the real coordinates ``P = exp(iω_a T_a) P_0`` (in which Haar measure is flat at ω = 0).

Numerics: the eigen-decomposition (``torch.linalg.eig``) and everything after it run in
complex128 / float64 whatever the flow's dtype; results are cast back.  Its gradient is
finite away from degenerate eigenvalues, which have probability zero (the Haar density
vanishes there like the squared gap).  The log-det itself is computed from the cell
coordinates, where the gaps are products of c's and (1 − c)'s, never differences of
phases, so it keeps its limit at degenerate loops (cold starts, unit and centre
elements; :func:`log_jacobian_terms`).  At a triple eigenvalue of SU(3) the Jacobian has
no unique limit (it depends on the direction of approach), so log q is discontinuous at
the centre elements — a set of measure zero that flow samples never hit.
"""

from __future__ import annotations

import math

import torch

from .bijections import _derivatives, _knots, rational_quadratic

__all__ = ["alcove_phases", "phases_to_cell", "cell_to_phases", "log_vandermonde", "SpectralSpline"]

TWO_PI = 2 * math.pi
_TINY = 1e-300


def alcove_phases(p: torch.Tensor):
    """Eigen-decomposition ``P = V diag(e^{iθ}) V⁻¹`` with θ in the Weyl alcove.

    Arguments:
        p: unitary matrices ``(..., N, N)`` with det 1 (complex128).

    Returns:
        ``(theta, V, V_inv)``: phases ``(..., N)`` with θ_1 ≥ … ≥ θ_N, θ_1 − θ_N ≤ 2π,
        Σθ = 0 (up to rounding), and the eigenvectors as columns of ``V`` in the same order.
    """
    lam, vecs = torch.linalg.eig(p)
    theta = lam.angle()
    n = p.shape[-1]
    s = torch.round(theta.detach().sum(-1, keepdim=True) / TWO_PI)
    rank = torch.argsort(torch.argsort(theta.detach(), dim=-1, descending=True), dim=-1)
    theta = theta - TWO_PI * (rank < s).to(theta.dtype) + TWO_PI * (rank >= n + s).to(theta.dtype)
    order = torch.argsort(theta.detach(), dim=-1, descending=True)
    theta = theta.gather(-1, order)
    vecs = vecs.gather(-1, order.unsqueeze(-2).expand(vecs.shape))
    return theta, vecs, torch.linalg.inv(vecs)


def _gaps(theta: torch.Tensor) -> torch.Tensor:
    """``(a_1 … a_{N−1})``: the gaps between consecutive alcove phases, ``(..., N−1)``."""
    return (theta[..., :-1] - theta[..., 1:]).clamp(min=0.0)


def phases_to_cell(theta: torch.Tensor) -> torch.Tensor:
    """Stick-breaking cell coordinates ``c`` in [0, 1]^{N−1} of alcove phases ``(..., N)``."""
    a = _gaps(theta)
    left = TWO_PI - torch.cumsum(a, -1) + a  # 2π − Σ_{j<k} a_j
    return (a / left.clamp(min=_TINY)).clamp(0.0, 1.0)


def cell_to_phases(c: torch.Tensor) -> torch.Tensor:
    """Alcove phases ``(..., N)`` of cell coordinates ``c`` ``(..., N−1)``."""
    stick = torch.cumprod(torch.cat([torch.ones_like(c[..., :1]), 1 - c[..., :-1]], -1), -1)
    a = TWO_PI * c * stick
    n = c.shape[-1] + 1
    weights = torch.arange(n - 1, 0, -1, dtype=c.dtype, device=c.device)  # N − k
    first = (a * weights).sum(-1, keepdim=True) / n
    return torch.cat([first, first - torch.cumsum(a, -1)], -1)


def log_vandermonde(theta: torch.Tensor) -> torch.Tensor:
    """``log |Δ(θ)|² = Σ_{i<j} log 4 sin²((θ_i − θ_j)/2)`` for alcove phases ``(..., N)``."""
    i, j = torch.triu_indices(theta.shape[-1], theta.shape[-1], 1)
    half = (theta[..., i] - theta[..., j]) / 2  # in [0, π] inside the alcove
    return 2 * torch.log((2 * torch.sin(half)).clamp(min=_TINY)).sum(-1)


#: the arcs between the eigenvalues of each pair (i < j), as sets of gaps (a_0 = index 0):
#: the inner arc θ_i − θ_j and its complement; sin of half of either is the same
_PAIRS = {2: [((1,), (0,))], 3: [((1,), (0, 2)), ((2,), (0, 1)), ((1, 2), (0,))]}


def _log_gaps(c: torch.Tensor) -> torch.Tensor:
    """``(log a_0, log a_1, …, log a_{N−1})`` from cell coordinates, without cancellation:
    ``a_k = 2π c_k Π_{j<k}(1 − c_j)``, ``a_0 = 2π Π_j (1 − c_j)``; −inf for a zero gap."""
    log_rest = torch.log1p(-c)
    prefix = torch.cat([torch.zeros_like(c[..., :1]), torch.cumsum(log_rest, -1)], -1)
    return math.log(TWO_PI) + torch.cat([prefix[..., -1:], torch.log(c) + prefix[..., :-1]], -1)


def log_jacobian_terms(c: torch.Tensor, c_new: torch.Tensor, ld_parts: torch.Tensor) -> torch.Tensor:
    r"""The part of log J beyond the splines: ``Σ_j (N−1−j) log[(1−c'_j)/(1−c_j)] +
    log|Δ(θ')|² − log|Δ(θ)|²``, computed from the cell coordinates so that tiny and zero
    gaps (degenerate eigenvalues: unit or centre elements, cold starts) give the right limit.

    Every pair's arc is a sum of non-negative gaps (never a difference of phases), and
    ``2 sin(y/2) = y · sinc(y/2)`` splits its log into ``log y`` and a smooth part.  Where a
    gap is exactly zero on the input side it is zero on the output side too (the splines fix
    0 and 1), and ``log(a'_k/a_k)`` is replaced by its limit, built from the splines'
    log-derivatives ``ld_parts`` ``(..., N−1)`` at the input; an arc of several zero gaps
    (a triple eigenvalue, SU(3) centre elements) has a direction-dependent limit and gets
    the mean of its gaps' limits, the same value forward and inverse with opposite sign.
    """
    zero, one = c == 0, c == 1
    r_c = torch.where(zero, ld_parts, torch.log(c_new) - torch.log(c))
    r_rest = torch.where(one, ld_parts, torch.log1p(-c_new) - torch.log1p(-c))
    n1 = c.shape[-1]
    powers = torch.arange(n1 - 1, -1, -1, dtype=c.dtype, device=c.device)  # N−1−j
    stick = (powers * r_rest).sum(-1)
    # limits of log(a'_k / a_k): k = 0 and k = 1 … N−1
    prefix = torch.cat([torch.zeros_like(c[..., :1]), torch.cumsum(r_rest, -1)], -1)
    gap_limits = torch.cat([prefix[..., -1:], r_c + prefix[..., :-1]], -1)
    log_a, log_a_new = _log_gaps(c), _log_gaps(c_new)
    weyl = torch.zeros_like(stick)
    for inner, outer in _PAIRS[n1 + 1]:
        sides = []
        for arc in (inner, outer):
            idx = list(arc)
            log_y = torch.logsumexp(log_a[..., idx], -1)
            log_y_new = torch.logsumexp(log_a_new[..., idx], -1)
            ratio = torch.where(torch.isneginf(log_y), gap_limits[..., idx].mean(-1), log_y_new - log_y)
            smooth = (torch.log(torch.sinc(torch.exp(log_y_new) / TWO_PI))
                      - torch.log(torch.sinc(torch.exp(log_y) / TWO_PI)))
            sides.append((log_y, ratio + smooth))
        use_inner = sides[0][0] <= math.log(math.pi)  # the shorter arc: sinc stays ≥ 2/π
        weyl = weyl + 2 * torch.where(use_inner, sides[0][1], sides[1][1])
    return stick + weyl


class _UnitSpline:
    """Rational-quadratic spline of [0, 1] onto itself: K widths, K heights, K + 1
    derivatives (raw); zero parameters are the identity."""

    def __init__(self, bins: int, min_bin: float = 1e-3, min_derivative: float = 1e-3):
        self.bins, self.min_bin, self.min_derivative = bins, min_bin, min_derivative
        self.n_params = 3 * bins + 1

    def __call__(self, x, params, inverse=False):
        K = self.bins
        raw_w, raw_h, raw_d = params.split([K, K, K + 1], dim=-1)
        return rational_quadratic(x.clamp(0.0, 1.0), _knots(raw_w, 0.0, 1.0, self.min_bin),
                                  _knots(raw_h, 0.0, 1.0, self.min_bin),
                                  _derivatives(raw_d, self.min_derivative), inverse=inverse)


def _fourier_basis(c: torch.Tensor) -> torch.Tensor:
    """``(1, cos πc, sin πc, cos 2πc, sin 2πc)``, ``(..., 5)``."""
    t = math.pi * c
    return torch.stack([torch.ones_like(c), torch.cos(t), torch.sin(t), torch.cos(2 * t), torch.sin(2 * t)], -1)


class SpectralSpline:
    r"""Conjugation-equivariant spline map of SU(N) matrices (N = 2, 3) on the Weyl alcove.

    See the module docstring for the cell, the maps and the Haar-measure Jacobian.

    References:
        Boyda et al., "Sampling using SU(N) gauge equivariant flows", arXiv:2008.05456;
        Durkan et al., arXiv:1906.04032.

    Arguments:
        N: 2 or 3.
        bins: spline bins K.  ``n_params = 3K + 1`` (N = 2) or ``6 (3K + 1)`` (N = 3).

    ``forward(p, params) -> (h(p), logdet)`` and ``inverse(p, params)``, with ``p``
    ``(..., N, N)`` and ``params`` ``(..., n_params)``; ``logdet`` ``(...)`` is the log
    Jacobian with respect to Haar measure (the inverse's is minus the forward one).

    Example:
        >>> from latticeflow.groups import haar_sun, is_special_unitary
        >>> f = SpectralSpline(N=3, bins=4)
        >>> p = haar_sun((5,), 3)
        >>> raw = torch.randn(5, f.n_params, dtype=torch.float64)
        >>> q, ld = f.forward(p, raw)
        >>> back, ld_inv = f.inverse(q, raw)
        >>> is_special_unitary(q), torch.allclose(back, p), torch.allclose(ld + ld_inv, torch.zeros(5, dtype=torch.float64))
        (True, True, True)
    """

    n_basis = 5

    def __init__(self, N: int, bins: int = 8):
        if N not in (2, 3):
            raise ValueError(f"spectral maps are implemented for SU(2) and SU(3), got N={N}")
        if bins < 1:
            raise ValueError(f"need bins >= 1, got {bins}")
        self.N, self.bins = int(N), int(bins)
        self.spline = _UnitSpline(self.bins)
        m = self.spline.n_params
        self.n_params = m if self.N == 2 else m * (1 + self.n_basis)

    def __repr__(self) -> str:
        return f"SpectralSpline(N={self.N}, bins={self.bins})"

    def _map_cell(self, c, params, inverse):
        """Cube map c → c' (or back), and log|dc'_k/dc_k| per coordinate ``(..., N−1)``."""
        m = self.spline.n_params
        first, ld1 = self.spline(c[..., 0], params[..., :m], inverse)
        if self.N == 2:
            return first.unsqueeze(-1), ld1.unsqueeze(-1)
        c1_new = c[..., 0] if inverse else first  # c_1' conditions f_2 in both directions
        raw2 = params[..., m:].unflatten(-1, (self.n_basis, m))
        raw2 = (_fourier_basis(c1_new).unsqueeze(-1) * raw2).sum(-2)
        second, ld2 = self.spline(c[..., 1], raw2, inverse)
        return torch.stack([first, second], -1), torch.stack([ld1, ld2], -1)

    def _apply(self, p, params, inverse, decomposition=None):
        dtype, real_dtype = p.dtype, params.dtype
        theta, vecs, vecs_inv = decomposition or alcove_phases(p.to(torch.complex128))
        params = params.to(torch.float64)
        c = phases_to_cell(theta)
        c_new, ld_parts = self._map_cell(c, params, inverse)
        theta_new = cell_to_phases(c_new)
        ld = ld_parts.sum(-1) + log_jacobian_terms(c, c_new, ld_parts)
        rotation = torch.polar(torch.ones_like(theta), theta_new - theta)
        r = (vecs * rotation.unsqueeze(-2)) @ vecs_inv  # V diag(e^{i(θ'−θ)}) V⁻¹
        return r.to(dtype), ld.to(real_dtype)

    def rotation(self, p: torch.Tensor, params: torch.Tensor, inverse: bool = False, decomposition=None):
        """``(R, logdet)`` with ``h(P) = R P``, ``R = V diag(e^{i(θ'−θ)}) V⁻¹`` (or the same
        for the inverse map).  Coupling layers move links by R: ``U ← R U``, never by
        ``h(P) P†``, which would square the rounding error of P's unitarity every layer.
        ``decomposition``: P's :func:`alcove_phases`, if already computed (complex128)."""
        return self._apply(p, params, inverse, decomposition)

    def forward(self, p: torch.Tensor, params: torch.Tensor):
        r, ld = self._apply(p, params, inverse=False)
        return r @ p, ld

    def inverse(self, p: torch.Tensor, params: torch.Tensor):
        r, ld = self._apply(p, params, inverse=True)
        return r @ p, ld
