"""latticeflow.analysis.export and `latticeflow export`: pyerrors Obs that agree with
latticeflow's own analysis, and CSV / NPZ / pyerrors JSON files that round-trip with their
provenance.

How closely pyerrors' Γ-method (S = 1.5) reproduces latticeflow's errors, measured on the
ensembles below and on larger ones (docs/export.md): the means agree to rounding; the errors
differ by ≤ 5 % on 4 HMC chains of 100 (≤ 3 % on 4 × 1000, tiny and L = 8 U(1)) and by
≤ 10 % on 400 reweighted i.i.d. flow samples (≤ 2 % on 4000).  Two conventions differ:
pyerrors takes each fluctuation from its own replica's mean (Wolff, and latticeflow, from the
common mean), and it floors τ_int(W) at ½ where latticeflow keeps a noisy τ_int(W) < ½ —
on i.i.d. data of 400 samples this alone is √(½ / 0.41) ≈ 1.10.  The tolerances below are
10 % (Markov chains) and 15 % (reweighted), with those numbers behind them.
"""

import gzip
import json
import warnings

import numpy as np
import pyerrors as pe
import pytest

import latticeflow
from latticeflow import ensemble
from latticeflow.analysis import gamma_method_derived, jackknife, reweighted_mean, to_pyerrors
from latticeflow.analysis.export import REWEIGHTING_FACTOR, provenance
from latticeflow.cli import main
from latticeflow.errors import LatticeflowError

from conftest import ROOT, refuse

TINY_U1 = """
[theory]
name = "u1"
L = 4
beta = 1.0

[hmc]
chains = 4
thermalization = 20
block = 100
seed = 3
"""


@pytest.fixture(scope="module")
def hmc_file(tmp_path_factory):
    """4 HMC chains × 100 trajectories of 2D U(1), L = 4, β = 1."""
    root = tmp_path_factory.mktemp("export")
    model = root / "tiny_u1.toml"
    model.write_text(TINY_U1)
    latticeflow.hmc(model, 400, out=root / "tiny_u1.h5", configs=False, progress=False)
    return root / "tiny_u1.h5"


@pytest.fixture(scope="module")
def iid_file(tmp_path_factory):
    """400 i.i.d. samples of the shipped U(1) flow (L = 8, β = 2), with log weights."""
    out = tmp_path_factory.mktemp("export_iid") / "u1_iid.h5"
    latticeflow.sample(ROOT / "models" / "u1_L8_b2.toml", 400, out=out, iid=True, configs=False,
                       progress=False)
    return out


