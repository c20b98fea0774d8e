"""Tests of latticeflow/mcmc/independence.py: the accept/reject rule on a batch."""

import doctest
import math

import numpy as np
import pytest
import torch

from latticeflow.mcmc import independence
from latticeflow.mcmc.independence import independence_acceptance


def test_equal_weights_accept_everything():
    assert independence_acceptance(np.full(50, -3.7), rng=1) == 1.0
    assert independence_acceptance(torch.full((50,), 12.0), rng=1) == 1.0


def test_huge_drops_are_rejected_and_rises_accepted():
    log_w = np.array([0.0] + [-800.0] * 99)
    assert independence_acceptance(log_w, rng=0) == 0.0
    log_w = np.array([-800.0] + [0.0] * 99)
    assert independence_acceptance(log_w, rng=0) == 1.0


def test_acceptance_matches_two_state_chain():
    # i.i.d. proposals with w = 1 or w = p = e^-1, each with probability ½.  The chain's
    # stationary law is the target, π(high) = 1/(1 + p); from "high" a low proposal is
    # accepted with probability p, everything else always.  Seeds 3 (data) and 4 (chain);
    # tolerance 5σ with σ doubled for the chain's correlations.
    rng = np.random.default_rng(3)
    log_w = np.where(rng.random(200_001) < 0.5, 0.0, -1.0)
    p = math.exp(-1.0)
    pi_high = 1.0 / (1.0 + p)
    expected = pi_high * (0.5 + 0.5 * p) + (1 - pi_high) * 1.0
    got = independence_acceptance(log_w, rng=4)
    sigma = 2 * math.sqrt(expected * (1 - expected) / 200_000)
    assert abs(got - expected) < 5 * sigma


def test_nan_is_weight_zero_and_inputs_validated():
    assert independence_acceptance([0.0, float("nan"), float("nan")], rng=0) == 0.0
    assert independence_acceptance([float("nan"), 0.0, 0.0], rng=0) == 1.0
    with pytest.raises(ValueError):
        independence_acceptance([0.0])


def test_deterministic_given_seed():
    log_w = np.random.default_rng(0).normal(size=300)
    assert independence_acceptance(log_w, rng=7) == independence_acceptance(log_w, rng=7)


def test_docstring_examples():
    assert doctest.testmod(independence, raise_on_error=False).failed == 0
