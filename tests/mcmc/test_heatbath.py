"""Heat bath + overrelaxation of pure gauge fields (mcmc/heatbath.py, mcmc/sun_heatbath.py,
samplers/heatbath.py): the von Mises and Kennedy–Pendleton samplers follow their exact
densities, the link sets are independent and give the local action, overrelaxation keeps
the action and is an involution, U(1), SU(2), SU(3) and a U(1) defect action reproduce
their exact values within 4σ (seeded; the same data exclude a 5 % shift of β), the CLI
sampler resumes bit for bit, and what it cannot sample is refused in one line."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.groups import dagger
from latticeflow.lattice import planes
from latticeflow.mcmc.heatbath import (HeatbathChains, HeatbathKernel, KernelState, LinkSets, staple_terms,
                                       u1_staple_sum, von_mises)
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.kernels import Composite, HMCKernel
from latticeflow.mcmc.sun_heatbath import KP_THRESHOLD, su2_heatbath, su2_x0
from latticeflow.theories import SUN, U1
from latticeflow.theories.sun import plaquettes
from latticeflow.theories.u1 import plaquette_angles

from conftest import refuse


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def chi2_sigmas(u: np.ndarray, bins: int = 20) -> float:
    """(χ² − dof)/√(2 dof) of CDF values ``u`` that should be uniform on (0, 1)."""
    counts = np.histogram(u, bins=bins, range=(0, 1))[0]
    expected = len(u) / bins
    return (((counts - expected) ** 2 / expected).sum() - (bins - 1)) / math.sqrt(2 * (bins - 1))


# --- the exact samplers -----------------------------------------------------------------
@pytest.mark.parametrize("kappa", [0.0, 0.3, 2.0, 30.0])
def test_von_mises_draws_follow_their_density(kappa):
    phi, tries = von_mises(torch.full((20000,), kappa), gen(1))
    assert phi.abs().max() < math.pi and tries.min() >= 1 and tries.mean() < 1.6
    assert abs(chi2_sigmas(stats.vonmises.cdf(phi.numpy(), kappa, loc=0) if kappa else (phi.numpy() + math.pi)
                           / (2 * math.pi))) < 4
    # the mean of cos φ is I₁(κ)/I₀(κ), also where the CDF is a normal approximation
    big, _ = von_mises(torch.full((20000,), 1e4), gen(2))
    c = torch.cos(big).numpy()
    assert abs(c.mean() - special.ive(1, 1e4) / special.ive(0, 1e4)) < 4 * c.std() / math.sqrt(c.size)


@pytest.mark.parametrize("alpha", [0.0, 0.5, KP_THRESHOLD, 3.0, 40.0])
def test_su2_x0_draws_follow_their_density(alpha):
    x0, tries = su2_x0(torch.full((20000,), alpha), gen(3))
    grid = np.linspace(-1, 1, 20001)
    density = np.sqrt(1 - grid**2) * np.exp(alpha * (grid - 1))
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0)
    assert x0.abs().max() <= 1 and tries.min() >= 1
    assert abs(chi2_sigmas(np.interp(x0.numpy(), grid, cdf / cdf[-1]))) < 4


def test_su2_heatbath_elements_are_su2_with_a_uniform_direction():
    k = torch.full((20000,), 1.5)
    a, b, _ = su2_heatbath(k, gen(4))
    assert torch.allclose(a.abs() ** 2 + b.abs() ** 2, torch.ones(()).double(), atol=1e-14)
    x = torch.stack([a.real, b.imag, b.real, a.imag]).numpy()  # x₀, x₁, x₂, x₃
    exact_x0 = special.iv(2, 3.0) / special.iv(1, 3.0)  # ⟨x₀⟩ of √(1 − x₀²) e^{3 x₀}
    assert abs(x[0].mean() - exact_x0) < 4 * x[0].std() / math.sqrt(x.shape[1])
    for comp in x[1:]:
        assert abs(comp.mean()) < 4 * comp.std() / math.sqrt(comp.size)
    second = (x[1:] ** 2).mean(1)  # isotropic: each ⟨x_i²⟩ is ⟨1 − x₀²⟩/3
    assert np.ptp(second) < 4 * math.sqrt(2) * (x[1] ** 2).std() / math.sqrt(x.shape[1])


# --- geometry, local action, overrelaxation -----------------------------------------------
def defect_action(theory, x, beta_p):
    """−Σ β_P cos θ_P (U(1)) or −Σ (β_P/N) Re tr U_P (SU(N)), per configuration."""
    if isinstance(theory, SUN):
        p = torch.diagonal(plaquettes(x), dim1=-2, dim2=-1).sum(-1).real / theory.N
    else:
        p = torch.cos(plaquette_angles(x))
    return -(beta_p * p).flatten(1).sum(1)


def random_couplings(theory, seed=5):
    return 0.5 + torch.rand((len(planes(theory.dim)), *theory.shape), dtype=torch.float64, generator=gen(seed))


THEORIES = [U1((6, 6), beta=1.3), U1((3, 4, 5), beta=0.7), SUN((2, 3), beta=2.0, N=2), SUN((3, 4, 2), beta=5.0, N=3)]


@pytest.mark.parametrize("shape", [(6, 6), (3, 4, 5), (2, 3), (2, 2, 2, 3)])
def test_link_sets_hold_every_link_once_and_no_two_in_a_plaquette(shape):
    sets = LinkSets(shape)
    volume = math.prod(shape)
    seen = torch.cat([s.mu * volume + s.sites for s in sets.sets])
    assert torch.equal(torch.sort(seen).values, torch.arange(len(shape) * volume))
    theory = U1(shape, beta=1.0)
    x = theory.random_field(2, gen(6))
    for s in sets.sets:
        links = x.clone().view(2, len(shape), volume)
        before = staple_terms(links, s, torch.add, torch.neg)
        links[:, s.mu, s.sites] = torch.rand((2, len(s.sites)), dtype=torch.float64, generator=gen(7))
        after = staple_terms(links, s, torch.add, torch.neg)
        assert all(torch.equal(b, a) for pair_b, pair_a in zip(before, after) for b, a in zip(pair_b, pair_a))


@pytest.mark.parametrize("theory", THEORIES, ids=repr)
@pytest.mark.parametrize("defect", [False, True])
def test_the_staples_give_the_change_of_the_action(theory, defect):
    """Replacing every link of one set changes S (or a defect action) by the sum of the
    local changes −Re(e^{iθ′}A) + Re(e^{iθ}A), −Re tr(U′W) + Re tr(UW)."""
    beta_p = random_couplings(theory) if defect else torch.full((len(planes(theory.dim)), *theory.shape),
                                                                theory.beta, dtype=torch.float64)
    kernel = HeatbathKernel(theory, plaquette_beta=beta_p if defect else None)
    sets, weights = kernel._on(torch.device("cpu"), 2)
    x = theory.random_field(2, gen(8))
    new = theory.random_field(2, gen(9))
    view = (2, theory.dim, theory.volume, *x.shape[2 + theory.dim:])
    for s, w in zip(sets, weights):
        links, replaced = x.clone().view(view), x.clone().view(view)
        replaced[:, s.mu, s.sites] = new.view(view)[:, s.mu, s.sites]
        if isinstance(theory, SUN):
            _, m_old = kernel.update._m(links, s, w)
            _, m_new = kernel.update._m(replaced, s, w)
            local = lambda m: torch.diagonal(m, dim1=-2, dim2=-1).sum(-1).real.sum(1)  # noqa: E731
            change = local(m_old) - local(m_new)
        else:
            re, im = u1_staple_sum(links, s, w)
            theta_old, theta_new = links[:, s.mu, s.sites], replaced[:, s.mu, s.sites]
            change = ((torch.cos(theta_old) * re - torch.sin(theta_old) * im)
                      - (torch.cos(theta_new) * re - torch.sin(theta_new) * im)).sum(1)
        exact = defect_action(theory, replaced.view(x.shape), beta_p) - defect_action(theory, x, beta_p)
        assert torch.allclose(change, exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("theory", THEORIES, ids=repr)
def test_overrelaxation_keeps_the_action_and_is_an_involution(theory):
    """Per set (and SU(2) subgroup): the action, or a defect action, is unchanged and a
    second reflection restores the links."""
    beta_p = random_couplings(theory, 10)
    for kernel, action in [(HeatbathKernel(theory), theory.action),
                           (HeatbathKernel(theory, plaquette_beta=beta_p), lambda y: defect_action(theory, y, beta_p))]:
        x = kernel.step(KernelState(theory.random_field(3, gen(11))), gen(12))[0].x  # not a special point
        sets, weights = kernel._on(torch.device("cpu"), 3)
        links = x.clone().view(3, theory.dim, theory.volume, *x.shape[2 + theory.dim:])
        inverse = copy.copy(kernel.update)  # each SU(2) reflection is an involution: in reverse order they undo
        inverse.subgroups = getattr(inverse, "subgroups", [])[::-1]
        for s, w in zip(sets, weights):
            once = links.clone()
            kernel.update.overrelax(once, s, w)
            assert (once - links).abs().max() > 1e-3  # it moves the links
            twice = once.clone()
            inverse.overrelax(twice, s, w)
            assert torch.allclose(twice, links, atol=1e-12)
            assert torch.allclose(action(once.view(x.shape)), action(x), rtol=1e-12, atol=1e-10)
        for s, w in zip(sets, weights):
            kernel.update.overrelax(links, s, w)
        assert torch.allclose(action(links.view(x.shape)), action(x), rtol=1e-12, atol=1e-10)


# --- exactness --------------------------------------------------------------------------
def measure(theory, kernel, chains, steps, thermalization=15, seed=13):
    g = gen(seed)
    state = KernelState(theory.random_field(chains, g))
    for _ in range(thermalization):
        state = kernel.step(state, g)[0]
    rows = []
    for _ in range(steps):
        state, info = kernel.step(state, g)
        rows.append(theory.observables(state.x))
        assert info["accepted"].all() and info["heatbath_tries"].min() >= 1
    return state, {k: torch.stack([r[k] for r in rows]).T.numpy() for k in rows[0]}


def assert_exact(theory, data, names, shifted):
    """Within 4σ of the exact values, and the plaquette more than 4σ from its value at the
    β of ``shifted`` (so the test can fail)."""
    exact = theory.exact()
    for name in names:
        r = gamma_method(data[name])
        assert abs(r.mean - exact[name]) < 4 * r.error, (name, str(r), exact[name])
    r = gamma_method(data["plaquette"])
    assert abs(r.mean - shifted.exact()["plaquette"]) > 4 * r.error, (str(r), shifted.exact()["plaquette"])


def test_u1_heatbath_is_exact():
    theory = U1((4, 4), beta=1.8)
    _, data = measure(theory, HeatbathKernel(theory, overrelaxation=1), chains=64, steps=60)
    assert_exact(theory, data, ["plaquette", "chi_Q"], U1((4, 4), beta=1.8 * 1.05))


@pytest.mark.parametrize("N,beta", [(2, 2.5), (3, 4.0)])
def test_sun_heatbath_is_exact(N, beta):
    theory = SUN((4, 4), beta=beta, N=N)
    state, data = measure(theory, HeatbathKernel(theory, overrelaxation=1), chains=32, steps=40, thermalization=10)
    assert_exact(theory, data, ["plaquette"], SUN((4, 4), beta=beta * 1.05, N=N))
    eye = torch.eye(N, dtype=torch.complex128)
    assert torch.allclose(dagger(state.x) @ state.x, eye.expand_as(state.x), atol=1e-12)
    assert torch.allclose(torch.linalg.det(state.x), torch.ones((), dtype=torch.complex128), atol=1e-12)


def test_a_u1_defect_action_is_exact():
    """β_P = β except c β on one line of plaquettes: ⟨cos θ_P⟩ on and off the defect against
    the torus character sum Z = Σ_n Π_P I_n(β_P)."""
    beta, c, theory = 2.0, 0.3, U1((4, 4), beta=2.0)
    beta_p = torch.full((1, 4, 4), beta, dtype=torch.float64)
    beta_p[0, 1, :] *= c
    kernel = HeatbathKernel(theory, overrelaxation=1, plaquette_beta=beta_p)
    g, x = gen(14), theory.random_field(64, gen(15))
    state, on, off = KernelState(x), [], []
    for step in range(80):
        state = kernel.step(state, g)[0]
        if step >= 20:
            p = torch.cos(plaquette_angles(state.x))[:, 0]
            on.append(p[:, 1].mean(1))
            off.append(torch.cat([p[:, :1], p[:, 2:]], 1).flatten(1).mean(1))
    n = np.arange(-40, 41)[:, None]
    b = beta_p.flatten().numpy()[None]
    i_n, d_i = special.ive(n, b), (special.ive(n - 1, b) + special.ive(n + 1, b)) / 2
    z = np.prod(i_n, 1)
    exact_p = (d_i / i_n * z[:, None]).sum(0) / z.sum()  # ⟨cos θ_P⟩ = ∂ log Z/∂β_P
    for series, where in [(on, b[0] < beta), (off, b[0] == beta)]:
        r = gamma_method(torch.stack(series).T.numpy())
        assert abs(r.mean - exact_p[where].mean()) < 4 * r.error, (str(r), exact_p[where].mean())
    assert abs(exact_p[b[0] < beta].mean() - exact_p[b[0] == beta].mean()) > 0.1  # the defect shows


def test_per_chain_couplings_and_steps_compose():
    theory = U1((4, 4), beta=1.0)
    beta_p = random_couplings(theory, 16)
    x = theory.random_field(3, gen(17))
    one = HeatbathKernel(theory, plaquette_beta=beta_p).step(KernelState(x), gen(18))[0].x
    per_chain = HeatbathKernel(theory, plaquette_beta=beta_p.expand(3, *beta_p.shape)).step(KernelState(x), gen(18))
    assert torch.equal(one, per_chain[0].x)
    kernel = HeatbathKernel(theory, overrelaxation=2)
    chains = HeatbathChains(theory, kernel, 3, sweeps=2, seed=19)
    chains.start(None)
    block = chains.advance(1)
    g = gen(19)
    x = theory.random_field(3, g)  # the hot start, then one row of two sweeps
    assert np.array_equal(block.configs[0], kernel.step(kernel.step(KernelState(x), g)[0], g)[0].x.numpy())
    assert block.mcmc["log_weight"].shape == (1, 3) and not block.mcmc["log_weight"].any()
    mixed, infos = Composite([kernel] * 2 + [HMCKernel(HMC(theory, steps=3))]).step(KernelState(x), gen(20))
    assert mixed.x.shape == x.shape and all(i["accepted"].shape == (3,) for i in infos)
    with pytest.raises(ValueError, match="plaquette_beta"):
        HeatbathKernel(theory, plaquette_beta=torch.ones(2, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fields_on_the_gpu_follow_the_same_chain():
    for theory in (U1((4, 4), beta=2.0), SUN((4, 4), beta=2.0, N=3)):
        kernel, x = HeatbathKernel(theory), theory.random_field(2, gen(21))
        cpu = kernel.step(KernelState(x), gen(22))[0].x
        gpu = kernel.step(KernelState(x.cuda()), gen(22))[0].x
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-9)


# --- the sampler from the command line ------------------------------------------------------
def _model(tmp_path, theory='name = "u1"\nL = 4\nbeta = 1.5', sample=""):
    path = tmp_path / "m.toml"
    path.write_text(f"[theory]\n{theory}\n[sample]\nchains = 3\nthermalization = 5\nblock = 7\n{sample}")
    return path


def test_the_cli_sampler_resumes_bit_for_bit_and_is_analysed(tmp_path, capsys):
    from latticeflow.cli import main

    model = _model(tmp_path, sample='sampler = "heatbath"\noverrelaxation = 2\nsweeps_per_step = 2\n')

    def sample(out, n, *extra):
        assert main(["sample", str(model), "--sampler", "heatbath", "-n", str(n), "--out", str(tmp_path / out),
                     "--quiet", *extra]) == 0

    sample("a.h5", 60)
    sample("b.h5", 30)
    sample("b.h5", 60)
    sample("c.h5", 9, "--start", str(tmp_path / "a.h5"))
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert a.sampler == "heatbath" and a.weights.column == "log_weight" and not a.reweighted
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in ("accepted", "log_weight", "heatbath_tries"):
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name
        assert a.accepted.all() and not a.mcmc["log_weight"].any() and a.mcmc["heatbath_tries"].min() >= 1
        last = a.configs[-1]
    with ensemble.open(tmp_path / "c.h5") as c:
        assert not np.array_equal(c.configs[0], last)  # started from a.h5's last fields, then moved
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "a.h5"), "--json"]) == 0
    assert '"heatbath"' in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "c.h5")]) == 0
    err = refuse(["sample", model, "--sampler", "heatbath", "-n", 90, "--out", tmp_path / "b.h5",
                  "--seed", 4], capsys)
    assert "seed" in err


HB = 'sampler = "heatbath"\n'


@pytest.mark.parametrize("theory,sample,words", [
    ('name = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0', HB, "implemented for U(1) and SU(N) gauge theories, not for the phi4"),
    ('name = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2', HB, "the schwinger theory has fermions"),
    ('name = "u1"\nL = 4\nbeta = 1.0', HB + "overrelaxation = -1\n", "sample.overrelaxation: must be between 0 and 1000"),
    ('name = "u1"\nL = 4\nbeta = 1.0', HB + "sweeps_per_step = 0\n", "sample.sweeps_per_step: must be between"),
    ('name = "u1"\nL = 4\nbeta = 1.0', HB + 'fresh_start = "warm"\n', "sample.fresh_start: must be one of"),
    ('name = "u1"\nL = 4\nbeta = 1.0', 'sampler = "direct"\noverrelaxation = 2\n', "unknown key for the direct sampler"),
])
def test_what_the_heatbath_cannot_do_is_refused_in_one_line(tmp_path, capsys, theory, sample, words):
    model = _model(tmp_path, theory, sample)
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert words in err and not (tmp_path / "x.h5").exists()