def analysed(obs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        obs.gamma_method(S=1.5)  # latticeflow's S; pyerrors' default is 2
    return obs


def test_exported_obs_agree_with_analyze(hmc_file):
    summary = latticeflow.analyze(hmc_file)["observables"]
    with ensemble.open(hmc_file) as ens:
        obs = to_pyerrors(ens)
        assert not ens.reweighted and REWEIGHTING_FACTOR not in obs
    assert set(obs) == set(summary)
    for name, o in obs.items():
        assert o.names == [f"tiny_u1|r{c}" for c in range(4)] and o.N == 400
        analysed(o)
        ours = summary[name]
        assert o.value == pytest.approx(ours["mean"], rel=1e-12, abs=1e-15), name
        assert o.dvalue == pytest.approx(ours["error"], rel=0.10), name


def test_a_ratio_carries_the_correlation(hmc_file):
    """W(1×2)/plaquette: pyerrors' linearised error of the ratio is latticeflow's
    gamma_method_derived (and a jackknife) on the same data, not the uncorrelated sum."""
    with ensemble.open(hmc_file) as ens:
        obs = to_pyerrors(ens, observables=["plaquette", "wilson_1x2"])
        a, b = ens.observable("wilson_1x2").T, ens.observable("plaquette").T
    ratio = analysed(obs["wilson_1x2"] / obs["plaquette"])
    ours = gamma_method_derived(lambda x, y: x / y, [a, b])
    assert ratio.value == pytest.approx(ours.mean, rel=1e-12)
    assert ratio.dvalue == pytest.approx(ours.error, rel=0.10)
    _, jack = jackknife(lambda x, y: x / y, [a, b], n_bins=20)
    assert ratio.dvalue == pytest.approx(jack, rel=0.25)
    x, y = analysed(obs["wilson_1x2"]), analysed(obs["plaquette"])
    uncorrelated = abs(ratio.value) * np.hypot(x.dvalue / x.value, y.dvalue / y.value)
    assert uncorrelated > 1.2 * ratio.dvalue  # W(1×2) and the plaquette fluctuate together (1.32 here)
    assert analysed(obs["plaquette"] / obs["plaquette"]).dvalue == 0.0


def test_a_reweighted_file_gives_reweighted_obs(iid_file):
    with ensemble.open(iid_file) as ens:
        assert ens.reweighted
        obs = to_pyerrors(ens, name="flow")
        data = {k: v.T for k, v in ens.observables.items()}
        log_w = ens.log_weight.T
    weight = obs.pop(REWEIGHTING_FACTOR)
    assert weight.names == [f"flow|r{c}" for c in range(4)]
    assert np.exp(log_w - log_w.max()).mean() == pytest.approx(weight.value, rel=1e-12)
    for name, o in obs.items():
        assert o.reweighted
        ours = reweighted_mean(data[name], log_w)
        assert o.value == pytest.approx(ours.mean, rel=1e-12, abs=1e-15), name
        assert analysed(o).dvalue == pytest.approx(ours.error, rel=0.15), name
    # a derived quantity of reweighted Obs: χ_Q − ⟨Q⟩²/V, with both weights' fluctuations
    chi = analysed(obs["chi_Q"] - obs["topological_charge"] ** 2 / 64)
    assert chi.value == pytest.approx(obs["chi_Q"].value - obs["topological_charge"].value ** 2 / 64)
    assert chi.dvalue > 0


def test_select_observables_and_refuse_unknown_ones(hmc_file):
    with ensemble.open(hmc_file) as ens:
        assert list(to_pyerrors(ens, observables="plaquette")) == ["plaquette"]
        with pytest.raises(LatticeflowError, match=r"no observable 'nope' \(it has: .*plaquette"):
            to_pyerrors(ens, observables=["nope"])
        with pytest.raises(LatticeflowError, match="cannot name a pyerrors ensemble"):
            to_pyerrors(ens, name="a|b")


def test_pyerrors_json_round_trips_with_provenance(iid_file, tmp_path, capsys):
    out = tmp_path / "flow.json.gz"
    assert main(["export", str(iid_file), "--pyerrors", str(out), "--name", "u1flow"]) == 0
    assert "wrote" in capsys.readouterr().err
    with gzip.open(out, "rt") as fh:
        json.load(fh)  # plain gzipped JSON
    loaded = pe.input.json.load_json_dict(str(out), verbose=False, full_output=True)
    description, back = loaded["description"], loaded["obsdata"]
    assert description["theory"] == {"name": "u1", "shape": [8, 8], "beta": 2.0}
    assert description["sampler"] == "flow-iid" and description["reweighted"] == "true"
    assert description["source"] == str(iid_file) and "[flow]" in description["config"]
    assert description["exported_by"] == f"latticeflow {latticeflow.__version__}"
    with ensemble.open(iid_file) as ens:
        direct = to_pyerrors(ens, name="u1flow")
    assert set(back) == set(direct)
    for name, o in direct.items():
        assert back[name].names == o.names
        assert analysed(back[name]).value == pytest.approx(o.value, rel=1e-12)
        assert back[name].dvalue == pytest.approx(analysed(o).dvalue, rel=1e-10)


def test_csv_and_npz_round_trip_with_provenance(hmc_file, tmp_path, capsys):
    csv, npz = tmp_path / "out.csv", tmp_path / "out.npz"
    assert main(["export", str(hmc_file), "--csv", str(csv), "--npz", str(npz)]) == 0
    capsys.readouterr()
    with ensemble.open(hmc_file) as ens:
        obs, mcmc, meta = ens.observables, ens.mcmc, provenance(ens)
        config = ens.config_text
    # CSV: the column names, the provenance as comments, then (chain, step)-rows, chain-major
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["chain", "step", *obs, *mcmc]
    comments = [line for line in lines if line.startswith("#")]
    assert f"# theory: {meta['theory']}" in comments and "# sampler: hmc" in comments
    assert "# seed: 3" in comments and f"# source: {hmc_file}" in comments
    assert f"# exported_by: latticeflow {latticeflow.__version__}" in comments
    start = comments.index("# config:") + 1
    assert "\n".join(c[4:] for c in comments[start:]).strip() == config.strip()
    table = np.loadtxt(csv, delimiter=",", comments="#", skiprows=1)
    assert table.shape == (400, 2 + len(obs) + len(mcmc))
    assert np.array_equal(table[:, 0], np.repeat(np.arange(4), 100))
    assert np.array_equal(table[:, 1], np.tile(np.arange(100), 4))
    for k, name in enumerate([*obs, *mcmc], start=2):
        values = obs[name] if name in obs else mcmc[name]
        assert np.array_equal(table[:, k], values.T.reshape(-1).astype(np.float64)), name  # 17 digits: exact
    named = np.genfromtxt(csv, delimiter=",", comments="#", names=True)
    assert np.array_equal(named["plaquette"], obs["plaquette"].T.reshape(-1))
    # NPZ: the HDF5 layout, provenance as strings
    with np.load(npz) as f:
        for name, values in obs.items():
            assert np.array_equal(f[f"observables/{name}"], values)
        assert f["mcmc/accepted"].dtype == bool and np.array_equal(f["mcmc/delta_h"], mcmc["delta_h"])
        assert json.loads(str(f["provenance/theory"])) == {"name": "u1", "shape": [4, 4], "beta": 1.0}
        assert str(f["provenance/config"]) == config and str(f["provenance/sampler"]) == "hmc"


def test_cli_refusals_are_one_line_and_write_nothing(hmc_file, tmp_path, capsys, monkeypatch):
    assert "give at least one output" in refuse(["export", hmc_file], capsys)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "a_file is not a directory" in refuse(["export", hmc_file, "--csv", blocker / "out.csv"], capsys)
    assert "is a directory" in refuse(["export", hmc_file, "--npz", tmp_path], capsys)
    assert "also the ensemble file" in refuse(["export", hmc_file, "--csv", hmc_file], capsys)
    same = tmp_path / "x.out"
    assert "also the --csv output" in refuse(["export", hmc_file, "--csv", same, "--npz", same], capsys)
    csv = tmp_path / "ok.csv"
    assert "*.json.gz" in refuse(["export", hmc_file, "--csv", csv, "--pyerrors", tmp_path / "p.json"], capsys)
    assert "no such file" in refuse(["export", tmp_path / "missing.h5", "--csv", csv], capsys)
    assert "cannot name a pyerrors ensemble" in refuse(
        ["export", hmc_file, "--csv", csv, "--pyerrors", tmp_path / "p.json.gz", "--name", "a|b"], capsys)
    assert "give --pyerrors OUT.json.gz too" in refuse(["export", hmc_file, "--csv", csv, "--name", "x"], capsys)
    monkeypatch.setitem(__import__("sys").modules, "pyerrors", None)  # as if not installed
    err = refuse(["export", hmc_file, "--csv", csv, "--pyerrors", tmp_path / "p.json.gz"], capsys)
    assert "needs pyerrors: pip install pyerrors" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written, no temporaries


def test_exports_never_replace_the_input_another_ensemble_or_a_special_file(hmc_file, tmp_path, capsys):
    """Outputs are compared by their real paths and must be regular non-HDF5 files in an
    existing directory; the input and every refused target stay byte-identical."""
    import hashlib
    import os
    import shutil

    from conftest import refuse

    data = tmp_path / "d.h5"
    shutil.copy(hmc_file, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    (tmp_path / "here").symlink_to(tmp_path)
    (tmp_path / "l.h5").symlink_to(data)
    assert "also the ensemble file" in refuse(["export", data, "--csv", tmp_path / "here" / "d.h5"], capsys)
    assert "also the ensemble file" in refuse(["export", tmp_path / "l.h5", "--npz", data], capsys)
    assert "also the --csv output" in refuse(
        ["export", data, "--csv", tmp_path / "a.csv", "--npz", tmp_path / "here" / "a.csv"], capsys)
    other = tmp_path / "other.h5"
    shutil.copy(hmc_file, other)
    assert "is an HDF5 file" in refuse(["export", data, "--npz", other], capsys)
    os.mkfifo(tmp_path / "f.csv")
    assert "not a regular file" in refuse(["export", data, "--csv", tmp_path / "f.csv"], capsys)
    assert "does not exist" in refuse(
        ["export", data, "--csv", tmp_path / "ok.csv", "--npz", tmp_path / "newdir" / "x.npz"], capsys)
    assert not (tmp_path / "ok.csv").exists()  # refused before anything was written
    assert hashlib.sha256(data.read_bytes()).hexdigest() == digest
    assert (tmp_path / "f.csv").is_fifo() and hashlib.sha256(other.read_bytes()).hexdigest() != ""
