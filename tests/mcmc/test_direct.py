"""The ``direct`` sampler of pure 2D U(1) (theories/u1_direct.py, mcmc/direct.py): the links
it builds have exactly the plaquettes it drew, its draws reproduce the exact torus values and
P(Q) within 4σ of their own errors (seeded), a resumed file equals an uninterrupted one,
and theories it cannot sample are refused in one line."""

import math

import numpy as np
import pytest
import torch

from latticeflow import ensemble
from latticeflow.analysis import gamma_method
from latticeflow.groups import principal_angle
from latticeflow.mcmc.direct import DirectSamples
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.theories import U1
from latticeflow.theories.u1 import plaquette_angles
from latticeflow.theories.u1_direct import draw_links, links_from_plaquettes

from conftest import refuse


def test_links_have_the_drawn_plaquettes_and_an_integer_charge():
    rng = np.random.default_rng(3)
    n, l0, l1 = 6, 4, 6
    p = rng.uniform(-math.pi, math.pi, (n, l0, l1))
    p[:, -1, -1] = principal_angle(torch.from_numpy(-p.reshape(n, -1)[:, :-1].sum(1))).numpy()
    p[1, 0, 0] += 2 * math.pi  # Σ p = 2π, not 0: the constraint holds mod 2π
    links = torch.from_numpy(links_from_plaquettes(p, rng.uniform(0, 2 * math.pi, (n, 2))))
    got = plaquette_angles(links)[:, 0].numpy()
    assert np.allclose(np.cos(got - p), 1.0, atol=1e-12)
    x, tries = draw_links((l0, l1), 1.5, 200, rng)
    q = U1((l0, l1), beta=1.5).observables(torch.from_numpy(x))["topological_charge"]
    assert torch.allclose(q, q.round(), atol=1e-9) and q.abs().max() >= 1  # several sectors
    assert x.min() >= 0 and x.max() < 2 * math.pi and np.all(tries >= 1)
    assert abs(np.cos(x).mean()) < 0.05  # the random gauge: every link is uniform on its own


@pytest.mark.parametrize("shape,beta", [((8, 8), 2.0), ((16, 16), 6.0), ((6, 10), 3.0)])
def test_direct_draws_are_exact(tmp_path, shape, beta):
    theory = U1(shape, beta=beta)
    sampler = DirectSamples(theory, n_chains=4, seed=11, store_configs=False)
    run_ensemble(sampler, theory=theory, path=tmp_path / "d.h5", n=20000, config_text="", seed=11,
                 block=1000, progress=False, store_configs=False)
    exact = theory.exact()
    with ensemble.open(tmp_path / "d.h5") as ens:
        for name in ("plaquette", "chi_Q", "wilson_1x2", "wilson_2x2"):
            r = gamma_method(ens.observable(name).T)
            assert abs(r.mean - exact[name]) < 4 * r.error, (name, str(r), exact[name])
            assert r.tau_int < 0.6  # independent draws
        q = np.rint(ens.observable("topological_charge")).ravel()
        assert ens.mcmc["tries"].min() >= 1 and ens.accepted.all()
    for charge, prob in theory.exact_distributions()["topological_charge"].items():
        if prob > 1e-3:
            freq, sigma = np.mean(q == charge), math.sqrt(prob * (1 - prob) / q.size)
            assert abs(freq - prob) < 4 * sigma, (charge, freq, prob)


def test_a_resumed_direct_file_equals_an_uninterrupted_one(tmp_path):
    theory = U1((4, 4), beta=1.0)

    def run(path, n):
        run_ensemble(DirectSamples(theory, 2, seed=5), theory=theory, path=path, n=n, config_text="",
                     seed=5, block=7, progress=False)

    run(tmp_path / "a.h5", 60)
    run(tmp_path / "b.h5", 30)
    run(tmp_path / "b.h5", 60)
    with ensemble.open(tmp_path / "a.h5") as a, ensemble.open(tmp_path / "b.h5") as b:
        assert np.array_equal(a.configs[:], b.configs[:])
        assert np.array_equal(a.mcmc["tries"], b.mcmc["tries"])


@pytest.mark.parametrize("theory,words", [
    ('name = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0', "no exact (direct) sampler is known for the phi4 theory"),
    ('name = "u1"\nL = 4\ndim = 3\nbeta = 1.0', "pure 2D U(1) only, not for the u1 theory in 3D"),
    ('name = "schwinger"\nL = 4\nbeta = 1.0\nkappa = 0.2', "not for the schwinger theory in 2D with fermions"),
])
def test_theories_without_a_direct_sampler_are_refused(tmp_path, capsys, theory, words):
    model = tmp_path / "m.toml"
    model.write_text(f"[theory]\n{theory}\n")
    err = refuse(["sample", model, "--sampler", "direct", "-n", 8, "--out", tmp_path / "x.h5"], capsys)
    assert words in err and not (tmp_path / "x.h5").exists()


def test_direct_has_no_chains_to_start(tmp_path, capsys):
    from latticeflow.cli import main

    model = tmp_path / "m.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[sample]\nsampler = "direct"\nchains = 2\n')
    assert main(["sample", str(model), "-n", "8", "--out", str(tmp_path / "a.h5"), "--quiet"]) == 0
    capsys.readouterr()
    err = refuse(["sample", model, "-n", 8, "--out", tmp_path / "b.h5", "--start", tmp_path / "a.h5"], capsys)
    assert "direct draws independent samples, it has no chains to start" in err
