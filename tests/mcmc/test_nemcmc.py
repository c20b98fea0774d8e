"""Defect NE-MCMC (theories/defect.py, mcmc/nemcmc.py, the ``ne-mcmc`` sampler): the defect
force is the derivative of its action, the exact c = 0 draws follow their plaquette
distribution, log Z of the character expansion equals a brute-force integral, Jarzynski's
⟨e^{−W}⟩ = Z_1/Z_0 holds for heat-bath and HMC transports, the sampler is exact for pure U(1)
(vs the torus) and the Schwinger model (vs the exact-determinant reference), resumes bit for
bit from the command line, and bad input is refused in one line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import ive

from latticeflow import ensemble
from latticeflow.cli import main
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.nemcmc import ExactStarts, HeatbathUpdate, HMCUpdate, Transport
from latticeflow.theories import U1
from latticeflow.theories.defect import (Protocol, defect_action, defect_couplings, defect_force, draw_defect_links,
                                         free_energy_difference, log_partition, with_defect)
from latticeflow.theories.schwinger import Schwinger
from latticeflow.theories.u1 import plaquette_angles, random_gauge_transform
from latticeflow.theories import exact

from conftest import refuse

REFERENCE = json.loads((Path(__file__).parent / "schwinger_reference.json").read_text())["reference"]


def test_defect_forces_are_the_derivatives_of_the_defect_actions():
    g = torch.Generator().manual_seed(0)
    for theory in (U1((4, 5), beta=1.7), Schwinger((4, 4), beta=1.3, kappa=0.2)):
        defect = with_defect(theory, 3, c=0.3)
        x = theory.random_field(3, g)
        auto = defect.field_space.autograd_force(defect.action, x)
        assert torch.allclose(defect.force(x), auto, atol=1e-10), type(theory).__name__
        defect.set_c(1.0)  # c = 1 is the theory itself
        assert torch.allclose(defect.action(x), theory.action(x), atol=1e-10)
    beta_p = torch.rand(4, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(defect_force(x[:, :, :4, :4], beta_p[:4, :4]),
                          U1((4, 4), 1.0).field_space.autograd_force(lambda y: defect_action(y, beta_p[:4, :4]),
                                                                     x[:, :, :4, :4]), atol=1e-10)


def test_protocols_are_validated():
    assert Protocol.linear(4).values == (0.0, 0.25, 0.5, 0.75, 1.0) and Protocol([0, 0.3, 0.3, 1]).steps == 3
    for bad in ([0.0], [0.1, 1.0], [0.0, 0.9], [0.0, 0.6, 0.4, 1.0], [0.0, 1.5, 1.0], [0.0, float("nan"), 1.0]):
        with pytest.raises(ValueError):
            Protocol(bad)
    with pytest.raises(ValueError):
        Protocol.linear(0)
    assert defect_couplings((3, 4), 0.25, 2).tolist() == [[0.25, 0.25, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]


@pytest.mark.parametrize("c", [0.0, 0.5])
def test_exact_draws_follow_the_defect_plaquette_distribution(c):
    """c = 0: the defect plaquettes are uniform, the others von Mises(β) (⟨cos⟩ = I_1/I_0);
    c = 0.5 (the rejection step): ⟨cos θ_P⟩ = ∂ log Z/∂β_P of the character expansion."""
    beta, shape, n = 2.5, (4, 5), 20000
    beta_p = beta * defect_couplings(shape, c, 3).numpy()
    x = torch.from_numpy(draw_defect_links(beta_p, n, np.random.default_rng(1)))
    assert x.shape == (n, 2, 4, 5) and float(x.min()) >= 0 and float(x.max()) < 2 * math.pi
    cos = torch.cos(plaquette_angles(x)[:, 0]).numpy()
    on, off = cos[:, 0, :3].mean(1), np.concatenate([cos[:, 0, 3:], cos[:, 1:].reshape(n, -1)], 1).mean(1)

    def d_log_z(i, j, h=1e-4):  # ⟨cos θ_P⟩ = ∂ log Z/∂β_P
        up, down = beta_p.copy(), beta_p.copy()
        up[i, j] += h
        down[i, j] -= h
        return (log_partition(up) - log_partition(down)) / (2 * h)

    want_on = 0.0 if c == 0 else d_log_z(0, 1)
    want_off = ive(1, beta) / ive(0, beta) if c == 0 else d_log_z(2, 2)
    for got, want in ((on, want_on), (off, want_off)):
        assert abs(got.mean() - want) < 4 * got.std() / math.sqrt(n), (c, got.mean(), want)
    assert want_off - want_on > 0.1  # the defect is weaker: the two differ by many σ
    if c == 0:  # uniform on the defect: ⟨cos 2θ⟩ = 0 too
        assert abs((2 * cos[:, 0, :3] ** 2 - 1).mean()) < 4 / math.sqrt(2 * 3 * n)


def test_log_z_equals_a_brute_force_integral_and_the_torus_plaquette():
    """2×2 torus: the links of a maximal tree fixed to 0 (gauge), the other five integrated on
    a 12⁵ grid (trapezoid: exponentially accurate for these periodic integrands)."""
    m = 12
    grid = torch.stack(torch.meshgrid(*[torch.arange(m, dtype=torch.float64) * 2 * math.pi / m] * 5,
                                      indexing="ij")).reshape(5, -1).T
    x = torch.zeros(grid.shape[0], 2, 2, 2, dtype=torch.float64)
    x[:, 0, 0, 1], x[:, 0, 1, 0], x[:, 0, 1, 1], x[:, 1, 0, 1], x[:, 1, 1, 1] = grid.T
    for c, length in ((0.3, 1), (0.0, 2), (1.0, 1)):
        beta_p = 1.3 * defect_couplings((2, 2), c, length)
        brute = math.log(torch.exp(-defect_action(x, beta_p)).mean())
        assert abs(log_partition(beta_p.numpy()) - brute) < 1e-8, (c, length)
    beta, v, h = 3.0, 36, 1e-5  # d log Z / dβ = V ⟨cos θ_P⟩ of the torus
    slope = (log_partition(np.full((6, 6), beta + h)) - log_partition(np.full((6, 6), beta - h))) / (2 * h)
    assert abs(slope / v - exact.u1_plaquette(beta, v)) < 1e-8


@pytest.mark.parametrize("update", ["heatbath", "hmc"])
def test_jarzynski_mean_of_exp_minus_work_is_z1_over_z0(update):
    theory, n = U1((4, 4), beta=2.0), 800 if update == "heatbath" else 2000
    defect = with_defect(theory, 2)
    step = HeatbathUpdate(defect) if update == "heatbath" else HMCUpdate(HMC(defect, steps=4))
    transport = Transport(defect, Protocol.linear(3), step)
    g = torch.Generator().manual_seed(7)
    x, work, info = transport(ExactStarts(defect).propose(n, g)[0], g)
    w = torch.exp(-work).numpy()
    want = math.exp(-free_energy_difference(theory.shape, theory.beta, 2))
    sigma = w.std() / math.sqrt(n)
    assert abs(w.mean() - want) < 4 * sigma and sigma < 0.05 * want, (w.mean(), sigma, want)
    assert set(info) == {"sector_change"} | ({"update_acceptance"} if update == "hmc" else set())
    assert (info["sector_change"] != 0).any()  # the defect lets the charge change


def test_the_maps_hook_adds_their_action_change_to_the_work():
    """Gauge transformations as the maps of a transport (log|det J| = 0, S unchanged): the same
    work as without them (the heat bath is gauge covariant: the same plaquettes)."""
    theory = U1((4, 4), beta=2.0)
    defect = with_defect(theory, 2)
    gauges = [lambda y, s=s: (random_gauge_transform(y, torch.Generator().manual_seed(s)),
                              torch.zeros(y.shape[0], dtype=torch.float64)) for s in range(3)]
    works = []
    for maps in (None, gauges):
        g = torch.Generator().manual_seed(3)
        start = ExactStarts(defect).propose(16, g)[0]
        works.append(Transport(defect, Protocol.linear(3), HeatbathUpdate(defect), maps=maps)(start, g)[1])
    assert torch.allclose(works[0], works[1], atol=1e-9) and works[0].std() > 0.1


U1_MODEL = """
[theory]
name = "u1"
L = 4
beta = 2.0
[sample]
sampler = "ne-mcmc"
chains = 32
protocol_steps = 3
defect_length = 2
block = 30
seed = 3
"""


def test_u1_sampler_is_exact_and_analyze_reports_delta_f(tmp_path, capsys):
    model, out = tmp_path / "u1.toml", tmp_path / "u1.h5"
    model.write_text(U1_MODEL)
    assert main(["sample", str(model), "-n", "1920", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampler"] == "ne-mcmc" and 0.2 < summary["acceptance"] < 0.95 and 0.1 < summary["ess"] < 1
    for name in ("plaquette", "chi_Q"):
        r = summary["observables"][name]
        assert abs(r["mean"] - summary["exact"][name]) < 4 * r["error"], (name, r)
        assert r["error"] < 0.1 * summary["exact"][name], (name, r)
    f = summary["delta_f"]
    assert abs(f["mean"] - f["exact"]) < 4 * f["error"] < 0.2, f
    assert f["exact"] == pytest.approx(free_energy_difference((4, 4), 2.0, 2))
    with ensemble.open(out) as ens:
        assert (ens.weights.column, ens.reweighted) == ("log_weight", False)
        assert set(ens.mcmc) == {"accepted", "log_weight", "proposal_log_weight", "sector_change"}
        assert 0.02 < np.mean(ens.mcmc["sector_change"] != 0) < 0.9
    main(["analyze", str(out)])
    assert "Delta F = -log<exp(-W)> = " in capsys.readouterr().out


SCHWINGER_MODEL = """
[theory]
name = "schwinger"
L = 4
beta = 1.0
kappa = 0.25
[hmc]
steps = 4
fermions = "exact"
tune = false
[sample]
sampler = "ne-mcmc"
chains = 32
protocol_steps = 1
defect_length = 2
thermalization = 10
block = 20
seed = 2
"""


def test_schwinger_sampler_matches_the_exact_determinant_reference(tmp_path, capsys):
    model, out = tmp_path / "s.toml", tmp_path / "s.h5"
    model.write_text(SCHWINGER_MODEL)
    assert main(["sample", str(model), "-n", "640", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["acceptance"] > 0.3
    # chain starts: no Jarzynski estimate, and analyze says why
    assert summary["delta_f"]["mean"] is None and "Markov chain" in summary["delta_f"]["why"]
    assert main(["analyze", str(out)]) == 0
    assert "Delta F: not estimated" in capsys.readouterr().out
    for name in ("plaquette", "chiral_condensate", "chi_Q"):
        r, ref = summary["observables"][name], REFERENCE[name]
        sigma = math.hypot(r["error"], ref["error"])
        assert abs(r["mean"] - ref["mean"]) < 4 * sigma and r["error"] < 0.05 * abs(ref["mean"]) + 0.005, (name, r)
    with ensemble.open(out) as ens:
        assert {"update_acceptance", "prior_acceptance"} <= set(ens.mcmc)
        assert ens.mcmc["update_acceptance"].mean() > 0.6


@pytest.mark.parametrize("model,extra", [
    (U1_MODEL, "protocol = [0.0, 0.4, 1.0]\nchains = 4\nblock = 3\n"),
    (SCHWINGER_MODEL, "chains = 3\nblock = 2\nprior_updates = 2\nthermalization = 4\n"),
])
def test_a_resumed_file_equals_an_uninterrupted_one(tmp_path, model, extra):
    text = model.replace("chains = 32\n", "").replace("block = 30\n", "").replace("block = 20\n", "")
    text = text.replace("protocol_steps = 3\n", "")
    text = text.replace("tune = false", "tune = true").replace("thermalization = 10\n", "") + extra
    (tmp_path / "m.toml").write_text(text)
    sample = ["sample", str(tmp_path / "m.toml"), "--quiet", "--out"]
    assert main([*sample, str(tmp_path / "a.h5"), "-n", "24"]) == 0
    assert main([*sample, str(tmp_path / "b.h5"), "-n", "12"]) == 0
    assert main([*sample, str(tmp_path / "b.h5"), "-n", "24"]) == 0
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert np.array_equal(a.configs[:], b.configs[:])
        for name in a.mcmc:
            assert np.array_equal(a.mcmc[name], b.mcmc[name]), name
        assert a.extra == b.extra


@pytest.mark.parametrize("theory,sample,words", [
    ('name = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0', "", "not for the phi4 theory in 2D"),
    ('name = "u1"\nL = 4\ndim = 3\nbeta = 1.0', "", "not for the u1 theory in 3D"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "defect_length = 5", "sample.defect_length: the defect is a segment of 1"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "protocol = [0.0, 0.5]", "sample.protocol: a protocol starts at c = 0 and ends"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "protocol = [0.0, 1.0]\nprotocol_steps = 3", "sample.protocol_steps: 3 differs"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "prior_updates = 3", "sample.prior_updates: pure U(1) starts are exact"),
    ('name = "u1"\nL = 4\nbeta = 1.0', 'protocol_update = "hmc"\noverrelaxation = 1', "sample.overrelaxation: only"),
    ('name = "u1"\nL = 4\nbeta = 1.0', "protocol_steps = 0", "sample.protocol_steps: must be between 1"),
    ('name = "u1"\nL = 4\nbeta = 1.0', 'protocol_update = "metropolis"', "sample.protocol_update: must be one of"),
    ('name = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2', 'protocol_update = "heatbath"',
     "heatbath updates pure U(1) only; the schwinger theory has fermions"),
])
def test_bad_input_is_refused_in_one_line(tmp_path, capsys, theory, sample, words):
    model = tmp_path / "m.toml"
    model.write_text(f'[theory]\n{theory}\n[sample]\nsampler = "ne-mcmc"\n{sample}\n')
    assert words in refuse(["sample", model, "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert not (tmp_path / "x.h5").exists()
