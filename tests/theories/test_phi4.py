"""φ⁴ action and observables against hand-computed values."""

import pytest
import torch

from latticeflow.theories import Phi4
from latticeflow.theories.phi4 import two_point, zero_momentum_correlator


def test_action_hand_value_2x2():
    # φ = [[1, 2], [3, 4]]: kinetic = 2·(2² + 2²) + 2·(1² + 1²) = 20, Σφ² = 30, Σφ⁴ = 354
    phi = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    theory = Phi4((2, 2), m2=-4.0, lam=8.0)
    assert theory.action(phi).item() == pytest.approx(20 - 4 * 30 + 8 * 354)


def test_action_3x3_against_naive_loop():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(2, 3, 3, dtype=torch.float64, generator=gen)
    m2, lam = 1.3, 0.7
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                p = phi[b, i, j]
                kin = (phi[b, (i + 1) % 3, j] - p) ** 2 + (phi[b, i, (j + 1) % 3] - p) ** 2
                expected[b] += kin + m2 * p**2 + lam * p**4
    assert torch.allclose(Phi4((3, 3), m2, lam).action(phi), expected)


def test_force_is_minus_gradient():
    theory = Phi4((4, 3, 2), m2=-1.0, lam=0.5)
    phi = torch.randn(3, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(theory.action(phi).sum(), phi)
    assert torch.allclose(theory.force(phi.detach()), -grad)


def test_observables_and_z2():
    theory = Phi4((4, 4), m2=-4.0, lam=8.0)
    phi = torch.randn(5, 4, 4, dtype=torch.float64)
    obs, flipped = theory.observables(phi), theory.observables(-phi)
    assert torch.allclose(obs["magnetization"], phi.sum((1, 2)))
    assert torch.allclose(flipped["magnetization"], -obs["magnetization"])
    for name in ("abs_magnetization", "chi2", "ising_energy", "phi2"):
        assert torch.allclose(flipped[name], obs[name])
    assert torch.allclose(theory.action(-phi), theory.action(phi))
    c = two_point(phi)
    assert torch.allclose(c.sum((1, 2)), obs["chi2"])
    assert torch.allclose(c[:, 0, 0], obs["phi2"])
    assert torch.allclose((c[:, 1, 0] + c[:, 0, 1]) / 2, obs["ising_energy"])
    assert torch.allclose(zero_momentum_correlator(phi).sum(1), obs["chi2"])
