"""SU(N) gauge theory: hand values, gauge invariance, staples."""

import math

import pytest
import torch

from latticeflow.theories import SUN
from latticeflow.theories.sun import plaquettes, wilson_loop_sun


def diag_su2(alpha: float) -> torch.Tensor:
    return torch.diag(torch.tensor([complex(math.cos(alpha), math.sin(alpha)),
                                    complex(math.cos(alpha), -math.sin(alpha))]))


def test_su2_action_hand_values():
    beta, alpha = 2.3, 0.4
    theory = SUN((2, 2), beta, 2)
    u = torch.eye(2, dtype=torch.complex128).expand(1, 2, 2, 2, 2, 2).clone()
    assert theory.action(u).item() == pytest.approx(-beta * 4)
    # one link diag(e^{iα}, e^{−iα}) enters two of the four plaquettes: tr = 2 cos α there
    u[0, 0, 0, 0] = diag_su2(alpha)
    assert theory.action(u).item() == pytest.approx(-(beta / 2) * (2 * 2 * math.cos(alpha) + 2 * 2))


@pytest.mark.parametrize("N,shape", [(2, (4, 4)), (3, (3, 4)), (2, (3, 3, 3))])
def test_gauge_invariance(N, shape):
    gen = torch.Generator().manual_seed(N)
    theory = SUN(shape, 1.5, N)
    u = theory.random_field(3, generator=gen)
    v = theory.gauge_transform(u, generator=gen)
    assert not torch.allclose(u, v)
    assert torch.allclose(theory.action(v), theory.action(u), atol=1e-10)
    obs, obs_g = theory.observables(u), theory.observables(v)
    for name in theory.observable_names:
        assert torch.allclose(obs[name], obs_g[name], atol=1e-10)


@pytest.mark.parametrize("N", [2, 3])
def test_staples_reproduce_the_action(N):
    theory = SUN((3, 4), 1.0, N)
    u = theory.random_field(2)
    a = theory.staples(u)
    tr = torch.diagonal(u @ a, dim1=-2, dim2=-1).sum(-1).real  # (B, d, L, L)
    # each plaquette contains 4 links, so Σ_links Re tr(U A) = 4 Σ_P Re tr U_P
    total = torch.diagonal(plaquettes(u), dim1=-2, dim2=-1).sum(-1).real.flatten(1).sum(1)
    assert torch.allclose(tr.flatten(1).sum(1), 4 * total)


def test_wilson_loop_1x1_is_plaquette():
    theory = SUN((4, 4), 1.0, 3)
    u = theory.random_field(2)
    assert torch.allclose(wilson_loop_sun(u, 1, 1), theory.observables(u)["plaquette"])
