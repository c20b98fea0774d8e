"""Tests of latticeflow/flows/momentum_scaling.py: the momentum-space scaling layer."""

import doctest

import pytest
import torch

from latticeflow.config import FlowConfig
from latticeflow.flows import momentum_scaling
from latticeflow.flows import build_flow
from latticeflow.flows.momentum_scaling import MomentumScaling
from latticeflow.theories import Phi4

F64 = torch.float64



def random_layer(dim=2, seed=0):
    torch.manual_seed(seed)
    layer = MomentumScaling(dim).double()
    with torch.no_grad():
        layer.coefficients.copy_(0.5 * torch.randn(len(momentum_scaling.BASIS)))
    return layer


@pytest.mark.parametrize("shape", [(4, 4), (6,), (2, 4, 2)])
def test_logdet_is_the_exact_jacobian_and_inverse_inverts(shape):
    layer = random_layer(len(shape))
    x = torch.randn(2, *shape, dtype=F64)
    y, logdet = layer(x)
    n = x[0].numel()
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, *shape))[0].flatten(), x[0].flatten())
    assert jac.shape == (n, n)
    assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[0]) and torch.equal(logdet[0], logdet[1])
    assert torch.allclose(jac, jac.T)  # symmetric: s(p) = s(-p), real output
    back, logdet_inv = layer.inverse(y)
    assert torch.allclose(back, x) and torch.allclose(logdet_inv, -logdet)


def test_translation_and_z2_equivariance():
    layer = random_layer()
    x = torch.randn(3, 6, 6, dtype=F64)
    y = layer(x)[0]
    assert torch.allclose(layer(torch.roll(x, (1, 2), (1, 2)))[0], torch.roll(y, (1, 2), (1, 2)))
    assert torch.allclose(layer(-x)[0], -y)


def test_identity_at_start_and_zero_mode_scaling():
    layer = MomentumScaling(2).double()
    x = torch.randn(2, 4, 4, dtype=F64)
    assert torch.allclose(layer(x)[0], x) and torch.equal(layer(x)[1], torch.zeros(2, dtype=F64))
    with torch.no_grad():
        layer.coefficients[0] = torch.log(torch.tensor(3.0))  # "const": s(p) = 3 for every p
    assert torch.allclose(layer(x)[0], 3 * x)


def test_built_into_the_phi4_flow_first_and_size_agnostic():
    cfg = FlowConfig(layers=2, bijection="spline", hidden=(4,), bins=4, momentum_scaling=True)
    flow = build_flow(Phi4((4, 4), m2=-4.0, lam=8.0), cfg).double()
    assert isinstance(flow.layers[0], MomentumScaling) and len(flow.layers) == 3
    with torch.no_grad():
        flow.layers[0].coefficients.copy_(torch.tensor([0.1, -0.5, 0.2, 0.3]))
    big = build_flow(Phi4((6, 6), m2=-4.0, lam=8.0), cfg).double()
    big.load_state_dict(flow.state_dict())
    x, log_q = big.sample(4)
    assert torch.allclose(big.log_prob(x), log_q)


def test_doctests():
    assert doctest.testmod(momentum_scaling).failed == 0
