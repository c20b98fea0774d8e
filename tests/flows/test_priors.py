"""Tests of latticeflow/flows/priors.py against scipy and closed forms."""

import doctest
import math

import pytest
import torch
from scipy import stats

from latticeflow.flows import priors
from latticeflow.flows.priors import NormalPrior, UniformAnglePrior


def test_normal_log_prob_matches_scipy():
    prior = NormalPrior((4, 6), dtype=torch.float64)
    z = prior.sample(7, generator=torch.Generator().manual_seed(0))
    assert z.shape == (7, 4, 6) and z.dtype == torch.float64
    expected = stats.norm.logpdf(z.numpy()).sum(axis=(1, 2))
    assert torch.allclose(prior.log_prob(z), torch.from_numpy(expected), rtol=0, atol=1e-12)


def test_normal_extra_batch_dims_and_seed():
    prior = NormalPrior(5, dtype=torch.float64)
    a = prior.sample(3, generator=torch.Generator().manual_seed(1))
    b = prior.sample(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (3, 5)
    assert prior.log_prob(torch.zeros(2, 3, 5, dtype=torch.float64)).shape == (2, 3)
    assert prior.log_prob(torch.zeros(5, dtype=torch.float64)).item() == pytest.approx(-2.5 * math.log(2 * math.pi))


def test_normal_moments():
    # seed 2, 20000 draws: mean and variance within 5 σ
    z = NormalPrior((100,), dtype=torch.float64).sample(200, generator=torch.Generator().manual_seed(2))
    assert abs(z.mean().item()) < 5 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / z.numel())


def test_uniform_angle_prior():
    prior = UniformAnglePrior((2, 4, 4), dtype=torch.float64)
    theta = prior.sample(50, generator=torch.Generator().manual_seed(3))
    assert theta.shape == (50, 2, 4, 4) and theta.dtype == torch.float64
    assert ((theta >= 0) & (theta < 2 * math.pi)).all()
    lp = prior.log_prob(theta)
    assert lp.shape == (50,)
    assert torch.allclose(lp, torch.full((50,), 32 * stats.uniform(0, 2 * math.pi).logpdf(1.0), dtype=torch.float64))


def test_default_dtype_and_shape_check():
    assert NormalPrior((3,)).sample(2).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError):
        NormalPrior((3, 3)).log_prob(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        UniformAnglePrior((2, 0))


def test_docstring_examples():
    assert doctest.testmod(priors, raise_on_error=False).failed == 0
