"""Tests of latticeflow.analysis.resampling (binning and jackknife); fixed seeds."""

import numpy as np
import pytest
from scipy.signal import lfilter

from latticeflow.analysis import bin_data, gamma_method, jackknife


def test_bin_data_values_and_shapes():
    np.testing.assert_array_equal(bin_data(np.arange(10.0), 3), [1.0, 4.0, 7.0])  # 9 dropped
    x = np.arange(24.0).reshape(2, 12)
    np.testing.assert_array_equal(bin_data(x, 4), [[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    np.testing.assert_array_equal(bin_data(x, 1), x)
    for bad in (0, 13):
        with pytest.raises(ValueError):
            bin_data(x, bad)


def test_jackknife_of_mean_is_standard_error():
    x = np.random.default_rng(0).normal(size=500)
    value, error = jackknife(lambda m: m, [x], n_bins=500)
    assert value == pytest.approx(x.mean())
    assert error == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=1e-10)


def test_jackknife_binned_ar1_error():
    rho, n = 0.9, 100_000
    rng = np.random.default_rng(3)
    x = lfilter([np.sqrt(1 - rho**2)], [1, -rho], rng.normal(size=n), zi=[rho * rng.normal()])[0]
    value, error = jackknife(lambda m: m, [x], n_bins=100)  # bins of 1000 ≫ τ_int = 9.5
    exact = np.sqrt((1 + rho) / (1 - rho) / n)
    # 100 blocks: the error has a ~7% statistical error, and binning bias ~ τ/bin ~ 1%: 25%.
    assert error == pytest.approx(exact, rel=0.25)
    assert error == pytest.approx(gamma_method(x).error, rel=0.25)


def test_jackknife_chains_and_nonlinear_function():
    x = np.random.default_rng(1).normal(loc=2.0, size=(4, 1000))
    value, error = jackknife(lambda a, b: b / a, [x, x**2], n_bins=20)  # 80 blocks in all
    assert value == pytest.approx(np.mean(x**2) / np.mean(x))
    # ⟨x²⟩/⟨x⟩ = (1 + 4)/2 = 2.5 for N(2, 1); the delta-method error sets the scale.
    assert abs(value - 2.5) < 4 * error
    assert 0 < error < 0.05


@pytest.mark.parametrize("data, n_bins", [([np.zeros(10), np.zeros(9)], 2), ([np.zeros(10)], 1),
                                          ([np.zeros(10)], 11), ([np.array([0.0, np.nan])], 2)])
def test_jackknife_rejects_bad_input(data, n_bins):
    with pytest.raises(ValueError):
        jackknife(lambda *m: m[0], data, n_bins)
