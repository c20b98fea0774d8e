"""Tests of latticeflow.analysis.gamma (Wolff's Γ-method).

Statistical tests use fixed seeds; every tolerance is stated in units of the quantity's
own estimated error (σ) or as a relative tolerance justified beside it.
"""

import warnings

import numpy as np
import pyerrors as pe
import pytest
from scipy.signal import lfilter

from latticeflow.analysis import (GammaResult, ess, format_value_error, gamma_method, gamma_method_derived,
                                  jackknife, reweighted_mean)
from latticeflow.analysis.gamma import MIN_TAUS, ShortChainWarning


def ar1(rho, shape, seed):
    """Stationary AR(1) chains x_t = ρ x_{t−1} + √(1−ρ²) ε_t along the last axis: Γ(0) = 1,
    ρ(t) = ρ^t, exact τ_int = (1 + ρ) / (2 (1 − ρ))."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    start = rho * rng.normal(size=shape[:-1] + (1,))  # x_{-1} ~ N(0, 1): stationary at once
    return lfilter([np.sqrt(1 - rho**2)], [1, -rho], noise, axis=-1, zi=start)[0]


def exact_tau(rho):
    return (1 + rho) / (2 * (1 - rho))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(100_000,), (4, 25_000)])
def test_ar1_tau_and_error(rho, shape):
    x = ar1(rho, shape, seed=11)
    result = gamma_method(x)
    tau = exact_tau(rho)
    # τ_int within 4σ of its own error (plus a floor of 1e-3 for the ρ = 0 case, where
    # δτ_int ~ 1/√N and the window W = 1 makes the estimate ½ + ρ̂(1)).
    assert abs(result.tau_int - tau) < 4 * result.tau_int_error + 1e-3
    # Error of the mean against the exact asymptotic σ = √(2 τ_int Γ(0) / N), Γ(0) = 1.
    # Its relative statistical error is √((W + ½)/N) ≲ 3% here, so 10% is > 3σ.
    assert result.error == pytest.approx(np.sqrt(2 * tau / x.size), rel=0.10)
    assert result.n == x.size
    assert result.n_eff == pytest.approx(x.size / (2 * result.tau_int))
    assert abs(result.mean) < 4 * result.error


def test_uncorrelated_gives_half():
    result = gamma_method(ar1(0.0, (20_000,), seed=3))
    assert result.window >= 1
    assert result.tau_int == pytest.approx(0.5, abs=4 / np.sqrt(20_000))  # δρ(1) ≈ 1/√N


def test_rho_and_tau_of_w_arrays():
    result = gamma_method(ar1(0.8, (4, 20_000), seed=5))
    t = np.arange(result.rho.size)
    assert result.rho[0] == 1.0 and result.rho_error[0] == 0.0
    assert result.rho.shape == result.rho_error.shape == result.tau_int_of_w.shape
    assert result.rho.size == 2 * result.window + 1
    assert np.all(np.abs(result.rho - 0.8**t) < 4 * result.rho_error + 1e-12)
    assert result.tau_int_of_w[0] == 0.5
    assert result.tau_int_of_w[result.window] == result.tau_int
    np.testing.assert_allclose(np.diff(result.tau_int_of_w), result.rho[1:])
    with pytest.raises(ValueError):
        result.rho[1] = 0.0  # frozen all the way down
    assert result.as_dict() == {"mean": result.mean, "error": result.error,
                                "tau_int": result.tau_int, "tau_int_error": result.tau_int_error,
                                "too_short": False}


def test_fft_gamma_matches_direct_sum():
    x = ar1(0.6, (3, 57), seed=2)  # odd length, three replicas
    result = gamma_method(x)
    delta = x - x.mean()
    gamma = [np.sum(delta[:, : 57 - t] * delta[:, t:]) / (3 * (57 - t)) for t in range(result.rho.size)]
    np.testing.assert_allclose(result.rho, np.array(gamma) / gamma[0], rtol=1e-10, atol=1e-13)


def test_replica_inputs_agree():
    x = ar1(0.5, (3, 4000), seed=8)
    as_array, as_list = gamma_method(x), gamma_method(list(x))
    assert as_list.error == as_array.error and as_list.tau_int == as_array.tau_int
    ragged = gamma_method([x[0], x[1, :3000], x[2, :1000]])
    assert ragged.n == 8000
    assert ragged.tau_int == pytest.approx(1.5, abs=4 * ragged.tau_int_error)


# --- agreement with pyerrors (an independent implementation) ---------------------------
# pyerrors' τ_int is also ½ + Σ_{t=1}^{W} ρ(t) and its window is the same Wolff criterion,
# but it folds the bias correction into τ_int:
#     tau_pyerrors = tau_ours · (1 + (2W + 1)/N) / (1 + 1/N),
# and its error of the mean √(2 tau_pyerrors Γ(0) (1 + 1/N) / N) equals ours.  Its default
# S is 2.0, so S = 1.5 is passed explicitly.  For replicas pyerrors takes each fluctuation
# from its own replica's mean, Wolff (and we) from the common mean: close, not identical.

def pyerrors_obs(chains):
    if len(chains) == 1:
        obs = pe.Obs([chains[0]], ["ens"])
    else:
        obs = pe.Obs(list(chains), [f"ens|r{i}" for i in range(len(chains))])
    obs.gamma_method(S=1.5)
    return obs


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_matches_pyerrors_single_chain(rho):
    x = ar1(rho, (20_000,), seed=21)
    ours, theirs = gamma_method(x), pyerrors_obs([x])
    n, w = x.size, ours.window
    assert theirs.e_windowsize["ens"] == w
    assert theirs.dvalue == pytest.approx(ours.error, rel=1e-8)
    assert theirs.e_tauint["ens"] == pytest.approx(ours.tau_int * (1 + (2 * w + 1) / n) / (1 + 1 / n), rel=1e-8)
    assert theirs.e_tauint["ens"] == pytest.approx(ours.tau_int, rel=0.02)  # the raw numbers
    assert theirs.e_dtauint["ens"] == pytest.approx(ours.tau_int_error, rel=1e-8)
    assert theirs.value == pytest.approx(ours.mean, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("lengths", [(5000, 5000, 5000, 5000), (8000, 5000, 2000)])
def test_matches_pyerrors_replicas(lengths):
    x = ar1(0.7, (4, 8000), seed=4)
    chains = [x[i, :n] for i, n in enumerate(lengths)]
    ours, theirs = gamma_method(chains), pyerrors_obs(chains)
    assert theirs.value == pytest.approx(ours.mean, rel=1e-12, abs=1e-15)
    assert theirs.dvalue == pytest.approx(ours.error, rel=0.03)
    assert theirs.e_tauint["ens"] == pytest.approx(ours.tau_int, rel=0.03)


# --- chains too short for their autocorrelation time ----------------------------------

def test_a_chain_far_shorter_than_tau_is_flagged():
    # τ_int = 999.5, chains of 200: Wolff's window still stops early (τ̂ ≈ 30-50), but
    # 200 < 20 τ̂, so the estimate is flagged as too short
    result = gamma_method(ar1(0.999, (2, 200), seed=0))
    assert result.too_short and result.as_dict()["too_short"] is True
    assert result.tau_int < exact_tau(0.999) and 200 < MIN_TAUS * result.tau_int


def test_no_window_is_flagged_and_warned():
    rng = np.random.default_rng(2)  # frozen chains, each at its own level: ρ(t) ≈ 1 at every lag
    x = rng.normal(size=(8, 1)) + 1e-2 * rng.normal(size=(8, 200))
    with pytest.warns(ShortChainWarning, match="no window found"):
        assert gamma_method(x).too_short


def test_replicas_of_three_allow_no_lag():
    with pytest.warns(ShortChainWarning, match="allow no lag"):
        result = gamma_method(ar1(0.9, (32, 3), seed=8))
    assert result.too_short and result.window == 0


def test_long_chains_and_single_measurement_replicas_are_not_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortChainWarning)
        assert not gamma_method(ar1(0.5, (4, 5000), seed=7)).too_short
        # replicas of one measurement are independent: nothing to be short of
        assert not gamma_method(np.random.default_rng(0).normal(size=(32, 1))).too_short


# --- edge cases ------------------------------------------------------------------------

@pytest.mark.parametrize("data, value", [(np.full(100, 0.1), 0.1), (np.full((3, 20), -7.25), -7.25),
                                         ([np.ones(5), np.ones(30)], 1.0)])
def test_constant_data(data, value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division or NaN warnings either
        result = gamma_method(data)
        derived = gamma_method_derived(lambda a, b: a * b, [data, data])
    assert result.error == 0.0 and result.tau_int == 0.5 and result.tau_int_error == 0.0
    assert result.mean == value  # exactly: no rounding noise from summing
    assert result.window == 0 and np.all(np.isfinite(result.rho))
    assert derived.error == 0.0
    assert str(result).endswith("tau_int=0.5(0)")


@pytest.mark.parametrize("data", [np.arange(5.0), np.zeros((2, 4)), [np.ones(3), np.ones(2)], np.ones((2, 2, 5)), []])
def test_bad_shapes_and_short_data(data):
    with pytest.raises(ValueError):
        gamma_method(data)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_rejected(bad):
    x = np.random.default_rng(0).normal(size=100)
    x[17] = bad
    with pytest.raises(ValueError, match="NaN"):
        gamma_method(x)


def test_bad_S():
    with pytest.raises(ValueError, match="S"):
        gamma_method(np.random.default_rng(0).normal(size=100), S=0.0)


def test_str_physicists_notation():
    one = np.ones(1)
    result = GammaResult(0.697771, 0.000452, 1.234, 0.05, 4, 1000, 405.2, one, one, one)
    assert str(result) == "0.69777(45)  tau_int=1.23(5)"
    measured = gamma_method(0.69777 + 0.01 * ar1(0.5, (4, 2500), seed=1))
    assert str(measured) == (f"{format_value_error(measured.mean, measured.error)}  "
                             f"tau_int={format_value_error(measured.tau_int, measured.tau_int_error, 1)}")


# --- derived quantities ----------------------------------------------------------------

def test_derived_linear_is_exact():
    x = ar1(0.5, (2, 5000), seed=9)
    primary = gamma_method(x)
    derived = gamma_method_derived(lambda a: 3 * a + 1, [x])
    assert derived.mean == pytest.approx(3 * primary.mean + 1)
    assert derived.error == pytest.approx(3 * primary.error, rel=1e-6)
    assert derived.tau_int == pytest.approx(primary.tau_int, rel=1e-6)


def test_susceptibility_against_jackknife():
    volume = 64
    m = 2.0 + 8.0 * ar1(0.8, (4, 20_000), seed=13)  # a magnetisation-like series
    chi = lambda mean_m, mean_m2: (mean_m2 - mean_m**2) / volume
    gamma = gamma_method_derived(chi, [m, m**2])
    given = gamma_method_derived(chi, [m, m**2], grad=[-2 * m.mean() / volume, 1 / volume])
    value, error = jackknife(chi, [m, m**2], n_bins=50)  # bins of 400 ≫ τ_int ≈ 4.5
    assert gamma.mean == pytest.approx(value, rel=1e-12)
    assert given.error == pytest.approx(gamma.error, rel=1e-5)  # numerical vs exact gradient
    # Two estimates of one error, each with ~5-10% statistical error: agree within 25%.
    assert error == pytest.approx(gamma.error, rel=0.25)
    # χ of Gaussian data with variance 64 is 64/64 = 1 exactly (up to O(1/N) bias).
    assert abs(gamma.mean - 1.0) < 4 * gamma.error


def test_derived_needs_matching_primaries():
    with pytest.raises(ValueError):
        gamma_method_derived(lambda a, b: a + b, [np.zeros(50), np.zeros(40)])


# --- reweighting -----------------------------------------------------------------------

@pytest.mark.parametrize("a", [0.3, 1.0])
def test_reweighting_gaussian(a):
    # x ~ N(0, 1) with w = exp(a x) is N(a, 1) after reweighting.
    x = np.random.default_rng(17).normal(size=40_000)
    result = reweighted_mean(x, a * x)
    assert abs(result.mean - a) < 4 * result.error
    # Self-normalised importance sampling: Var = E[w²(x−a)²] / (N E[w]²) = e^{a²}(1+a²)/N.
    # The weighted fourth moments converge slowly for a = 1, hence 20%.
    assert result.error == pytest.approx(np.sqrt(np.exp(a**2) * (1 + a**2) / x.size), rel=0.20)
    assert result.tau_int == pytest.approx(0.5, abs=4 * result.tau_int_error + 0.02)
    # N_eff = Var_p(x)/error² counts the loss to the weights: N / (e^{a²}(1 + a²)), not N
    assert result.n_eff / x.size == pytest.approx(1 / (np.exp(a**2) * (1 + a**2)), rel=0.25)


def test_reweighting_is_stable_for_huge_log_weights():
    x = np.random.default_rng(2).normal(size=5000)
    plain = reweighted_mean(x, 0.5 * x)
    shifted = reweighted_mean(x, 0.5 * x + 1e3)
    negative = reweighted_mean(x, 0.5 * x - 1e3)
    assert np.isfinite(shifted.mean) and np.isfinite(shifted.error)
    assert shifted.mean == pytest.approx(plain.mean, rel=1e-9)
    assert negative.error == pytest.approx(plain.error, rel=1e-9)


def test_reweighting_with_unit_weights_is_plain_mean():
    x = ar1(0.5, (2, 5000), seed=6)
    assert reweighted_mean(x, np.zeros_like(x)).error == pytest.approx(gamma_method(x).error, rel=1e-9)


def test_ess_hand_values():
    assert ess(np.zeros(10)) == pytest.approx(1.0)
    assert ess(np.log([1.0, 1.0, 2.0])) == pytest.approx(16 / 18)  # (Σw)² / (N Σw²)
    assert ess(np.log([1.0, 1.0, 2.0]) + 1e3) == pytest.approx(16 / 18)
    assert ess(np.log([1.0, 1.0, 2.0]) - 1e3) == pytest.approx(16 / 18)
    assert ess([0.0, -np.inf, -np.inf, -np.inf]) == pytest.approx(0.25)  # zero weights allowed
    x = np.random.default_rng(0).normal(size=100_000)
    assert ess(0.5 * x) == pytest.approx(np.exp(-0.25), rel=0.02)  # E[w]² / E[w²] = e^{−a²}
    with pytest.raises(ValueError):
        ess([0.0, np.nan])
