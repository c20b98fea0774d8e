"""`latticeflow train` → `sample` → `analyze` end to end on a tiny φ⁴ model."""

import json
import shutil

import pytest

from conftest import PHI4_THEORY, run_cli

MODEL = PHI4_THEORY + """
[flow]
layers = 4
bijection = "affine"
hidden = [4]

[train]
steps = 30
batch_size = 64
eval_every = 15
eval_batch = 256
checkpoint_every = 15

[sample]
chains = 2
batch_size = 512
block = 200
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = root / "tiny.toml"
    model.write_text(MODEL)
    run = root / "run"
    proc = run_cli("train", model, "--out", run, "--quiet", "--json",
                   env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return model, run


def test_sample_from_run_dir_then_analyze(trained, tmp_path):
    model, run = trained
    proc = run_cli("sample", run, "-n", 2000, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = run / "flow-mcmc.h5"
    summary = json.loads(run_cli("analyze", out, "--json").stdout)
    assert summary["sampler"] == "flow-mcmc" and summary["n"] == 2000
    assert 0 < summary["acceptance"] <= 1 and 0 < summary["ess"] <= 1
    assert set(summary["observables"]) >= {"magnetization", "abs_magnetization", "chi2", "ising_energy"}
    # the same command again resumes and stops at N
    again = run_cli("sample", run, "-n", 3000, "--quiet")
    assert again.returncode == 0 and "continued" in again.stderr
    assert json.loads(run_cli("analyze", out, "--json").stdout)["n"] == 3000


def test_sample_iid_from_model_toml_with_weights_beside_it(trained, tmp_path):
    model, run = trained
    shipped = tmp_path / "tiny.toml"
    shutil.copy(model, shipped)
    shutil.copy(run / "model.pt", tmp_path / "tiny.pt")
    out = tmp_path / "iid.h5"
    proc = run_cli("sample", shipped, "-n", 1000, "--iid", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(run_cli("analyze", out, "--json").stdout)
    assert summary["sampler"] == "flow-iid" and summary["acceptance"] == 1.0
    assert summary["ess"] is not None and summary["observables"]["chi2"]["error"] > 0


def test_sample_errors(trained, tmp_path):
    model, _ = trained
    lone = tmp_path / "lone.toml"
    lone.write_text(MODEL)
    proc = run_cli("sample", lone, "-n", 10)
    assert proc.returncode == 2 and "no shipped weights" in proc.stderr
    proc = run_cli("sample", tmp_path, "-n", 10)
    assert proc.returncode == 2 and "not a training run directory" in proc.stderr


@pytest.mark.parametrize("kind", ["mixed", "flow-hmc"])
def test_sample_with_the_hmc_based_flow_samplers(trained, tmp_path, kind):
    """`--sampler` picks the sampler; the file records it and its columns; analyze reads it."""
    _, run = trained
    out = tmp_path / f"{kind}.h5"
    proc = run_cli("sample", run, "-n", 24, "--out", out, "--sampler", kind, "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("analyze", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["sampler"] == kind and summary["n"] == 24
    assert 0 <= summary["acceptance"] <= 1
    import latticeflow

    with latticeflow.ensemble.open(out) as ens:
        assert f'sampler = "{kind}"' in ens.config_text
        columns = set(ens.mcmc)
    want = {"mixed": {"accepted", "flow_acceptance", "hmc_acceptance", "delta_h", "log_weight",
                      "proposal_log_weight"}, "flow-hmc": {"accepted", "delta_h"}}[kind]
    assert columns == want
    # the same command again resumes at the target and adds nothing
    proc = run_cli("sample", run, "-n", 24, "--out", out, "--sampler", kind, "--quiet")
    assert proc.returncode == 0 and "0 new rows" in proc.stderr


def test_sample_refuses_an_unknown_sampler(trained, tmp_path):
    _, run = trained
    proc = run_cli("sample", run, "-n", 10, "--out", tmp_path / "x.h5", "--sampler", "gibbs")
    assert proc.returncode == 2 and "--sampler" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()
