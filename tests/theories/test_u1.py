"""U(1) gauge theory: hand values, gauge invariance, integer topological charge."""

import math

import pytest
import torch

from latticeflow.theories import U1
from latticeflow.theories.u1 import (gauge_transform, plaquette_angles, topological_charge,
                                     wilson_loop)


def constant_field(L: int, q: int) -> torch.Tensor:
    """Links whose every plaquette angle is 2πq/V (mod 2π): charge q when |q| < V/2."""
    v = L * L
    x0 = torch.arange(L, dtype=torch.float64)[:, None].expand(L, L)
    x1 = torch.arange(L, dtype=torch.float64)[None, :].expand(L, L)
    theta = torch.zeros(1, 2, L, L, dtype=torch.float64)
    theta[0, 1] = 2 * math.pi * q * x0 / v
    theta[0, 0, L - 1] = -2 * math.pi * q * x1[L - 1] / L
    return theta


@pytest.mark.parametrize("L", [2, 3])
def test_action_hand_values(L):
    beta = 1.7
    theory = U1((L, L), beta)
    theta = torch.zeros(1, 2, L, L, dtype=torch.float64)
    assert theory.action(theta).item() == pytest.approx(-beta * L * L)
    # one link at π/2 enters two plaquettes (once + and once −): both have cos = 0
    theta[0, 0, 0, 0] = math.pi / 2
    assert theory.action(theta).item() == pytest.approx(-beta * (L * L - 2))


@pytest.mark.parametrize("L,q", [(3, 1), (4, 1), (4, -2), (6, 3)])
def test_charge_of_constant_field(L, q):
    theta = constant_field(L, q)
    p = plaquette_angles(theta)
    assert torch.allclose(torch.cos(p), torch.full_like(p, math.cos(2 * math.pi * q / L**2)))
    assert topological_charge(theta).item() == pytest.approx(q, abs=1e-12)
    # an a×b loop encloses ab plaquettes of angle 2πq/V
    assert wilson_loop(theta, 2, 1).item() == pytest.approx(math.cos(4 * math.pi * q / L**2))


def test_q_integer_and_gauge_invariance():
    gen = torch.Generator().manual_seed(0)
    theory = U1((6, 6), 2.0)
    theta = theory.random_field(20, generator=gen)
    q = topological_charge(theta)
    assert torch.allclose(q, q.round(), atol=1e-9)
    transformed = theory.gauge_transform(theta, generator=gen)
    assert not torch.allclose(transformed, theta)
    assert torch.allclose(theory.action(transformed), theory.action(theta), atol=1e-10)
    obs, obs_g = theory.observables(theta), theory.observables(transformed)
    for name in theory.observable_names:
        assert torch.allclose(obs[name], obs_g[name], atol=1e-10), name


def test_gauge_invariance_3d():
    theory = U1((3, 4, 3), 1.0)
    theta = theory.random_field(4)
    alpha = torch.rand(4, 3, 4, 3, dtype=torch.float64) * 6.3
    assert torch.allclose(theory.action(gauge_transform(theta, alpha)), theory.action(theta))
    assert "topological_charge" not in theory.observables(theta)


def test_wilson_1x1_is_plaquette_and_force_is_minus_gradient():
    theory = U1((4, 4), 1.3)
    theta = theory.random_field(3).requires_grad_(True)
    assert torch.allclose(wilson_loop(theta, 1, 1), theory.observables(theta)["plaquette"])
    (grad,) = torch.autograd.grad(theory.action(theta).sum(), theta)
    assert torch.allclose(theory.force(theta.detach()), -grad)
    theory3 = U1((3, 3, 4), 0.9)
    theta3 = theory3.random_field(2).requires_grad_(True)
    (grad3,) = torch.autograd.grad(theory3.action(theta3).sum(), theta3)
    assert torch.allclose(theory3.force(theta3.detach()), -grad3)
