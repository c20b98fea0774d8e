"""Instanton jumps (mcmc/jumps.py) and the ``instanton-jump`` sampler (samplers/jump.py): the
move shifts every plaquette by exactly 2πq/V (also on rectangular lattices), −q undoes it,
smooth fields change their charge by q; the exact ΔS (dense even–odd determinant) is that
of the dense D, the pseudofermion ΔS is the right quadratic form; HMC + jumps reproduce the
exact 2D U(1) torus values where HMC alone is frozen in Q (L = 8, β = 6: τ_int(Q) ≈ 190 for
HMC, ≈ 1 with jumps), and the Schwinger reference values of test_schwinger_exactness (exact
determinant; pseudofermion HMC with exact or pseudofermion jumps); the CLI samples, resumes
bit for bit, starts cold or from a file, and refuses what does not apply in one line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.groups import principal_angle
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.jumps import InstantonJump, instanton_shift, jump_chains
from latticeflow.mcmc.kernels import KernelState
from latticeflow.theories import U1
from latticeflow.theories.even_odd import EvenOddDirac, schur_matrix
from latticeflow.theories.schwinger import Schwinger
from latticeflow.theories.u1 import plaquette_angles, topological_charge

from conftest import refuse

REFERENCE = json.loads((Path(__file__).parent / "schwinger_reference.json").read_text())["reference"]


@pytest.mark.parametrize("shape", [(4, 4), (6, 10), (5, 3)])
def test_every_plaquette_moves_by_2_pi_q_over_v_and_minus_q_undoes_it(shape):
    g = torch.Generator().manual_seed(1)
    q = torch.tensor([1, -1, 1, -1, 2])
    centre = torch.stack([torch.randint(0, n, (5,), generator=g) for n in shape], 1)
    shift = instanton_shift(shape, q, centre)
    volume = math.prod(shape)
    moved = plaquette_angles(shift)[:, 0] - (2 * math.pi * q.double() / volume).view(-1, 1, 1)
    assert principal_angle(moved).abs().max() < 1e-13  # every plaquette, mod 2π
    assert not torch.equal(shift[0], shift[2])  # the centre moves the instanton
    x = 2 * math.pi * torch.rand(5, 2, *shape, dtype=torch.float64, generator=g)
    back = x + shift + instanton_shift(shape, -q, centre)
    assert principal_angle(back - x).abs().max() < 1e-13
    smooth = 0.05 * torch.randn(5, 2, *shape, dtype=torch.float64, generator=g)  # Q = 0, small plaquettes
    assert torch.equal(topological_charge(smooth + shift).round(), q.double())


def test_the_kernel_reports_its_proposals_and_sector_changes():
    theory = U1((6, 6), beta=1.0)
    g = torch.Generator().manual_seed(2)
    x = 0.05 * torch.randn(64, 2, 6, 6, dtype=torch.float64, generator=g)
    jump = InstantonJump(theory)
    state, info = jump.step(KernelState(x), g)
    acc, q = info["jump_accepted"], info["jump_q"]
    assert set(q.tolist()) == {-1, 1} and 0 < acc.float().mean() < 1
    assert torch.equal(info["sector_change"], torch.where(acc, q.double(), torch.zeros(64, dtype=torch.float64)))
    delta_s = info["jump_delta_s"]
    assert delta_s.shape == (64,) and delta_s.dtype == torch.float64 and delta_s.min() > 0  # smooth: S grows
    assert torch.allclose(delta_s[acc], theory.action(state.x[acc]) - theory.action(x[acc]), atol=1e-10)
    assert torch.equal(state.x[~acc], x[~acc])
    assert torch.allclose(topological_charge(state.x), info["sector_change"], atol=1e-9)


@pytest.mark.parametrize("shape", [(4, 4), (6, 4), (5, 4)])
def test_the_exact_jump_uses_the_determinant_of_the_dense_dirac_operator(shape):
    """D̂ scattered from its two-hop paths: D̂ψ as the matrix-free EvenOddDirac gives it,
    log det D̂†D̂ = log det D†D of the dense D (odd extents use D itself); the jump's ΔS is the
    exact S_eff difference, also on the next jump (the current links' action kept)."""
    theory = Schwinger(shape, beta=1.0, kappa=0.26)
    g = torch.Generator().manual_seed(3)
    x = theory.random_field(6, g)
    assert torch.allclose(theory.log_det(x), theory.dense_log_det(x), rtol=0, atol=1e-11)
    # and its gradient (what training differentiates) is the dense one's
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    theory.log_det(a).sum().backward()
    theory.dense_log_det(b).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-10)
    if shape[0] % 2 == 0:
        psi = torch.randn(6, 2, theory.volume // 2, dtype=torch.complex128, generator=g)
        dense = (schur_matrix(x, theory.kappa) @ psi.flatten(1).unsqueeze(-1)).view_as(psi)
        assert torch.allclose(dense, EvenOddDirac(x, theory.kappa).apply(psi), rtol=0, atol=1e-13)
    jump = InstantonJump(theory, fermions="pseudofermion", even_odd=False)  # HMC's fermions do not matter
    for _ in range(2):
        state, info = jump.step(KernelState(x), g)
        acc = info["jump_accepted"]
        assert 0 < acc.sum() < 6 and not info["jump_cg_iterations"].any()  # no solve
        exact = theory.action(state.x[acc]) - theory.action(x[acc])
        assert torch.allclose(info["jump_delta_s"][acc], exact, rtol=0, atol=1e-10)
        x = state.x


@pytest.mark.parametrize("fermions,determinant", [("exact", "action"), ("pseudofermion", "action"),
                                                  ("pseudofermion", "exact")])
def test_jumps_keep_the_exact_distribution_on_a_ring_of_sectors(fermions, determinant):
    """Without translation the jumps of a smooth field x move along the ring x + n·s
    (s the instanton, n = Q); 3000 chains drawn from the exact p(n) ∝ e^{−S_eff(x + n·s)}
    (dense determinant) keep it for two jumps, with the exact determinant and with the
    pseudofermion heat bath (Schwinger 4×4, β = 1, κ = 0.2).  Jumps that ignored the
    determinant move p(0) by 10σ here."""
    theory = Schwinger((4, 4), beta=1.0, kappa=0.2)
    g = torch.Generator().manual_seed(5)
    x = 0.1 * torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=g)
    n = torch.arange(-4, 5)
    ring = x + n.view(-1, 1, 1, 1).double() * instanton_shift((4, 4), torch.ones(1), torch.zeros(1, 2, dtype=torch.long))
    p = torch.softmax(-theory.action(ring), 0)
    chains = 3000
    start = torch.multinomial(p, chains, replacement=True, generator=g)
    state, moved = KernelState(ring[start]), 0.0
    jump = InstantonJump(theory, translate=False, determinant=determinant, fermions=fermions)
    for _ in range(2):
        state, info = jump.step(state, g)
        moved += float(info["jump_accepted"].double().mean())
    end = torch.round(topological_charge(state.x) - topological_charge(x))
    for k, prob in zip(n.tolist(), p.tolist()):
        if prob > 0.003:
            freq = float((end == k).double().mean())
            assert abs(freq - prob) < 4 * math.sqrt(prob * (1 - prob) / chains), (k, freq, prob)
    assert moved > 0.08  # accepted: ~30 % a jump (exact), 6 % (pseudofermions), 20 % (even-odd ones)


