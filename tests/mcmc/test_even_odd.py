"""Even–odd preconditioned pseudofermions and the chronological initial guess of the
Schwinger model's HMC (latticeflow/theories/even_odd.py, chrono.py): D̂ against the Schur
complement of the dense D (and det D̂ = det D), the force against autograd of a dense
pseudofermion action, reversibility and the order of the energy error with a guess, the
plaquette, condensate, χ_Q and C_π(1) against the exact-determinant reference at L = 4
within 4σ, the refusals, and files that record their solver (older ones continue with the
unpreconditioned solver from zero, bit for bit: tests/test_compatibility.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latticeflow import cli, ensemble
from latticeflow.analysis import gamma_method
from latticeflow.config import parse_config
from latticeflow.errors import ConfigError
from latticeflow.lattice import checkerboard
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.hmc_chains import HMCChains
from latticeflow.samplers import resume_keeps
from latticeflow.theories import Schwinger
from latticeflow.theories.even_odd import EvenOddDirac, EvenOddPseudofermionAction
from latticeflow.theories.fermions import PseudofermionAction

REFERENCE = json.loads((Path(__file__).parent / "schwinger_reference.json").read_text())["reference"]
BASE = '[theory]\nname = "schwinger"\nshape = [{l0}, {l1}]\nbeta = 1.0\nkappa = 0.25\n[hmc]\nsteps = 4\n'


def hot(theory, n, seed=0):
    return theory.random_field(n, torch.Generator().manual_seed(seed))


def dense_schur(theory, x):
    """D̂ = D_ee − D_eo D_oo⁻¹ D_oe from the dense D (spin-major; even sites in flat order),
    built independently of the even–odd operator; differentiable in ``x``."""
    d = theory.dirac_matrix(x)
    v = theory.volume
    flat = torch.arange(v)
    even, odd = (flat[checkerboard(theory.shape, p).flatten()] for p in (0, 1))
    ie, io = torch.cat([even, v + even]), torch.cat([odd, v + odd])
    block = lambda a, b: d[:, a][:, :, b]  # noqa: E731
    return block(ie, ie) - block(ie, io) @ torch.linalg.solve(block(io, io), block(io, ie))


def operator_matrix(op, dagger=False):
    """The dense matrix of D̂ (or D̂†), column by column from the matrix-free operator."""
    n = 2 * op.n
    basis = torch.eye(n, dtype=torch.complex128).view(n, 2, op.n)
    cols = [op.apply(basis[j].expand(op.batch, 2, op.n).contiguous(), dagger=dagger) for j in range(n)]
    return torch.stack(cols, -1).reshape(op.batch, n, n)


@pytest.mark.parametrize("shape", [(4, 4), (4, 6), (6, 2)])
def test_the_operator_is_the_schur_complement_and_keeps_the_determinant(shape):
    t = Schwinger(shape, beta=1.0, kappa=0.27)
    x = hot(t, 3)
    op = EvenOddDirac(x, t.kappa)
    dhat = operator_matrix(op)
    want = dense_schur(t, x)
    assert torch.allclose(dhat, want, atol=1e-13)
    assert torch.allclose(operator_matrix(op, dagger=True), dhat.conj().transpose(1, 2), atol=1e-13)
    det_hat, det = torch.linalg.det(dhat), torch.linalg.det(t.dirac_matrix(x))
    assert torch.allclose(det_hat, det, rtol=1e-10)  # det D̂ = det D, not only up to a phase
    assert det_hat.imag.abs().max() < 1e-10 * det_hat.abs().min()  # real (γ₅-hermiticity)
    # the odd-site block of D is the unit matrix (no factor in det D = det D̂)
    d = t.dirac_matrix(x)
    odd = torch.arange(t.volume)[checkerboard(shape, 1).flatten()]
    io = torch.cat([odd, t.volume + odd])
    assert torch.equal(d[:, io][:, :, io], torch.eye(len(io), dtype=d.dtype).expand(3, -1, -1))


def test_force_is_minus_the_gradient_of_the_even_odd_pseudofermion_action():
    t = Schwinger((4, 6), beta=1.5, kappa=0.26)
    g = torch.Generator().manual_seed(3)
    x = hot(t, 3)
    md = EvenOddPseudofermionAction(t, 1e-12, 1000, 1e-12, guess="zero")
    state = g.get_state()
    md.refresh(x, g)
    g.set_state(state)
    shape = (3, 2, t.volume // 2)
    eta = torch.complex(torch.randn(shape, dtype=torch.float64, generator=g),
                        torch.randn(shape, dtype=torch.float64, generator=g)) / math.sqrt(2)
    phi = md.phi.reshape(3, -1, 1)

    def dense(y):
        a = dense_schur(t, y)
        sol = torch.linalg.solve(a.conj().transpose(1, 2) @ a, phi)
        return t.gauge_action(y) + (phi.conj().transpose(1, 2) @ sol).real.flatten()

    # at the refresh point φ†(D̂†D̂)⁻¹φ = η†η (φ = D̂†η), by a dense solve
    assert torch.allclose(dense(x) - t.gauge_action(x), (eta.abs() ** 2).flatten(1).sum(1), atol=1e-9)
    y = x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(md.action(y), dense(y), atol=1e-9)
    want = t.field_space.autograd_force(dense, y)
    got = md.force(y)
    assert torch.allclose(got, want, atol=1e-8) and got.abs().max() > 1
    assert (md.stats()["cg_iterations"] > 5).all() and (md.applications >= md.stats()["cg_iterations"]).all()


@pytest.mark.parametrize("guess", ["last", "chrono"])
def test_with_a_guess_trajectories_stay_reversible_and_second_order(guess):
    """With the guess the force depends on the solver's history within its tolerance (1e-10):
    back and forth returns to the start within 1e-8 on 8×8 at κ = 0.26, the guess saves
    CG iterations, ΔH agrees with the zero-guess trajectory within 1e-7, and halving the
    step size divides the energy error by about 4."""
    t = Schwinger((8, 8), beta=2.0, kappa=0.26)
    x = hot(t, 4, seed=5)
    runs = {}
    for kind, steps in ((guess, 6), ("zero", 6), (guess, 12)):
        hmc = HMC(t, steps=steps, cg_guess=kind)
        assert isinstance(hmc.md, EvenOddPseudofermionAction) and hmc.md.history.kind == kind
        g = torch.Generator().manual_seed(7)
        p = hmc.sample_momenta(4, g)
        hmc.md.refresh(x, g)
        h0 = hmc.hamiltonian(x, p)
        x1, p1 = hmc.integrate(x, p)
        dh = hmc.hamiltonian(x1, p1) - h0
        runs[kind, steps] = (dh, hmc.md.applications.clone())
        if (kind, steps) == (guess, 6):
            hmc.md.history.reset()  # the reverse trajectory starts, like every trajectory, afresh
            x2, p2 = hmc.integrate(x1, -p1)
            assert torch.allclose(torch.remainder(x2 - x + math.pi, 2 * math.pi) - math.pi,
                                  torch.zeros_like(x), atol=1e-8)
            assert torch.allclose(p2, -p, atol=1e-8)
    (dh, cost), (dh_zero, cost_zero), (dh_fine, _) = runs[guess, 6], runs["zero", 6], runs[guess, 12]
    assert (cost < 0.95 * cost_zero).all(), (cost, cost_zero)
    assert torch.allclose(dh, dh_zero, atol=1e-7)
    ratio = (dh.square().mean() / dh_fine.square().mean()).sqrt()
    assert 2.5 < ratio < 6.5, ratio


def test_a_loose_force_tolerance_starts_every_solve_from_zero():
    t = Schwinger((4, 4), beta=1.0, kappa=0.25)
    assert HMC(t, cg_tolerance=1e-9).md.history.kind == "last"
    assert HMC(t, cg_tolerance=1e-6).md.history.kind == "zero"  # deterministic, hence reversible
    plain = HMC(t, even_odd=False, cg_guess="last")
    assert isinstance(plain.md, PseudofermionAction) and plain.md.history.kind == "last"


def test_hmc_with_even_odd_and_chrono_is_exact(tmp_path):
    cfg = parse_config(BASE.format(l0=4, l1=4))
    theory = cfg.theory.build()
    hmc = HMC(theory, steps=4, even_odd=True, cg_guess="chrono")
    chains = HMCChains(theory, hmc, n_chains=8, thermalization=60, seed=4, progress=False)
    run_ensemble(chains, theory=theory, path=tmp_path / "h.h5", n=400, config_text=cfg.text, seed=4,
                 block=50, progress=False)
    with ensemble.open(tmp_path / "h.h5") as ens:
        for name in ("plaquette", "chiral_condensate", "chi_Q", "pion_t1"):
            r, ref = gamma_method(ens.observable(name).T), REFERENCE[name]
            assert abs(r.mean - ref["mean"]) < 4 * math.hypot(r.error, ref["error"]), (name, str(r), ref)
            assert r.error < 0.05 * abs(ref["mean"]) + 0.005, (name, str(r))  # a test with teeth
        assert ens.accepted.mean() > 0.6
        assert np.all(ens.mcmc["cg_iterations"] > 3)
        assert ens.extra["hmc"]["even_odd"] is True and ens.extra["hmc"]["cg_guess"] == "chrono"


def test_odd_extents_and_unknown_guesses_are_refused_in_one_line(tmp_path, capsys):
    odd = parse_config(BASE.format(l0=4, l1=5))
    with pytest.raises(ConfigError, match=r"hmc.even_odd: even-odd preconditioning needs even extents "
                                          r"\(this lattice is 4x5\); set \[hmc\] even_odd = false"):
        HMC.from_config(odd.theory.build(), odd.hmc)
    model = tmp_path / "odd.toml"
    model.write_text(BASE.format(l0=4, l1=5))
    assert cli.main(["hmc", str(model), "-n", "4", "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hmc.even_odd" in err and not (tmp_path / "o.h5").exists()
    for text in (BASE.format(l0=4, l1=5) + "even_odd = false\n", BASE.format(l0=4, l1=5) + 'fermions = "exact"\n'):
        cfg = parse_config(text)
        HMC.from_config(cfg.theory.build(), cfg.hmc)  # the unpreconditioned and the exact forces
    with pytest.raises(ConfigError, match="hmc.cg_guess"):
        parse_config(BASE.format(l0=4, l1=4) + 'cg_guess = "previous"\n')


def test_files_record_their_solver_and_older_files_continue_with_theirs():
    cfg = parse_config(BASE.format(l0=4, l1=4))
    theory = cfg.theory.build()
    keeps = resume_keeps(cfg, theory, "hmc")
    assert keeps["hmc.even_odd"] is True and keeps["hmc.cg_guess"] == "last"
    hmc = HMC.from_config(theory, cfg.hmc)
    state = hmc.state_dict()
    assert state["even_odd"] is True and state["cg_guess"] == "last"
    hmc.load_state_dict(state)
    assert isinstance(hmc.md, EvenOddPseudofermionAction)
    # a file written before these keys existed holds neither: it continues as it was made
    old = {k: v for k, v in state.items() if k not in ("even_odd", "cg_guess")}
    hmc.load_state_dict(old)
    assert isinstance(hmc.md, PseudofermionAction) and hmc.md.history.kind == "zero"
    assert hmc.state_dict()["even_odd"] is False and hmc.state_dict()["cg_guess"] == "zero"
