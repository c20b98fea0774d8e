"""Accept/reject autocorrelation estimate (arXiv:1904.12072 Eqs. 15-16) on known chains."""

import numpy as np
import pytest

from latticeflow.analysis.acceptance import rejection_autocorrelation, tau_int_from_acceptance


@pytest.mark.parametrize("p", [0.3, 0.5, 0.9])
def test_bernoulli_acceptance(p):
    # i.i.d. acceptance with probability p: ρ(t) = (1 − p)^t, τ = ½ + (1 − p)/p
    acc = np.random.default_rng(0).random((4, 50000)) < p
    rho = rejection_autocorrelation(acc, t_max=5)
    assert np.allclose(rho, (1 - p) ** np.arange(6), atol=0.01)
    assert tau_int_from_acceptance(acc) == pytest.approx(0.5 + (1 - p) / p, rel=0.05)


def test_by_hand():
    acc = np.array([True, False, False, True, False, True])
    # t = 1: pairs (i, i+1) with i+1 rejected: i = 0, 1, 3 of 5 → 3/5
    # t = 2: i+1, i+2 both rejected: i = 0 only, of 4 → 1/4
    assert rejection_autocorrelation(acc, t_max=3)[:3] == pytest.approx([1, 0.6, 0.25])
    assert tau_int_from_acceptance(np.ones(100, bool)) == 0.5
