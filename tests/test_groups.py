"""U(1)/SU(N) helpers: Haar measure, algebra, exponentials, eigen-phases."""

import math

import pytest
import torch

from latticeflow import groups as g


@pytest.mark.parametrize("N", [2, 3])
def test_haar_is_special_unitary_and_centred(N):
    gen = torch.Generator().manual_seed(0)
    u = g.haar_sun((20000,), N, generator=gen)
    assert g.is_special_unitary(u)
    # Haar: <tr U> = 0 and <|tr U|^2> = 1; the standard error of the mean of |tr U|^2 is ~1/sqrt(n)
    tr = torch.diagonal(u, dim1=-2, dim2=-1).sum(-1)
    assert abs(tr.mean()) < 4 / math.sqrt(20000)
    assert abs((tr.abs() ** 2).mean() - 1) < 4 * 1.0 / math.sqrt(20000) * math.sqrt(2)


@pytest.mark.parametrize("N", [2, 3])
def test_algebra_projection_and_exponential(N):
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(5, N, N, dtype=torch.complex128, generator=gen)
    a = g.project_antihermitian(m)
    assert torch.allclose(a, -g.dagger(a))
    assert torch.allclose(torch.diagonal(a, dim1=-2, dim2=-1).sum(-1), torch.zeros(5, dtype=a.dtype))
    assert torch.allclose(g.project_antihermitian(a), a)  # a projection
    p = g.random_algebra((5,), N, generator=gen)
    assert g.is_special_unitary(g.expi(p, 0.7))


def test_random_algebra_normalisation():
    # p_a ~ N(0,1) with tr(T_a T_b) = δ/2: <tr P^2> = (N^2 - 1)/2
    p = g.random_algebra((40000,), 3, generator=torch.Generator().manual_seed(2))
    tr = torch.einsum("bij,bji->b", p, p).real
    assert abs(tr.mean() - 4.0) < 4 * tr.std() / math.sqrt(40000)


def test_reunitarize_and_eigenphases():
    gen = torch.Generator().manual_seed(3)
    u = g.haar_sun((10,), 3, generator=gen)
    noisy = u + 1e-6 * torch.randn(10, 3, 3, dtype=torch.complex128, generator=gen)
    assert not g.is_special_unitary(noisy)
    fixed = g.reunitarize(noisy)
    assert g.is_special_unitary(fixed) and torch.allclose(fixed, u, atol=1e-5)
    phases = g.eigenphases(u)
    assert torch.allclose(torch.exp(1j * phases.sum(-1)), torch.ones(10, dtype=torch.complex128))
    assert torch.all(phases[:, 1:] >= phases[:, :-1])


def test_angles():
    t = torch.tensor([-0.1, 2 * math.pi + 0.2, math.pi, -math.pi])
    assert torch.allclose(g.wrap_angle(t), torch.tensor([2 * math.pi - 0.1, 0.2, math.pi, math.pi]))
    assert torch.allclose(g.principal_angle(t), torch.tensor([-0.1, 0.2, math.pi, math.pi]))