def _run(theory, base, jump, path, n, chains=8, m=1, seed=1, thermalization=40):
    sampler = jump_chains(theory, base, jump, chains, 1, m, thermalization=thermalization, seed=seed,
                          progress=False)
    run_ensemble(sampler, theory=theory, path=path, n=n, config_text="", seed=seed, block=100,
                 progress=False, store_configs=False)
    return ensemble.open(path)


def _check_u1(theory, ens):
    exact = theory.exact()
    for name in ("plaquette", "chi_Q", "wilson_1x2"):
        r = gamma_method(ens.observable(name).T)
        assert abs(r.mean - exact[name]) < 4 * r.error, (name, str(r), exact[name])
        assert r.error < 0.06 * exact[name], (name, str(r))  # a test with teeth
    assert gamma_method(ens.observable("chi_Q").T).tau_int < 2
    assert 0.15 < ens.mcmc["jump_acceptance"].mean() < 0.5
    assert np.abs(ens.mcmc["sector_change"]).sum() > 500
    w = gamma_method(np.exp(-ens.mcmc["jump_delta_s"]).T)  # ⟨e^{−ΔS}⟩ = 1 for a symmetric proposal
    assert abs(w.mean - 1) < 4 * w.error


def test_hmc_with_jumps_is_exact_where_hmc_alone_is_frozen(tmp_path):
    """L = 8, β = 6: HMC alone has τ_int(Q) ≈ 190 trajectories (3200 samples: χ_Q off by a
    factor 3); with one jump per trajectory τ_int(Q) ≈ 1."""
    theory = U1((8, 8), beta=6.0)
    with _run(theory, HMC(theory, steps=4), InstantonJump(theory), tmp_path / "u.h5", 3200) as ens:
        _check_u1(theory, ens)
        assert ens.extra["hmc"]["tuned"] and "delta_h" in ens.mcmc


