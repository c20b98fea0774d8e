"""Exact results against independent routes: brute force, enumeration, Monte Carlo, limits."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from scipy.special import iv

from latticeflow.groups import haar_sun
from latticeflow.theories import SUN, U1, Phi4
from latticeflow.theories import exact


def test_reference_values_of_the_tutorial_point():
    assert exact.u1_plaquette(2.0, 64) == pytest.approx(0.697775, abs=5e-7)
    assert exact.u1_topological_susceptibility(2.0, 64) == pytest.approx(0.0193640, abs=5e-8)


@pytest.mark.parametrize("beta", [0.5, 2.0, 6.0])
def test_infinite_volume_limits(beta):
    assert exact.u1_plaquette(beta, 10**6) == pytest.approx(iv(1, beta) / iv(0, beta), rel=1e-9)
    assert exact.su2_plaquette_torus(beta, 10**6) == pytest.approx(iv(2, beta) / iv(1, beta), rel=1e-9)
    assert exact.sun_plaquette_infinite_volume(beta, 2) == pytest.approx(iv(2, beta) / iv(1, beta), rel=1e-9)
    # area law at infinite volume: W(A) = <cos θ_P>^A
    w = exact.u1_wilson_loop(beta, 10**6, 3)
    assert w == pytest.approx((iv(1, beta) / iv(0, beta)) ** 3, rel=1e-6)


def test_u1_plaquette_by_brute_force_integration_on_2x2():
    """Integrate e^{−S} over the 5 link angles left after fixing a maximal tree to 0.

    The integrand is smooth and periodic, so the trapezoid rule on M points per angle
    converges exponentially; M = 14 gives ~1e-9 at β = 1.
    """
    beta, m = 1.0, 14
    grid = torch.arange(m, dtype=torch.float64) * 2 * math.pi / m
    free = torch.cartesian_prod(*[grid] * 5)  # (M^5, 5)
    theta = torch.zeros(free.shape[0], 2, 2, 2, dtype=torch.float64)
    # tree: θ_0(0,0), θ_1(0,0), θ_1(1,0) fixed to 0
    theta[:, 0, 1, 0], theta[:, 0, 0, 1], theta[:, 0, 1, 1] = free[:, 0], free[:, 1], free[:, 2]
    theta[:, 1, 0, 1], theta[:, 1, 1, 1] = free[:, 3], free[:, 4]
    theory = U1((2, 2), beta)
    s = theory.action(theta)
    w = torch.exp(-(s - s.min()))
    plaq = theory.observables(theta)["plaquette"]
    brute = float((w * plaq).sum() / w.sum())
    assert brute == pytest.approx(exact.u1_plaquette(beta, 4), abs=1e-8)
    w12 = float((w * theory.observables(theta)["wilson_1x2"]).sum() / w.sum())
    assert w12 == pytest.approx(exact.u1_wilson_loop(beta, 4, 2), abs=1e-8)


@pytest.mark.parametrize("beta,volume", [(1.0, 4), (2.0, 9), (3.0, 16)])
def test_u1_charge_by_numerical_convolution(beta, volume):
    """P(Q) ∝ density at 2πQ of the sum of V angles with weight e^{β cos φ}: convolve on a grid."""
    m = 4096
    phi = -math.pi + (np.arange(m) + 0.5) * 2 * math.pi / m
    h = 2 * math.pi / m
    one = np.exp(beta * (np.cos(phi) - 1)) * h
    total = one.copy()
    for _ in range(volume - 1):
        total = np.clip(fftconvolve(total, one), 0, None)
    # total[k] is the mass of the sum in the bin centred at −Vπ + (k + V/2) h
    centres = -volume * math.pi + (np.arange(total.size) + volume / 2) * h
    qmax = volume // 2
    p = np.array([np.interp(2 * math.pi * q, centres, total) for q in range(-qmax, qmax + 1)])
    q = np.arange(-qmax, qmax + 1)
    q2 = float((q**2 * p).sum() / p.sum())
    assert q2 == pytest.approx(exact.u1_q_squared(beta, volume), rel=2e-4)
    dist = exact.u1_charge_distribution(beta, volume, qmax)
    assert dist[1] == pytest.approx(p[qmax + 1] / p.sum(), rel=2e-3)


def test_charge_distribution_matches_q_squared():
    dist = exact.u1_charge_distribution(2.0, 64, qmax=12)
    q2 = sum(k * k * p for k, p in dist.items())
    assert q2 == pytest.approx(exact.u1_q_squared(2.0, 64), rel=1e-6)


def test_su2_torus_by_haar_importance_sampling():
    """2×2 torus, β = 1: ⟨½ tr U_P⟩ = E_Haar[P e^{−S}] / E_Haar[e^{−S}] over all 8 links; 4σ."""
    gen = torch.Generator().manual_seed(11)
    theory = SUN((2, 2), 1.0, 2)
    n = 60_000
    u = haar_sun((n, 2, 2, 2), 2, generator=gen)
    log_w = -theory.action(u)
    w = torch.exp(log_w - log_w.max())
    p = log_w / (1.0 * 4)  # in 2D, ½ Re tr U_P averaged over the V = 4 plaquettes is −S/(βV)
    mean = float((w * p).sum() / w.sum())
    # delta-method error of a ratio estimator
    wn = w / w.mean()
    err = float(torch.sqrt(((wn * (p - mean)) ** 2).mean() / n))
    assert abs(mean - exact.su2_plaquette_torus(1.0, 4)) < 4 * err


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_su3_one_plaquette_integral_by_haar_sampling(beta):
    gen = torch.Generator().manual_seed(12)
    n = 200_000
    u = haar_sun((n,), 3, generator=gen)
    re_tr = torch.diagonal(u, dim1=-2, dim2=-1).sum(-1).real / 3
    w = torch.exp(beta * (re_tr - 1))
    mean = float((w * re_tr).sum() / w.sum())
    wn = w / w.mean()
    err = float(torch.sqrt(((wn * (re_tr - mean)) ** 2).mean() / n))
    assert abs(mean - exact.sun_plaquette_infinite_volume(beta, 3)) < 4 * err


def test_free_field_against_matrix_inverse():
    shape, m2 = (3, 4), 0.7
    v = 12
    coords = [(i, j) for i in range(3) for j in range(4)]
    index = {c: k for k, c in enumerate(coords)}
    k = np.zeros((v, v))  # S = φᵀ K φ
    for (i, j), a in index.items():
        k[a, a] += m2
        for di, dj in ((1, 0), (0, 1)):
            b = index[((i + di) % 3, (j + dj) % 4)]
            # (φ_b − φ_a)² = φ_a² + φ_b² − 2 φ_a φ_b
            k[a, a] += 1
            k[b, b] += 1
            k[a, b] -= 1
            k[b, a] -= 1
    cov = np.linalg.inv(2 * k)
    g = exact.free_propagator(shape, m2)
    for (i, j), b in index.items():
        assert g[i, j] == pytest.approx(cov[0, b], rel=1e-12)
    assert g.sum() == pytest.approx(exact.free_chi2(m2), rel=1e-12)
    log_z = v / 2 * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(2 * k)[1]
    assert exact.free_log_z(shape, m2) == pytest.approx(log_z, rel=1e-12)


def test_theory_exact_tables():
    assert set(U1((8, 8), 2.0).exact()) >= {"plaquette", "chi_Q", "topological_charge"}
    assert U1((4, 4, 4), 2.0).exact() == {}
    assert "plaquette" in SUN((4, 4), 2.0, 2).exact()
    assert "plaquette" in SUN((4, 4), 2.0, 3).exact()
    assert Phi4((8, 8), -4.0, 8.0).exact() == {}
    assert Phi4((8, 8), 1.0, 0.0).exact()["chi2"] == pytest.approx(0.5)


def test_bad_couplings_raise():
    with pytest.raises(ValueError):
        exact.u1_plaquette(0.0, 4)
    with pytest.raises(ValueError):
        exact.free_propagator((4, 4), -1.0)


def _weyl_coefficient(beta, lam, n_grid=96):
    """c_λ = ∫ dU χ_λ(U) e^{(β/3) Re tr U} over SU(3) by Weyl's formula: the trapezoid rule on
    the two free eigen-phases (spectrally accurate for this periodic integrand), with
    |Δ|² χ_λ = conj(Δ) det[e^{i l_j θ_k}], l_j = λ_j + 3 − j, θ_3 = −θ_1 − θ_2."""
    t = 2 * np.pi * np.arange(n_grid) / n_grid
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    theta = np.stack([t1, t2, -t1 - t2], -1)  # (n, n, 3)
    def det(powers):
        return np.linalg.det(np.exp(1j * np.asarray(powers)[:, None] * theta[..., None, :]))
    l = np.array(lam) + 3 - np.arange(1, 4)
    integrand = np.conj(det([2, 1, 0])) * det(l) * np.exp(beta / 3 * np.cos(theta).sum(-1))
    return float(integrand.mean().real / 6)  # 1/N! with dθ/(2π) per phase


@pytest.mark.parametrize("beta", [1.0, 4.0, 9.0])
def test_su3_character_coefficients_against_weyl_integration(beta):
    coeffs = {lam: (d, c) for lam, d, c, _ in exact.sun_character_coefficients(beta, 3, lmax=3)}
    scale = math.exp(-beta)  # the coefficients are returned scaled by e^{−β}
    for lam in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0), (3, 0, 0), (3, 2, 0)]:
        assert coeffs[lam][1] == pytest.approx(_weyl_coefficient(beta, lam) * scale, rel=1e-9, abs=1e-14)
    # dimensions of the irreps (p, q) = (λ_1 − λ_2, λ_2): 1, 3, 3̄, 8, 10, 15
    assert [coeffs[lam][0] for lam in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0), (3, 0, 0), (3, 2, 0)]] == \
        [1, 3, 3, 8, 10, 15]


def test_sun_torus_formula_reduces_to_su2_and_to_infinite_volume():
    for beta in (0.5, 2.0, 5.0):
        assert exact.sun_plaquette_torus(beta, 2, 16) == pytest.approx(exact.su2_plaquette_torus(beta, 16), rel=1e-12)
        assert exact.sun_plaquette_torus(beta, 3, 10**5) == pytest.approx(
            exact.sun_plaquette_infinite_volume(beta, 3), rel=1e-9)
    # on a small torus the global constraint is visible
    assert exact.sun_plaquette_torus(6.0, 3, 4) - exact.sun_plaquette_infinite_volume(6.0, 3) > 5e-3


def test_u1_torus_references_hold_at_large_beta():
    """The character sums' cut-off grows with β/V and the quadrature of J(ν) follows the
    peak of width 1/√β: at β = 1e6 the plaquette is 1 − (1 − 1/V)/(2β) + O(β⁻²) (it was
    0.9999995006 with a fixed cut-off), χ_Q is never negative, and P(Q), whose quadrature
    does not reach that far, is omitted rather than wrong."""
    from latticeflow.theories import U1

    for beta in (1e3, 1e6):
        t = U1((4, 4), beta=beta)
        e = t.exact()
        assert abs((1 - e["plaquette"]) - (1 - 1 / 16) / (2 * beta)) < 2 / beta**2
        assert e["chi_Q"] >= 0 and e["chi_Q"] < 1e-12
        assert t.exact_distributions() == {}
    assert U1((8, 8), beta=2.0).exact_distributions()  # still there where it holds
    assert U1((4, 4), beta=50.0).exact()["chi_Q"] >= 0
