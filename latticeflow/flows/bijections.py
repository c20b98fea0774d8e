"""Elementwise bijections: pure maps of (input, raw parameters), no networks inside.

Every bijection takes the *raw, unconstrained* outputs of a conditioner network and turns
them into a monotone map of each element, so coupling layers can swap one for another:

    y, ld = bijection.forward(x, params)    # x: (...), params: (..., n_params)
    x, ld = bijection.inverse(y, params)    # ld = log|dx/dy| = -(forward ld at x)

``logabsdet`` is elementwise (shaped like ``x``); a coupling layer sums it over the sites it
transforms. ``params`` broadcasts against ``x`` over the leading dimensions.

This module holds the contract (:class:`ElementwiseBijection`) and the maps of the real
line; the maps of the circle are in :mod:`latticeflow.flows.circle`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


__all__ = [
    "ElementwiseBijection",
    "Affine",
    "RationalQuadraticSpline",
    "rational_quadratic",
]

def _broadcast(x: torch.Tensor, params: torch.Tensor):
    batch = torch.broadcast_shapes(x.shape, params.shape[:-1])
    return x.expand(batch), params.expand(*batch, params.shape[-1])


def softmax_last(raw: torch.Tensor) -> torch.Tensor:
    """``softmax(raw, dim=-1)`` for a short last axis (bins, mixture components): written out,
    because torch's kernel vectorises along that axis and is ~5x slower when it holds 6-16
    entries (docs/performance.md)."""
    e = torch.exp(raw - raw.detach().amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax_last(raw: torch.Tensor) -> torch.Tensor:
    """``log_softmax(raw, dim=-1)`` for a short last axis (see :func:`softmax_last`)."""
    shifted = raw - raw.detach().amax(dim=-1, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))


def _knots(raw: torch.Tensor, low: float, high: float, min_size: float) -> torch.Tensor:
    """K raw logits -> K+1 increasing knots from low to high, each bin at least min_size·(high-low)."""
    bins = raw.shape[-1]
    sizes = min_size + (1 - min_size * bins) * softmax_last(raw)
    inner = low + (high - low) * torch.cumsum(sizes, dim=-1)[..., :-1]
    ends = torch.ones_like(raw[..., :1])
    # pin the ends exactly, so the spline meets its tails (or closes the circle) without rounding
    return torch.cat([low * ends, inner, high * ends], dim=-1)


def _derivatives(raw: torch.Tensor, min_derivative: float) -> torch.Tensor:
    # shifted softplus: raw = 0 gives derivative exactly 1, so zero parameters are the identity
    shift = math.log(math.expm1(1 - min_derivative))
    return min_derivative + F.softplus(raw + shift)


def rational_quadratic(x, x_knots, y_knots, derivatives, inverse: bool = False):
    r"""Monotone rational-quadratic spline through knots (Durkan et al., arXiv:1906.04032).

    In bin k, with :math:`\xi = (x - x_k)/w_k`, :math:`s_k = h_k / w_k`,
    :math:`\delta_k = d_k + d_{k+1} - 2 s_k`:

    .. math:: y = y_k + h_k \frac{s_k \xi^2 + d_k \xi(1-\xi)}{s_k + \delta_k \xi(1-\xi)},
       \qquad \frac{dy}{dx} = s_k^2 \frac{d_{k+1}\xi^2 + 2 s_k \xi(1-\xi) + d_k(1-\xi)^2}
       {[s_k + \delta_k \xi(1-\xi)]^2}.

    The inverse solves the quadratic for :math:`\xi` with the root written as
    :math:`2c / (-b - \sqrt{b^2 - 4ac})`, which has no cancellation (their eqs. 6-8).

    Arguments:
        x: points inside [x_knots[0], x_knots[-1]] (or the y range if inverse), shape (...).
        x_knots, y_knots: increasing knots, shape (..., K+1).
        derivatives: positive derivatives at the knots, shape (..., K+1).
        inverse: evaluate the inverse map instead.

    Returns:
        (out, logabsdet), both shaped like x; logabsdet of the map evaluated.
    """
    knots = y_knots if inverse else x_knots
    index = torch.searchsorted(knots.contiguous(), x.unsqueeze(-1).contiguous(), right=True) - 1
    index = index.clamp(0, knots.shape[-1] - 2)

    def at(t, shift=0):
        return t.gather(-1, index + shift).squeeze(-1)

    x0, width = at(x_knots), at(x_knots, 1) - at(x_knots)
    y0, height = at(y_knots), at(y_knots, 1) - at(y_knots)
    d0, d1 = at(derivatives), at(derivatives, 1)
    slope = height / width
    delta = d0 + d1 - 2 * slope

    if inverse:
        dy = x - y0
        a = height * (slope - d0) + dy * delta
        b = height * d0 - dy * delta
        c = -slope * dy
        disc = (b * b - 4 * a * c).clamp(min=0)
        xi = (2 * c) / (-b - disc.sqrt())
        out = x0 + xi * width
    else:
        xi = (x - x0) / width
        xo = xi * (1 - xi)
        out = y0 + height * (slope * xi**2 + d0 * xo) / (slope + delta * xo)

    xo = xi * (1 - xi)
    numerator = d1 * xi**2 + 2 * slope * xo + d0 * (1 - xi) ** 2
    logabsdet = 2 * torch.log(slope) + torch.log(numerator) - 2 * torch.log(slope + delta * xo)
    return out, (-logabsdet if inverse else logabsdet)


class ElementwiseBijection:
    """Interface of an elementwise bijection, a pure function of (input, raw parameters).

    Arguments (of ``forward`` / ``inverse``):
        x or y: tensor of shape (...).
        params: raw unconstrained parameters, shape (..., n_params), broadcast against x.

    Both return ``(out, logabsdet)`` shaped like the input, with ``logabsdet`` the log of
    the absolute derivative of the map evaluated (so inverse's is minus forward's).
    ``identity_params(shape)`` gives raw parameters for which the map is the identity;
    a conditioner whose last layer starts at zero therefore starts the flow at the identity.
    """

    n_params: int

    def forward(self, x: torch.Tensor, params: torch.Tensor):
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, params: torch.Tensor):
        raise NotImplementedError

    def identity_params(self, shape, dtype=None, device=None) -> torch.Tensor:
        """Raw parameters of shape (*shape, n_params) making the map the identity (all zeros)."""
        return torch.zeros(*tuple(shape), self.n_params, dtype=dtype, device=device)

    def reflect_params(self, params: torch.Tensor) -> torch.Tensor:
        r"""The linear involution R of raw parameters with :math:`-f(-x\,|\,θ) = f(x\,|\,Rθ)`.

        Maps of the real line only (the reflection x → −x of a scalar field); a Z₂-equivariant
        coupling symmetrises its conditioner with it, θ(c) = ½[n(c) + R n(−c)].
        """
        raise NotImplementedError(f"{type(self).__name__} has no reflection x -> -x")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "n_params")
        return f"{type(self).__name__}({args})"


class Affine(ElementwiseBijection):
    r"""Affine map :math:`y = e^{s} x + t` with a bounded log-scale (real NVP, arXiv:1605.08803;
    used for φ⁴ in arXiv:1904.12072).

    The raw log-scale is squashed as :math:`s = b \tanh(s_\text{raw} / b)`, so |s| < b and the
    map is the identity to first order in small parameters; ``scale_bound=None`` uses
    :math:`s = s_\text{raw}` unbounded.

    References:
        Dinh et al., arXiv:1605.08803; Albergo, Kanwar, Shanahan, arXiv:1904.12072.

    Arguments:
        scale_bound: bound b on |log scale|, or None.
        params: (..., 2) = (raw log-scale, shift t).

    Example:
        >>> f = Affine(scale_bound=3.0)
        >>> x, p = torch.randn(4, 8), torch.randn(4, 8, f.n_params)
        >>> y, ld = f.forward(x, p)
        >>> torch.allclose(f.inverse(y, p)[0], x, atol=1e-6)
        True
    """

    def __init__(self, scale_bound: float | None = 5.0):
        if scale_bound is not None and scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive or None, got {scale_bound}")
        self.scale_bound = scale_bound
        self.n_params = 2

    def log_scale(self, raw: torch.Tensor) -> torch.Tensor:
        if self.scale_bound is None:
            return raw
        return self.scale_bound * torch.tanh(raw / self.scale_bound)

    def forward(self, x, params):
        s, t = self.log_scale(params[..., 0]), params[..., 1]
        y = torch.exp(s) * x + t
        return y, s.expand(y.shape)

    def inverse(self, y, params):
        s, t = self.log_scale(params[..., 0]), params[..., 1]
        x = (y - t) * torch.exp(-s)
        return x, (-s).expand(x.shape)

    def reflect_params(self, params):
        """(s, t) → (s, −t): −(e^s (−x) + t) = e^s x − t."""
        return params * params.new_tensor([1.0, -1.0])


class RationalQuadraticSpline(ElementwiseBijection):
    r"""Monotone rational-quadratic spline on [-B, B] with identity tails outside.

    Raw parameters ``(w_1..w_K, h_1..h_K, d_1..d_{K-1})``: bin widths and heights are
    softmaxes rescaled to 2B with a floor ``min_bin_width·2B`` (``min_bin_height·2B``);
    interior knot derivatives are ``min_derivative + softplus(d + c)`` with c such that
    d = 0 gives 1; the derivatives at ±B are fixed to 1 so the map is C¹ across the linear
    tails. Zero parameters give the identity. The spline equations live in
    :func:`rational_quadratic`.

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural spline flows", arXiv:1906.04032.

    Arguments:
        bins: number of bins K; ``n_params = 3K - 1``.
        bound: half-width B of the spline interval.
        params: (..., 3K - 1) raw parameters.

    Example:
        >>> f = RationalQuadraticSpline(bins=8, bound=5.0)
        >>> x, p = 3 * torch.randn(10, dtype=torch.float64), torch.randn(10, f.n_params, dtype=torch.float64)
        >>> y, ld = f.forward(x, p)
        >>> torch.allclose(f.inverse(y, p)[0], x)
        True
    """

    def __init__(self, bins: int = 8, bound: float = 5.0, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        if bins < 1 or bound <= 0:
            raise ValueError(f"need bins >= 1 and bound > 0, got bins={bins}, bound={bound}")
        if max(min_bin_width, min_bin_height) * bins >= 1 or not 0 < min_derivative < 1:
            raise ValueError("minimum bin sizes times bins must be < 1 and 0 < min_derivative < 1")
        self.bins, self.bound = bins, float(bound)
        self.min_bin_width, self.min_bin_height = min_bin_width, min_bin_height
        self.min_derivative = min_derivative
        self.n_params = 3 * bins - 1

    def _apply(self, x, params, inverse):
        x, params = _broadcast(x, params)
        K, B = self.bins, self.bound
        raw_w, raw_h, raw_d = params.split([K, K, K - 1], dim=-1)
        ones = torch.ones_like(raw_d[..., :1])
        derivatives = torch.cat([ones, _derivatives(raw_d, self.min_derivative), ones], dim=-1)
        out, ld = rational_quadratic(
            x.clamp(-B, B),
            _knots(raw_w, -B, B, self.min_bin_width),
            _knots(raw_h, -B, B, self.min_bin_height),
            derivatives,
            inverse=inverse,
        )
        inside = (x >= -B) & (x <= B)
        return torch.where(inside, out, x), torch.where(inside, ld, torch.zeros_like(ld))

    def forward(self, x, params):
        return self._apply(x, params, inverse=False)

    def inverse(self, y, params):
        return self._apply(y, params, inverse=True)

    def reflect_params(self, params):
        """Reverse the order of widths, heights and interior derivatives: the knots of
        −f(−x) are the negated knots of f in reverse order, with the same slopes there
        (the fixed end slopes and the identity tails are symmetric already)."""
        K = self.bins
        parts = params.split([K, K, K - 1], dim=-1)
        return torch.cat([p.flip(-1) for p in parts], dim=-1)