def test_heatbath_with_jumps_is_exact(tmp_path):
    heatbath = pytest.importorskip("latticeflow.mcmc.heatbath")
    theory = U1((8, 8), beta=6.0)
    base = heatbath.HeatbathKernel(theory, overrelaxation=0)
    with _run(theory, base, InstantonJump(theory), tmp_path / "h.h5", 2400, thermalization=20) as ens:
        _check_u1(theory, ens)
        assert ens.accepted.all() and "delta_h" not in ens.mcmc and ens.extra["base"] == "HeatbathKernel"


def _check_schwinger(ens, names=("plaquette", "chiral_condensate", "chi_Q")):
    for name in names:
        r, ref = gamma_method(ens.observable(name).T), REFERENCE[name]
        assert abs(r.mean - ref["mean"]) < 4 * math.hypot(r.error, ref["error"]), (name, str(r), ref)
        assert r.error < 0.05 * abs(ref["mean"]) + 0.005, (name, str(r))


def test_schwinger_jumps_with_the_exact_determinant_are_exact(tmp_path):
    """4×4, β = 1, κ = 0.25 (the reference of test_schwinger_exactness): three jumps per
    trajectory, accepted ~40 %; jumps that ignored the determinant move the condensate by
    20σ here."""
    theory = Schwinger((4, 4), beta=1.0, kappa=0.25)
    hmc, jump = HMC(theory, steps=4, fermions="exact"), InstantonJump(theory, fermions="exact")
    with _run(theory, hmc, jump, tmp_path / "s.h5", 960, m=3, thermalization=20) as ens:
        _check_schwinger(ens)
        assert 0.3 < ens.mcmc["jump_acceptance"].mean() < 0.6
        assert "jump_cg_iterations" not in ens.mcmc and "cg_iterations" not in ens.mcmc


def test_schwinger_jumps_with_pseudofermions_are_exact(tmp_path):
    theory = Schwinger((4, 4), beta=1.0, kappa=0.25)
    hmc = HMC(theory, steps=3, fermions="pseudofermion")
    jump = InstantonJump(theory, determinant="action")
    with _run(theory, hmc, jump, tmp_path / "p.h5", 240, chains=4, m=2, thermalization=10) as ens:
        _check_schwinger(ens, ("plaquette", "chiral_condensate"))
        assert ens.mcmc["jump_cg_iterations"].min() > 5 and ens.mcmc["cg_iterations"].min() > 5
        assert ens.mcmc["jump_acceptance"].max() > 0  # rare (~2 %): the pseudofermion estimate is noisy


