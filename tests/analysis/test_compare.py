"""`compare`: the table has the promised columns, the plots are real PNGs."""

import json

import pytest

from conftest import run_cli
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.hmc_chains import HMCChains
from latticeflow.theories import U1


@pytest.fixture(scope="module")
def two_ensembles(tmp_path_factory):
    theory = U1((4, 4), 1.0)
    paths = []
    for integrator, seed in (("leapfrog", 1), ("omelyan", 2)):
        path = tmp_path_factory.mktemp("cmp") / f"{integrator}.h5"
        hmc = HMC(theory, integrator=integrator, steps=4)
        sampler = HMCChains(theory, hmc, n_chains=8, thermalization=20, seed=seed, progress=False)
        run_ensemble(sampler, theory=theory, path=path, n=1600, config_text="", seed=seed,
                     block=100, progress=False)
        paths.append(path)
    return paths


def test_compare_json_columns_and_plots(two_ensembles, tmp_path):
    out = tmp_path / "report"
    proc = run_cli("compare", *two_ensembles, "--out", out, "--json", "--labels", "lf,om")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert [e["label"] for e in table["ensembles"]] == ["lf", "om"]
    for e in table["ensembles"]:
        assert set(e) >= {"sampler", "n", "acceptance", "ess", "generation_seconds"}
        assert e["n"] == 1600 and e["generation_seconds"] > 0
    obs = table["observables"]
    assert set(obs) >= {"plaquette", "topological_charge", "chi_Q"}
    row = obs["plaquette"]
    assert row["exact"] == pytest.approx(0.4463941, rel=1e-5)
    for label in ("lf", "om"):
        r = row[label]
        assert set(r) >= {"mean", "error", "tau_int", "tau_int_error", "n_eff_per_config",
                          "n_eff_per_second", "deviation_sigma"}
        assert 0 < r["n_eff_per_config"] <= 1.5 and r["n_eff_per_second"] > 0
    markdown = (out / "comparison.md").read_text()
    assert "| observable | ensemble | mean | τ_int | N_eff/N | N_eff/s | exact | deviation |" in markdown
    for name in obs:
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_compare_refuses_different_theories(two_ensembles, tmp_path):
    model = tmp_path / "other.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 2.0\n[hmc]\nchains = 2\nthermalization = 5\n')
    other = tmp_path / "other.h5"
    assert run_cli("hmc", model, "-n", 40, "--out", other, "--quiet").returncode == 0
    proc = run_cli("compare", two_ensembles[0], other)
    assert proc.returncode == 2 and "different theories" in proc.stderr


def test_agreement_between_two_samplers():
    from latticeflow.analysis.report import agreement

    row = lambda m, e: {"mean": m, "error": e}  # noqa: E731
    table = {"observables": {
        "a": {"exact": None, "x": row(1.0, 0.1), "y": row(1.3, 0.1)},   # pull −2.1
        "b": {"exact": None, "x": row(2.0, 0.3), "y": row(2.0, 0.4)},   # pull 0
        "c": {"exact": None, "x": row(0.0, 0.0), "y": None},            # not compared
    }}
    out = agreement(table, "x", "y")
    assert out["n_compared"] == 2 and out["worst"] == "a" and out["consistent"]
    assert out["max_abs_pull"] == pytest.approx(0.3 / 0.1 / 2**0.5)
    table["observables"]["a"]["y"] = row(1.6, 0.1)  # pull −4.2
    assert not agreement(table, "x", "y")["consistent"]


@pytest.fixture(scope="module")
def short_ensemble(tmp_path_factory):
    """16 HMC chains of 3 trajectories each: far too short for any autocorrelation."""
    theory = U1((4, 4), 1.0)
    path = tmp_path_factory.mktemp("short") / "short.h5"
    sampler = HMCChains(theory, HMC(theory, steps=4), n_chains=16, thermalization=5, seed=3,
                        progress=False)
    run_ensemble(sampler, theory=theory, path=path, n=48, config_text="", seed=3, block=3,
                 progress=False)
    return path


def test_analyze_and_compare_mark_chains_that_are_too_short(short_ensemble, two_ensembles, tmp_path):
    proc = run_cli("analyze", short_ensemble, "--json")
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["observables"]["plaquette"]["too_short"] is True
    text = run_cli("analyze", short_ensemble)
    assert "Warning" not in text.stderr
    plaquette = next(line for line in text.stdout.splitlines() if line.strip().startswith("plaquette"))
    assert "*" in plaquette and "chains shorter than 20 tau_int" in text.stdout
    converged = json.loads(run_cli("analyze", two_ensembles[1], "--json").stdout)
    assert converged["observables"]["plaquette"]["too_short"] is False
    assert "*" not in run_cli("analyze", two_ensembles[1]).stdout
    proc = run_cli("compare", short_ensemble, two_ensembles[1], "--out", tmp_path / "cmp")
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "chains shorter than 20 tau_int" in md


def test_histogram_bins_for_integer_constant_and_continuous_data():
    """Q gets unit bins; χ_Q = Q²/V of chains all frozen at one |Q| is constant up to
    round-off and gets one bin (60 bins across a spread of 1e-17 cannot be drawn: the
    `run` of a frozen HMC baseline crashed there); anything else 60 bins."""
    import numpy as np

    from latticeflow.analysis.plots import histogram_bins

    assert list(histogram_bins(np.array([-1.0, 0.0, 2.0]))) == [-1.5, -0.5, 0.5, 1.5, 2.5]
    frozen = np.full(1000, 1 / 64) + np.random.default_rng(0).normal(0, 4e-17, 1000)
    bins = histogram_bins(frozen)
    assert len(bins) == 2 and bins[0] < frozen.min() and frozen.max() < bins[1]
    np.histogram(frozen, bins=bins)  # drawable
    assert histogram_bins(np.random.default_rng(1).normal(size=100)) == 60


def test_compare_out_draws_around_a_file_without_rows(two_ensembles, tmp_path):
    """A file whose first block never committed (0 rows) is listed in the tables and left out
    of the figures (compare --out crashed in the histogram after writing the tables)."""
    from latticeflow import ensemble

    theory = U1((4, 4), 1.0)
    empty = tmp_path / "empty.h5"
    ensemble.create(empty, theory=theory.params(), sampler="hmc", config_text="", seed=0, n_chains=8,
                    observables=list(theory.observable_names), mcmc=["accepted", "delta_h"],
                    field_shape=None).close()
    proc = run_cli("compare", empty, two_ensembles[0], "--out", tmp_path / "cmp", "--json")
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert [e["n"] for e in table["ensembles"]] == [0, 1600]
    assert (tmp_path / "cmp" / "plaquette.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
