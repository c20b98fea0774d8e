"""`latticeflow run` end to end on a tiny lattice: train, sample, HMC, compare, report."""

import json

import pytest

from conftest import run_cli

MODEL = """
description = "tiny free field for the pipeline test"

[theory]
name = "phi4"
L = 4
m2 = 1.0
lam = 0.0

[flow]
layers = 2
bijection = "affine"
hidden = [4]

[train]
steps = 40
batch_size = 128
lr = 0.01
eval_every = 20
eval_batch = 256
checkpoint_every = 20

[hmc]
chains = 4
thermalization = 20
block = 100

[sample]
chains = 4
batch_size = 1024
block = 250
"""


def test_run_end_to_end_and_resume(tmp_path):
    model = tmp_path / "tiny.toml"
    model.write_text(MODEL)
    out = tmp_path / "run"
    proc = run_cli("run", model, "-n", 2000, "--out", out, "--quiet", "--json",
                   env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    table = result["comparison"]
    assert [e["label"] for e in table["ensembles"]] == ["flow-mcmc", "hmc"]
    assert table["observables"]["chi2"]["exact"] == pytest.approx(0.5)
    for name in ("config.toml", "flow-mcmc.h5", "hmc.h5", "comparison.md", "comparison.json",
                 "report.md", "chi2.png", "train/model.pt", "train/training.png", "run.json"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "flow-MCMC vs HMC" in report and "![chi2](chi2.png)" in report
    assert "latticeflow run" in report
    # both samplers agree with the exact free field within 4σ
    for name in ("chi2", "phi2", "ising_energy"):
        for label in ("flow-mcmc", "hmc"):
            r = table["observables"][name][label]
            assert abs(r["deviation_sigma"]) < 4, (name, label, r)
    # resuming a finished run adds nothing and rewrites the report; a bigger -n extends it
    again = run_cli("run", model, "-n", 3000, "--resume", out, "--quiet", "--json")
    assert again.returncode == 0, again.stderr
    assert all(e["n"] == 3000 for e in json.loads(again.stdout)["comparison"]["ensembles"])


def test_run_refuses_bad_input(tmp_path):
    model = tmp_path / "nofl.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n')
    proc = run_cli("run", model)
    assert proc.returncode == 2 and "no [flow] table" in proc.stderr
    other = tmp_path / "tiny.toml"
    other.write_text(MODEL)
    proc = run_cli("run", other, "--resume", tmp_path / "nowhere")
    assert proc.returncode == 2 and "not a run directory" in proc.stderr


def test_run_with_the_mixed_kernel(tmp_path):
    """`[sample] sampler = "mixed"`: the report compares that sampler with HMC."""
    model = tmp_path / "tiny_mixed.toml"
    model.write_text(MODEL.replace("[sample]\n", '[sample]\nsampler = "mixed"\nthermalization = 20\n')
                     .replace("block = 250", "block = 100"))
    out = tmp_path / "run"
    proc = run_cli("run", model, "-n", 1600, "--out", out, "--quiet", "--json",
                   env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)["comparison"]
    assert [e["label"] for e in table["ensembles"]] == ["mixed", "hmc"]
    assert (out / "mixed.h5").is_file() and not (out / "flow-mcmc.h5").exists()
    report = (out / "report.md").read_text()
    assert "mixed HMC + flow kernel vs HMC" in report and "--out " + str(out / "mixed.h5") in report
    for name in ("chi2", "phi2"):
        r = table["observables"][name]["mixed"]
        assert abs(r["deviation_sigma"]) < 4, (name, r)