def test_exact_jumps_with_pseudofermion_hmc_are_exact(tmp_path):
    """Pseudofermion HMC (even–odd) with exact-determinant jumps: the reference values within
    4σ, jumps accepted ~40 % as with exact-determinant HMC (~2 % with pseudofermion jumps)."""
    theory = Schwinger((4, 4), beta=1.0, kappa=0.25)
    hmc = HMC(theory, steps=3, fermions="pseudofermion")
    jump = InstantonJump(theory, fermions="pseudofermion")
    with _run(theory, hmc, jump, tmp_path / "e.h5", 480, chains=8, m=3, thermalization=10) as ens:
        _check_schwinger(ens)
        assert 0.3 < ens.mcmc["jump_acceptance"].mean() < 0.6
        assert not ens.mcmc["jump_cg_iterations"].any() and ens.mcmc["cg_iterations"].min() > 5
        assert ens.extra["jump_determinant"] == "exact"


def test_a_file_from_before_jump_determinant_continues_with_the_action():
    theory = Schwinger((4, 4), beta=1.0, kappa=0.2)
    chains = jump_chains(theory, HMC(theory, steps=2, fermions="exact"), InstantonJump(theory, fermions="exact"),
                         2, progress=False)
    settings = chains.save_settings()
    assert json.loads(bytes(settings.pop("jump_determinant")).decode()) == "exact"
    chains.load_settings(settings)  # written before the determinant was saved: "action"
    assert chains.jump.determinant == "action" and not chains.jump.exact
    with pytest.raises(ValueError, match="determinant must be one of"):
        InstantonJump(theory, determinant="pseudofermion")


MODELS = {
    "u1": '[theory]\nname = "u1"\nL = 4\nbeta = 2.0\n',
    "schwinger": '[theory]\nname = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2\n[hmc]\nsteps = 3\n',
}


@pytest.mark.parametrize("theory,base", [("u1", "hmc"), ("u1", "heatbath"), ("schwinger", "hmc")])
def test_the_cli_samples_and_resumes_bit_for_bit(tmp_path, capsys, theory, base):
    from latticeflow.cli import main

    if base == "heatbath":
        pytest.importorskip("latticeflow.mcmc.heatbath")
    model = tmp_path / "m.toml"
    model.write_text(MODELS[theory] + '[sample]\nsampler = "instanton-jump"\nchains = 2\nthermalization = 4\n'
                     f'block = 3\njumps_per_step = 2\nupdates_per_step = 2\njump_base = "{base}"\n')

    def sample(out, n, *more):
        assert main(["sample", str(model), "-n", str(n), "--out", str(tmp_path / out), "--quiet", *more]) == 0

    sample("a.h5", 24)
    sample("b.h5", 12)
    sample("b.h5", 24)  # extends (resumes) the file
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert a.sampler == "instanton-jump" and a.weights.column == "jump_delta_s" and not a.reweighted
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in a.mcmc:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name
        assert np.array_equal(a.mcmc["sector_change"], np.round(a.mcmc["sector_change"]))
        assert a.extra["jumps_per_step"] == 2 and ("delta_h" in a.mcmc) == (base == "hmc")
        if theory == "schwinger":  # the exact determinant, also under pseudofermion HMC: no solve
            assert not a.mcmc["jump_cg_iterations"].any() and a.extra["jump_determinant"] == "exact"
    sample("c.h5", 4, "--start", str(tmp_path / "a.h5"))
    with ensemble.open(tmp_path / "c.h5") as c:
        assert c.extra["start"]["path"] == str(tmp_path / "a.h5")
    assert main(["analyze", str(tmp_path / "a.h5")]) == 0
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "c.h5")]) == 0
    assert "instanton-jump" in capsys.readouterr().out
    model.write_text(model.read_text().replace("jumps_per_step = 2", "jumps_per_step = 3"))
    err = refuse(["sample", model, "-n", 30, "--out", tmp_path / "a.h5"], capsys)
    assert "made with sample.jumps_per_step = 2, this run has 3" in err
    if theory == "schwinger":
        model.write_text(model.read_text().replace("jumps_per_step = 3", 'jumps_per_step = 2\n'
                                                   'jump_determinant = "action"'))
        err = refuse(["sample", model, "-n", 30, "--out", tmp_path / "a.h5"], capsys)
        assert "made with sample.jump_determinant = 'exact', this run has 'action'" in err


