"""Tests of latticeflow.mcmc.hmc.

Deterministic tests (forces, reversibility, ΔH scaling at fixed (x, p)) use float64
tolerances.  Statistical tests state their seed and compare with exact results within
4σ, σ from the Γ-method with the chains as replicas (``gamma_method`` on
``(n_chains, n_trajectories)``) or, for independent exact samples, the plain standard error.

What is true of ΔH for a 2nd-order integrator at fixed trajectory length τ = nε, and tested:
- per trajectory (fixed start), ΔH = c(x, p) ε² + O(ε⁴): |ΔH| ∝ ε² for *both* leapfrog and
  Omelyan minimum-norm; the minimum-norm coefficient is several times smaller;
- at equilibrium ⟨ΔH⟩ = ½⟨ΔH²⟩ + … ∝ ε⁴ (a consequence of ⟨e^{−ΔH}⟩ = 1), while
  ⟨ΔH²⟩^½ ∝ ε².  (Checked on exact free-field samples with leapfrog; for a free field the
  minimum-norm error is anomalously small and not a clean power law, so it is not used there.)
"""

import math

import numpy as np
import pytest
import torch

from latticeflow.analysis import gamma_method
from latticeflow.config import parse_config
from latticeflow.groups import expi, is_special_unitary, random_algebra
from latticeflow.mcmc import HMC, initial_field, su_n_generators
from latticeflow.theories import SUN, U1, Phi4

