"""Elementwise bijections of the circle, for U(1) link and plaquette angles.

They follow the contract of :class:`latticeflow.flows.bijections.ElementwiseBijection`
(raw conditioner outputs in, ``(y, log|dy/dx|)`` out, zero parameters the identity) and the
U(1) convention of the package: any real input is taken mod 2π and every output lies in
[0, 2π).
"""

from __future__ import annotations

import math

import torch

from ..groups import wrap_angle
from .bijections import ElementwiseBijection, _broadcast, _derivatives, _knots, log_softmax_last, rational_quadratic

__all__ = ["CircularSpline", "NCPMixture", "ncp"]

TWO_PI = 2 * math.pi


class CircularSpline(ElementwiseBijection):
    r"""Circular rational-quadratic spline: a diffeomorphism of the circle [0, 2π).

    K bins on [0, 2π] with softmax widths and heights (floors as in
    :class:`RationalQuadraticSpline`) and K knot derivatives, the one at 0 being reused
    at 2π, so the map and its derivative are continuous across 2π. With ``rotation`` one
    extra raw parameter φ is added after the spline: :math:`y = (\mathrm{RQ}(x) + φ) \bmod 2π`.
    Inputs are taken mod 2π; outputs lie in [0, 2π). Zero parameters give the identity.

    References:
        Rezende et al., "Normalizing flows on tori and spheres", arXiv:2002.02428;
        Durkan et al., arXiv:1906.04032.

    Arguments:
        bins: number of bins K; ``n_params = 3K (+1 with rotation)``.
        rotation: learn an offset added mod 2π.
        params: (..., n_params) = (widths K, heights K, derivatives K[, rotation]).

    Example:
        >>> f = CircularSpline(bins=8)
        >>> theta = 2 * math.pi * torch.rand(4, 8, 8, dtype=torch.float64)
        >>> p = torch.randn(4, 8, 8, f.n_params, dtype=torch.float64)
        >>> y, ld = f.forward(theta, p)
        >>> bool(((y >= 0) & (y < 2 * math.pi)).all()), torch.allclose(f.inverse(y, p)[0], theta)
        (True, True)
    """

    def __init__(self, bins: int = 8, rotation: bool = True, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        if bins < 1:
            raise ValueError(f"need bins >= 1, got {bins}")
        if max(min_bin_width, min_bin_height) * bins >= 1 or not 0 < min_derivative < 1:
            raise ValueError("minimum bin sizes times bins must be < 1 and 0 < min_derivative < 1")
        self.bins, self.rotation = bins, rotation
        self.min_bin_width, self.min_bin_height = min_bin_width, min_bin_height
        self.min_derivative = min_derivative
        self.n_params = 3 * bins + int(rotation)

    def _spline(self, x, params, inverse):
        K = self.bins
        raw_w, raw_h, raw_d = params[..., : 3 * K].split(K, dim=-1)
        d = _derivatives(raw_d, self.min_derivative)
        return rational_quadratic(
            x,
            _knots(raw_w, 0.0, TWO_PI, self.min_bin_width),
            _knots(raw_h, 0.0, TWO_PI, self.min_bin_height),
            torch.cat([d, d[..., :1]], dim=-1),  # shared derivative at 0 ≡ 2π
            inverse=inverse,
        )

    def _rotation(self, params):
        return params[..., -1] if self.rotation else 0.0

    def forward(self, x, params):
        x, params = _broadcast(x, params)
        y, ld = self._spline(wrap_angle(x), params, inverse=False)
        return wrap_angle(y + self._rotation(params)), ld

    def inverse(self, y, params):
        y, params = _broadcast(y, params)
        x, ld = self._spline(wrap_angle(y - self._rotation(params)), params, inverse=True)
        return wrap_angle(x), ld


def ncp(theta: torch.Tensor, log_scale: torch.Tensor):
    r"""Non-compact projection :math:`g_s(θ) = 2\arctan(s\tan(θ/2))` on [0, 2π), and log g'.

    For θ in [0, 2π) the half angle lies in [0, π) where sin ≥ 0, so
    :math:`g = 2\,\mathrm{atan2}(s\sin(θ/2), \cos(θ/2))` is the branch of the paper's map that
    is continuous and increasing from g(0) = 0 through g(π) = π to g(2π) = 2π, with no tan
    blowing up at θ = π. The derivative
    :math:`g'(θ) = s / (\cos^2(θ/2) + s^2 \sin^2(θ/2))` is bounded between min(s, 1/s) and
    max(s, 1/s) everywhere.

    Arguments:
        theta: angles in [0, 2π), shape (...).
        log_scale: log s, broadcast against theta.

    Returns:
        (g, log g'), broadcast shape.
    """
    half = theta / 2
    s = torch.exp(log_scale)
    sin, cos = torch.sin(half), torch.cos(half)
    g = 2 * torch.atan2(s * sin, cos)
    log_dg = log_scale - torch.log(cos**2 + (s * sin) ** 2)
    return g, log_dg


class NCPMixture(ElementwiseBijection):
    r"""Convex mixture of non-compact projections of the circle, plus an optional rotation.

    :math:`y = \big(\sum_k w_k\, g_{s_k}(θ) + φ\big) \bmod 2π` with ``θ = x mod 2π``,
    :math:`g_s` from :func:`ncp`, weights :math:`w = \mathrm{softmax}(a)` and scales
    :math:`s_k = e^{\sigma_k}`. Each :math:`g_{s}` fixes 0 and π and maps [0, 2π) onto itself
    increasingly, so the mixture does too; the rotation φ (a raw parameter, used mod 2π)
    moves the fixed points. The log-derivative is
    :math:`\log \sum_k w_k g_{s_k}'(θ)` (a logsumexp).

    The inverse has no closed form: it is found by vectorised bisection on [0, 2π]
    (``bisection_steps`` halvings, by default enough to reach the dtype's resolution: 57 in
    float64, 28 in float32), followed by one Newton step carrying the gradient with respect
    to y and the parameters (implicit-function theorem), so the inverse is differentiable.
    Its logabsdet is minus the forward one at the returned x.

    References:
        Rezende et al., arXiv:2002.02428; Kanwar et al., "Equivariant flow-based sampling for
        lattice gauge theory", arXiv:2003.06413.

    Arguments:
        components: number K of projections; ``n_params = 2K (+1 with rotation)``.
        rotation: learn an offset added mod 2π.
        bisection_steps: number of bisection halvings, or None for the dtype default.
        params: (..., n_params) = (mixture logits a, log-scales σ[, rotation φ]).

    Example:
        >>> f = NCPMixture(components=6)
        >>> theta = 2 * math.pi * torch.rand(4, 2, 8, 8, dtype=torch.float64)
        >>> p = torch.randn(4, 2, 8, 8, f.n_params, dtype=torch.float64)
        >>> y, ld = f.forward(theta, p)
        >>> x, ld_inv = f.inverse(y, p)
        >>> torch.allclose(x, theta), torch.allclose(ld + ld_inv, torch.zeros_like(ld))
        (True, True)
    """

    def __init__(self, components: int = 6, rotation: bool = True, bisection_steps: int | None = None):
        if components < 1:
            raise ValueError(f"need components >= 1, got {components}")
        self.components, self.rotation = components, rotation
        self.bisection_steps = bisection_steps
        self.n_params = 2 * components + int(rotation)

    def _mixture(self, theta, params):
        K = self.components
        log_w = log_softmax_last(params[..., :K])
        g, log_dg = ncp(theta.unsqueeze(-1), params[..., K : 2 * K])
        return (log_w.exp() * g).sum(-1), torch.logsumexp(log_w + log_dg, dim=-1)

    def _rotation(self, params):
        return params[..., -1] if self.rotation else 0.0

    def forward(self, x, params):
        x, params = _broadcast(x, params)
        y, ld = self._mixture(wrap_angle(x), params)
        return wrap_angle(y + self._rotation(params)), ld

    def _steps(self, dtype) -> int:
        if self.bisection_steps is not None:
            return self.bisection_steps
        return math.ceil(math.log2(TWO_PI / torch.finfo(dtype).eps)) + 2

    def inverse(self, y, params):
        y, params = _broadcast(y, params)
        u = wrap_angle(y - self._rotation(params))
        with torch.no_grad():
            low, high = torch.zeros_like(u), torch.full_like(u, TWO_PI)
            for _ in range(self._steps(u.dtype)):
                mid = (low + high) / 2
                below = self._mixture(mid, params)[0] < u
                low, high = torch.where(below, mid, low), torch.where(below, high, mid)
            x0 = (low + high) / 2
        f0, ld0 = self._mixture(x0, params)
        x = wrap_angle(x0 - (f0 - u) / ld0.detach().exp())
        return x, -self._mixture(x, params)[1]