def test_a_cold_start_starts_from_unit_links(tmp_path):
    from latticeflow.cli import main

    model = tmp_path / "m.toml"
    model.write_text(MODELS["u1"] + '[sample]\nsampler = "instanton-jump"\nchains = 2\nthermalization = 0\n'
                     'fresh_start = "cold"\n')
    assert main(["sample", str(model), "-n", "2", "--out", str(tmp_path / "a.h5"), "--quiet"]) == 0
    with ensemble.open(tmp_path / "a.h5") as ens:
        assert ens.observable("plaquette").min() > 0.5  # one trajectory and one jump from θ = 0


@pytest.mark.parametrize("theory,sample,words", [
    ('name = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0', "", "the phi4 theory has none"),
    ('name = "u1"\nL = 4\ndim = 3\nbeta = 1.0', "", "2D only, not for the u1 theory in 3D"),
    ('name = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2', 'jump_base = "heatbath"',
     "heatbath updates pure U(1) only; the schwinger theory has fermions"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "jumps_per_step = 0", "sample.jumps_per_step"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "overrelaxation = 2", "overrelaxation sweeps belong to jump_base"),
    ('name = "u1"\nL = 4\nbeta = 1.0', 'jump_determinant = "action"', "the u1 theory has no fermion determinant"),
    ('name = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2', 'jump_determinant = "det"', "sample.jump_determinant"),
])
def test_what_does_not_apply_is_refused_in_one_line(tmp_path, capsys, theory, sample, words):
    model = tmp_path / "m.toml"
    model.write_text(f'[theory]\n{theory}\n[sample]\nsampler = "instanton-jump"\n{sample}\n')
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert words in err and not (tmp_path / "x.h5").exists()


def test_the_jump_options_belong_to_the_jump_sampler(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[sample]\nsampler = "direct"\njumps_per_step = 2\n')
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert "sample.jumps_per_step: unknown key for the direct sampler" in err


def test_a_heatbath_base_without_the_heat_bath_kernel_is_refused(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "latticeflow.mcmc.heatbath", None)  # import fails
    model = tmp_path / "m.toml"
    model.write_text(MODELS["u1"] + '[sample]\nsampler = "instanton-jump"\njump_base = "heatbath"\n')
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert "heatbath needs the heat-bath kernel" in err and not (tmp_path / "x.h5").exists()


def test_the_exact_determinant_of_a_lattice_too_large_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("latticeflow.mcmc.jumps.EXACT_MAX_VOLUME", 8)
    model = tmp_path / "m.toml"
    model.write_text(MODELS["schwinger"] + '[sample]\nsampler = "instanton-jump"\nthermalization = 0\n')
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert "sample.jump_determinant: the exact determinant of an instanton jump is a dense LU, implemented up " \
           "to 8 sites; this lattice has 16" in err and not (tmp_path / "x.h5").exists()
    model.write_text(model.read_text() + 'jump_determinant = "action"\n')  # pseudofermions: any size
    from latticeflow.cli import main

    assert main(["sample", str(model), "-n", "2", "--out", str(tmp_path / "x.h5"), "--quiet"]) == 0
