"""Tests of latticeflow/flows/bijections.py: inverses, log-derivatives against autograd,
monotonicity, circle topology, identity parameters, dtypes. Float64, fixed seeds."""

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latticeflow.flows import bijections, circle
from latticeflow.flows.bijections import Affine, RationalQuadraticSpline
from latticeflow.flows.circle import CircularSpline, NCPMixture

TWO_PI = 2 * math.pi
F64 = torch.float64

REAL = [Affine(), Affine(scale_bound=None), RationalQuadraticSpline(), RationalQuadraticSpline(bins=3, bound=2.0)]
CIRCLE = [CircularSpline(), CircularSpline(bins=5, rotation=False), NCPMixture(), NCPMixture(components=3, rotation=False)]
ALL = REAL + CIRCLE


def ids(f):
    return repr(f)


def is_circle(f):
    return isinstance(f, (CircularSpline, NCPMixture))


def circ_dist(a, b):
    """Signed distance on the circle, in [-π, π)."""
    return torch.remainder(a - b + math.pi, TWO_PI) - math.pi


def inputs(f, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    if is_circle(f):
        special = torch.tensor([0.0, 1e-12, 1e-6, math.pi - 1e-9, math.pi, math.pi + 1e-9,
                                TWO_PI - 1e-6, TWO_PI - 1e-12, 1.0, 3.0], dtype=F64)
        x = TWO_PI * torch.rand(n, generator=g, dtype=F64)
    else:
        special = torch.tensor([-100.0, -5.0001, -5.0, -2.0, 0.0, 2.0, 4.9999, 5.0, 5.0001, 100.0], dtype=F64)
        x = 4 * torch.randn(n, generator=g, dtype=F64)  # ~20 % in the tails of the [-5, 5] spline
    return torch.cat([x, special])


def params_for(f, x, scale=1.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*x.shape, f.n_params, generator=g, dtype=F64)


@pytest.mark.parametrize("f", ALL, ids=ids)
def test_inverse_undoes_forward(f):
    x = inputs(f)
    p = params_for(f, x)
    y, ld = f.forward(x, p)
    x2, ld_inv = f.inverse(y, p)
    assert y.shape == x.shape == ld.shape == x2.shape == ld_inv.shape
    err = circ_dist(x2, x) if is_circle(f) else x2 - x
    assert err.abs().max() < 1e-10
    assert (ld + ld_inv).abs().max() < 1e-10


@pytest.mark.parametrize("f", ALL, ids=ids)
def test_forward_undoes_inverse(f):
    y = inputs(f, seed=3)
    p = params_for(f, y, seed=4)
    x, _ = f.inverse(y, p)
    y2, _ = f.forward(x, p)
    err = circ_dist(y2, y) if is_circle(f) else y2 - y
    assert err.abs().max() < 1e-10


@pytest.mark.parametrize("f", ALL, ids=ids)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_logabsdet_is_log_autograd_derivative(f, direction):
    # elementwise maps: dy_i/dx_i is the gradient of sum(y) with respect to x_i
    x = inputs(f, seed=5)
    if is_circle(f):  # stay off the exact fixed points where the wrap can jump by 2π
        x = x.clamp(1e-9, TWO_PI - 1e-9)
    x = x.requires_grad_()
    p = params_for(f, x, seed=6)
    y, ld = getattr(f, direction)(x, p)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert (grad > 0).all()
    assert (torch.log(grad) - ld).abs().max() < 1e-8


@pytest.mark.parametrize("f", ALL, ids=ids)
def test_monotone(f):
    p = params_for(f, torch.zeros(()), seed=7)  # one parameter set shared by all points
    if is_circle(f):
        x = torch.linspace(0, TWO_PI, 2001, dtype=F64)[:-1]
        y, _ = f.forward(x, p)
        steps = circ_dist(torch.roll(y, -1), y)  # closed loop around the circle
        assert (steps > 0).all()
        assert steps.sum() == pytest.approx(TWO_PI, abs=1e-10)  # winding number one
    else:
        x = torch.linspace(-20, 20, 4001, dtype=F64)
        y, _ = f.forward(x, p)
        assert (torch.diff(y) > 0).all()


@pytest.mark.parametrize("f", ALL, ids=ids)
def test_identity_params(f):
    x = inputs(f, seed=8)
    p = f.identity_params(x.shape, dtype=F64)
    assert p.shape == (*x.shape, f.n_params)
    for direction in ("forward", "inverse"):
        y, ld = getattr(f, direction)(x, p)
        err = circ_dist(y, x) if is_circle(f) else y - x
        assert err.abs().max() < 1e-12
        assert ld.abs().max() < 1e-12


@pytest.mark.parametrize("f", CIRCLE, ids=ids)
def test_circle_range_periodicity_continuity(f):
    g = torch.Generator().manual_seed(9)
    x = 50 * torch.randn(500, generator=g, dtype=F64)  # any real angle
    p = params_for(f, x, seed=10)
    y, ld = f.forward(x, p)
    assert ((y >= 0) & (y < TWO_PI)).all()
    y_shift, ld_shift = f.forward(x + TWO_PI, p)
    assert circ_dist(y_shift, y).abs().max() < 1e-10
    assert (ld_shift - ld).abs().max() < 1e-9
    # continuity across 2π ≡ 0: of the map and of its derivative
    eps = 1e-10
    p1 = p[:1]
    y_lo, ld_lo = f.forward(torch.tensor([TWO_PI - eps], dtype=F64), p1)
    y_hi, ld_hi = f.forward(torch.tensor([eps], dtype=F64), p1)
    y_0, _ = f.forward(torch.tensor([0.0], dtype=F64), p1)
    assert circ_dist(y_lo, y_0).abs().item() < 1e4 * eps
    assert circ_dist(y_hi, y_0).abs().item() < 1e4 * eps
    assert (ld_lo - ld_hi).abs().item() < 1e-5
    # the inverse lands in [0, 2π) too
    xi, _ = f.inverse(50 * torch.randn(500, generator=g, dtype=F64), p)
    assert ((xi >= 0) & (xi < TWO_PI)).all()


@pytest.mark.parametrize("f", CIRCLE[1::2], ids=ids)
def test_circle_maps_without_rotation_fix_zero(f):
    p = params_for(f, torch.zeros(()), seed=11)
    y, _ = f.forward(torch.tensor([0.0], dtype=F64), p)
    assert y.item() == pytest.approx(0.0, abs=1e-12)


def test_rotation_is_an_offset():
    f = CircularSpline(bins=4)
    x = TWO_PI * torch.rand(50, dtype=F64)
    p = params_for(f, x, seed=12)
    p0 = p.clone()
    p0[..., -1] = 0
    y, ld = f.forward(x, p)
    y0, ld0 = f.forward(x, p0)
    assert circ_dist(y, y0 + p[..., -1]).abs().max() < 1e-12
    assert torch.equal(ld, ld0)


def test_spline_is_c1_at_the_tails():
    f = RationalQuadraticSpline(bins=6, bound=3.0)
    p = params_for(f, torch.zeros(()), seed=13)
    x = torch.tensor([-3.0 - 1e-9, -3.0 + 1e-9, 3.0 - 1e-9, 3.0 + 1e-9], dtype=F64)
    y, ld = f.forward(x, p)
    assert (y - x).abs().max() < 1e-8  # the spline meets the identity tails at ±B
    assert ld.abs().max() < 1e-7  # with derivative 1


def test_ncp_matches_paper_formula():
    # g(θ) = 2 arctan(s tan(θ/2)) on (-π, π), read on [0, 2π)
    theta = torch.linspace(-3.1, 3.1, 101, dtype=F64)
    log_s = torch.linspace(-2, 2, 101, dtype=F64)
    expected = 2 * torch.atan(torch.exp(log_s) * torch.tan(theta / 2))
    g, log_dg = circle.ncp(torch.remainder(theta, TWO_PI), log_s)
    assert circ_dist(g, expected).abs().max() < 1e-12
    s, t = torch.exp(log_s), torch.tan(theta / 2)
    dg = s * (1 + t**2) / (1 + (s * t) ** 2)
    assert (log_dg - torch.log(dg)).abs().max() < 1e-12


def test_ncp_inverse_is_differentiable():
    f = NCPMixture(components=2)
    g = torch.Generator().manual_seed(14)
    y = (TWO_PI * torch.rand(3, generator=g, dtype=F64)).clamp(0.5, 5.5).requires_grad_()
    p = torch.randn(3, f.n_params, generator=g, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(lambda y, p: f.inverse(y, p), (y, p))


def test_spline_gradcheck():
    f = RationalQuadraticSpline(bins=3, bound=2.0)
    g = torch.Generator().manual_seed(15)
    x = torch.tensor([-1.5, -0.3, 0.7, 1.9], dtype=F64, requires_grad=True)
    p = torch.randn(4, f.n_params, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, p: f.forward(x, p), (x, p))
    assert torch.autograd.gradcheck(lambda x, p: f.inverse(x, p), (x, p))


@pytest.mark.parametrize("f", ALL, ids=ids)
def test_params_broadcast(f):
    x = inputs(f).reshape(2, 5, -1)[..., :40]
    p = params_for(f, torch.zeros(5, 1), seed=16)  # (5, 1, n_params) against (2, 5, 40)
    y, ld = f.forward(x, p)
    y_full, ld_full = f.forward(x, p.expand(2, 5, 40, -1))
    assert y.shape == ld.shape == x.shape
    assert torch.equal(y, y_full) and torch.equal(ld, ld_full)


@pytest.mark.parametrize("f", ALL, ids=ids)
@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_float32(f, scale):
    x = inputs(f).float()
    p = params_for(f, x, scale=scale).float()
    y, ld = f.forward(x, p)
    x2, ld_inv = f.inverse(y, p)
    assert y.dtype == ld.dtype == x2.dtype == ld_inv.dtype == torch.float32
    assert torch.isfinite(y).all() and torch.isfinite(ld).all() and torch.isfinite(ld_inv).all()
    err = circ_dist(x2, x) if is_circle(f) else (x2 - x) / (1 + x.abs())
    # x is recovered to float32 resolution in y: the error in x is amplified by 1/(dy/dx)
    assert (err.abs() * ld.exp()).max() < 1e-5
    if scale == 0.5:  # well-conditioned parameters, as at the start of training; the worst
        assert err.abs().max() < 2e-5  # sample sits where dy/dx ≈ 0.02: half an ulp of y is 1.4e-5 in x
        assert (ld + ld_inv).abs().max() < 1e-4


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        RationalQuadraticSpline(bins=8, min_bin_width=0.2)
    with pytest.raises(ValueError):
        Affine(scale_bound=0.0)
    with pytest.raises(ValueError):
        NCPMixture(components=0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    x=st.floats(-8.0, 8.0),
    raw=st.lists(st.floats(-6.0, 6.0), min_size=3 * 4 - 1, max_size=3 * 4 - 1),
)
def test_spline_inverse_property(x, raw):
    f = RationalQuadraticSpline(bins=4, bound=5.0)
    xt = torch.tensor([x], dtype=F64)
    p = torch.tensor([raw], dtype=F64)
    y, ld = f.forward(xt, p)
    x2, ld_inv = f.inverse(y, p)
    assert abs(x2.item() - x) < 1e-9 * (1 + abs(x))
    assert abs(ld.item() + ld_inv.item()) < 1e-9


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    theta=st.floats(-20.0, 20.0),
    raw=st.lists(st.floats(-4.0, 4.0), min_size=3 * 3 + 1, max_size=3 * 3 + 1),
)
def test_circular_spline_inverse_property(theta, raw):
    f = CircularSpline(bins=3)
    xt = torch.tensor([theta], dtype=F64)
    y, ld = f.forward(xt, torch.tensor([raw], dtype=F64))
    x2, ld_inv = f.inverse(y, torch.tensor([raw], dtype=F64))
    assert abs(circ_dist(x2, xt).item()) < 1e-9
    assert abs(ld.item() + ld_inv.item()) < 1e-9


def test_docstring_examples():
    assert doctest.testmod(bijections, raise_on_error=False).failed == 0
    assert doctest.testmod(circle, raise_on_error=False).failed == 0


@pytest.mark.parametrize("f", REAL, ids=ids)
def test_reflect_params_conjugates_by_x_to_minus_x(f):
    # -f(-x | θ) = f(x | Rθ), equal log-derivatives, and R is an involution
    x = inputs(f, seed=11)
    p = params_for(f, x, seed=12)
    r = f.reflect_params(p)
    y, ld = f.forward(x, r)
    y_ref, ld_ref = f.forward(-x, p)
    assert (y + y_ref).abs().max() < 1e-12
    assert (ld - ld_ref).abs().max() < 1e-12
    assert torch.equal(f.reflect_params(r), p)


@pytest.mark.parametrize("f", CIRCLE, ids=ids)
def test_circle_maps_have_no_reflection(f):
    with pytest.raises(NotImplementedError):
        f.reflect_params(torch.zeros(f.n_params))