THEORIES = {
    "phi4": lambda: Phi4((6, 6), m2=-1.0, lam=1.3),
    "u1": lambda: U1((4, 4), beta=1.7),
    "u1_3d": lambda: U1((3, 3, 3), beta=1.1),
    "su2": lambda: SUN((4, 4), beta=2.0, N=2),
    "su3": lambda: SUN((4, 4), beta=3.0, N=3),
}
MAIN = ["phi4", "u1", "su2", "su3"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def start(theory, batch, g):
    """A start that is neither hot nor cold: a few untuned trajectories from a cold start."""
    x = initial_field(theory, batch, "cold")
    return HMC(theory, integrator="omelyan", steps=10, trajectory_length=0.5).thermalize(
        x, 3, g, tune=False)


# --- forces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [2, 3])
def test_generators_normalised(N):
    t = su_n_generators(N)
    assert t.shape == (N * N - 1, N, N)
    gram = torch.einsum("aij,bji->ab", t, t)
    assert torch.allclose(gram, 0.5 * torch.eye(N * N - 1, dtype=gram.dtype), atol=1e-14)
    assert torch.allclose(t, t.transpose(-1, -2).conj())
    assert torch.allclose(torch.diagonal(t, dim1=-2, dim2=-1).sum(-1), torch.zeros(()).to(t.dtype))


@pytest.mark.parametrize("name", list(THEORIES))
def test_analytic_force_matches_autograd(name):
    theory = THEORIES[name]()
    x = theory.random_field(3, gen(1))
    analytic = HMC(theory, force="analytic").force(x)
    auto = HMC(theory, force="autograd").force(x)
    assert analytic.shape == x.shape
    assert (analytic - auto).abs().max() < 1e-10 * max(1.0, analytic.abs().max().item())


@pytest.mark.parametrize("name", ["su2", "su3"])
def test_sun_force_normalisation_by_finite_differences(name):
    """dS/dt along U(t) = exp(itX) U is −2 tr(F X): the kick P ← P + εF conserves tr P² + S."""
    theory = THEORIES[name]()
    g = gen(2)
    u = theory.random_field(3, g)
    x = random_algebra(u.shape[:-2], theory.N, generator=g)
    f = HMC(theory).force(u)
    h = 1e-5
    numeric = (theory.action(expi(x, h) @ u) - theory.action(expi(x, -h) @ u)) / (2 * h)
    predicted = -2 * torch.einsum("...ij,...ji->...", f, x).real.flatten(1).sum(1)
    assert torch.allclose(numeric, predicted, rtol=1e-7, atol=1e-7)


# --- molecular dynamics -------------------------------------------------------------------------
@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
@pytest.mark.parametrize("name", MAIN)
def test_reversibility(name, integrator):
    theory = THEORIES[name]()
    g = gen(3)
    hmc = HMC(theory, integrator=integrator, steps=10)
    x, p = theory.random_field(4, g), hmc.sample_momenta(4, g)
    x1, p1 = hmc.integrate(x, p)
    x2, p2 = hmc.integrate(x1, -p1)
    assert (x1 - x).abs().max() > 1e-2  # it moved
    assert (x2 - x).abs().max() < 1e-10
    assert (p2 + p).abs().max() < 1e-10


@pytest.mark.parametrize("name", MAIN)
def test_delta_h_per_trajectory_scales_as_eps_squared(name):
    """At fixed (x, p) and τ = ½, mean |ΔH| over chains ∝ ε² for both integrators
    (exponent 2 ± 0.1 over ε = 1/24 … 1/96); Omelyan's coefficient < ¼ of leapfrog's."""
    theory = THEORIES[name]()
    g = gen(4)
    x = start(theory, 8, g)
    p = HMC(theory).sample_momenta(8, g)
    steps = np.array([12, 24, 48])
    mean_abs = {}
    for integrator in ("leapfrog", "omelyan"):
        hmc = HMC(theory, integrator=integrator)
        h0 = hmc.hamiltonian(x, p)
        values = []
        for n in steps:
            x1, p1 = hmc.integrate(x, p, step_size=0.5 / n, steps=int(n))
            values.append((hmc.hamiltonian(x1, p1) - h0).abs().mean().item())
        mean_abs[integrator] = np.array(values)
        slope = np.polyfit(np.log(0.5 / steps), np.log(values), 1)[0]
        assert abs(slope - 2) < 0.1, (integrator, slope)
    assert np.all(mean_abs["omelyan"] < 0.25 * mean_abs["leapfrog"])


def free_field_samples(theory, batch, g):
    """Exact samples of the free field: covariance [2(−Δ + m²)]⁻¹, drawn in momentum space."""
    eta = torch.randn((batch, *theory.shape), dtype=torch.float64, generator=g)
    k = torch.meshgrid(*[2 * math.pi * torch.arange(n, dtype=torch.float64) / n for n in theory.shape],
                       indexing="ij")
    p_hat2 = sum(4 * torch.sin(km / 2) ** 2 for km in k)
    dims = tuple(range(1, theory.dim + 1))
    scale = 1 / torch.sqrt(2 * (p_hat2 + theory.m2))
    return torch.fft.ifftn(torch.fft.fftn(eta, dim=dims) * scale, dim=dims).real


def test_equilibrium_delta_h_mean_eps4_rms_eps2():
    """Exact free-field samples (seed 5, 16384 chains, L = 8, m² = 1), leapfrog, τ = 1:
    the fitted exponent of ⟨ΔH⟩ is 4 within 4σ (and ≠ 2 by > 4σ); that of ⟨ΔH²⟩^½ is
    2 ± 0.25 (higher orders still visible at these ε); ⟨e^{−ΔH}⟩ = 1 within 4σ."""
    theory = Phi4((8, 8), m2=1.0, lam=0.0)
    g = gen(5)
    x = free_field_samples(theory, 16384, g)
    hmc = HMC(theory, integrator="leapfrog")
    p = hmc.sample_momenta(x.shape[0], g)
    steps = np.array([6, 8, 10, 12])
    means, errors, rms = [], [], []
    for n in steps:
        x1, p1 = hmc.integrate(x, p, step_size=1.0 / n, steps=int(n))
        dh = (hmc.hamiltonian(x1, p1) - hmc.hamiltonian(x, p)).numpy()
        means.append(dh.mean())
        errors.append(dh.std() / math.sqrt(dh.size))
        rms.append(np.sqrt(np.mean(dh**2)))
        w = np.exp(-dh)
        assert abs(w.mean() - 1) < 4 * w.std() / math.sqrt(w.size)
    means, errors = np.array(means), np.array(errors)
    assert np.all(means > 4 * errors)
    # weighted fit of log⟨ΔH⟩ = a + s log ε, with σ(log⟨ΔH⟩) = σ/⟨ΔH⟩
    (slope, _), cov = np.polyfit(np.log(1.0 / steps), np.log(means), 1, w=means / errors, cov="unscaled")
    sigma = math.sqrt(cov[0, 0])
    assert abs(slope - 4) < 4 * sigma and abs(slope - 2) > 4 * sigma, (slope, sigma)
    slope_rms = np.polyfit(np.log(1.0 / steps), np.log(rms), 1)[0]
    assert abs(slope_rms - 2) < 0.25, slope_rms


# --- Markov chain --------------------------------------------------------------------------------
def test_links_stay_special_unitary():
    """SU(3), 40 trajectories of 8 Omelyan steps: links in SU(3) to 1e-12 with the default
    reunitarisation (every 10 trajectories) and to 1e-10 even without it."""
    theory = THEORIES["su3"]()
    for every, atol in ((10, 1e-12), (0, 1e-10)):
        g = gen(6)
        hmc = HMC(theory, steps=8, reunitarize_every=every)
        x = theory.random_field(2, g)
        accepted = 0
        for _ in range(40):
            x, acc, _ = hmc.trajectory(x, g)
            accepted += int(acc.sum())
        assert accepted > 0
        assert is_special_unitary(x, atol=atol)


def test_tuning_reaches_target_and_state_round_trip():
    """U(1) L = 4, β = 2, τ = 2, leapfrog (seed 7): after 160 tuning trajectories the
    acceptance of 40 more is at least target − 0.05 (steps are rounded up), and one MD step
    fewer would give less than target + 0.05 (the tuner did not add steps for nothing)."""
    theory = U1((4, 4), beta=2.0)
    g = gen(7)
    hmc = HMC(theory, integrator="leapfrog", trajectory_length=2.0, steps=40)
    x = hmc.thermalize(theory.random_field(128, g), 160, g)
    assert hmc.tuned and 1 < hmc.steps < 40
    assert math.isclose(hmc.step_size * hmc.steps, 2.0)
    x, history = hmc.sample(x, 40, g, measure=False)
    assert history["accepted"].double().mean().item() > 0.8 - 0.05
    fewer, y = 0.0, x
    for _ in range(20):
        y, accepted, _ = hmc.trajectory(y, g, step_size=2.0 / (hmc.steps - 1), steps=hmc.steps - 1)
        fewer += accepted.double().mean().item() / 20
    assert fewer < 0.8 + 0.05
    state = hmc.state_dict()
    assert all(isinstance(v, (int, float, str, bool)) for v in state.values())
    fresh = HMC(theory, integrator="leapfrog", trajectory_length=2.0)
    fresh.load_state_dict(state)
    assert (fresh.step_size, fresh.steps, fresh.tuned) == (hmc.step_size, hmc.steps, True)
    g1, g2 = gen(8), gen(8)
    assert torch.equal(hmc.trajectory(x, g1)[0], fresh.trajectory(x, g2)[0])


def test_tuning_is_bounded_when_everything_is_rejected():
    """A run of rejections must not drive ε to zero (and the MD step count to infinity)."""
    theory = U1((4, 4), beta=1.0)
    hmc = HMC(theory, steps=4)
    tried = []

    def always_rejected(x, generator=None, step_size=None, steps=None):
        tried.append(steps)
        return x, torch.zeros(x.shape[0], dtype=torch.bool), torch.full((x.shape[0],), math.inf)

    hmc.trajectory = always_rejected
    with pytest.warns(UserWarning, match="smallest step size"):
        hmc.thermalize(theory.random_field(2, gen(0)), 60, gen(0))
    assert max(tried) <= 4 * 50 and hmc.steps == 4 * 50


def test_from_config_and_cold_start():
    cfg = parse_config('[theory]\nname = "sun"\nL = 4\nbeta = 2.0\nN = 2\n'
                       '[hmc]\nintegrator = "leapfrog"\nsteps = 7\nforce = "autograd"\n')
    theory = cfg.theory.build()
    hmc = HMC.from_config(theory, cfg.hmc)
    assert (hmc.integrator, hmc.steps, hmc.force_kind) == ("leapfrog", 7, "autograd")
    assert math.isclose(hmc.step_size, 1 / 7)
    cold = initial_field(theory, 2, "cold")
    assert theory.observables(cold)["plaquette"].eq(1).all()
    assert initial_field(U1((4, 4), 1.0), 2, "cold").abs().max() == 0
    with pytest.raises(ValueError):
        HMC(theory, integrator="euler")


def test_non_finite_delta_h_is_rejected():
    theory = Phi4((4, 4), m2=-4.0, lam=8.0)
    g = gen(9)
    x = theory.random_field(4, g)
    hmc = HMC(theory, integrator="leapfrog")
    x_new, accepted, delta_h = hmc.trajectory(x, g, step_size=3.0, steps=4)  # overflows
    assert not torch.isfinite(delta_h).any()
    assert not accepted.any() and torch.equal(x_new, x)


# --- against exact results -----------------------------------------------------------------------
def run_chains(theory, chains, n_therm, n, seed, **kwargs):
    g = gen(seed)
    hmc = HMC(theory, **kwargs)
    x = hmc.thermalize(theory.random_field(chains, g), n_therm, g)
    _, history = hmc.sample(x, n, g)
    return {k: v.T.double().numpy() for k, v in history.items()}  # (chains, n) = replicas


def assert_within(history, name, exact, n_sigma=4.0):
    result = gamma_method(history[name])
    assert abs(result.mean - exact) < n_sigma * result.error, (name, str(result), exact)


def assert_exp_delta_h_is_one(history):
    result = gamma_method(np.exp(-history["delta_h"]))
    assert abs(result.mean - 1) < 4 * result.error, str(result)


def test_u1_against_exact():
    """U(1) 2D, L = 4, β = 1.5, 128 chains × 300 leapfrog trajectories tuned to 70%
    acceptance (seed 10): plaquette and χ_Q against the exact torus values within 4σ;
    ⟨e^{−ΔH}⟩ = 1 within 4σ."""
    theory = U1((4, 4), beta=1.5)
    history = run_chains(theory, 128, 100, 300, seed=10, steps=4, integrator="leapfrog",
                         target_acceptance=0.7)
    exact = theory.exact()
    assert_within(history, "plaquette", exact["plaquette"])
    assert_within(history, "chi_Q", exact["chi_Q"])
    assert_exp_delta_h_is_one(history)


def test_su2_against_exact():
    """SU(2) 2D, L = 4, β = 2, 64 chains × 150 trajectories (seed 11): plaquette against
    the exact torus value within 4σ; ⟨e^{−ΔH}⟩ = 1 within 4σ."""
    theory = SUN((4, 4), beta=2.0, N=2)
    history = run_chains(theory, 64, 60, 150, seed=11, steps=4)
    assert_within(history, "plaquette", theory.exact()["plaquette"])
    assert_exp_delta_h_is_one(history)


def test_free_field_against_exact():
    """Free field (φ⁴, λ = 0), L = 6, m² = 1, 128 chains × 300 trajectories (seed 12):
    ⟨φ²⟩, χ₂ and the Ising energy against Phi4.exact() within 4σ; ⟨e^{−ΔH}⟩ = 1 within 4σ."""
    theory = Phi4((6, 6), m2=1.0, lam=0.0)
    history = run_chains(theory, 128, 100, 300, seed=12, steps=4)
    exact = theory.exact()
    for name in ("phi2", "chi2", "ising_energy"):
        assert_within(history, name, exact[name])
    assert_exp_delta_h_is_one(history)
