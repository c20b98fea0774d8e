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
    assert [e["label"] for e in table["ensembles"]] == ["flow-mcmc", "hmc", "cluster"]  # every baseline
    assert table["observables"]["chi2"]["exact"] == pytest.approx(0.5)
    for name in ("config.toml", "flow-mcmc.h5", "hmc.h5", "cluster.h5", "comparison.md", "comparison.json",
                 "report.md", "chi2.png", "train/model.pt", "train/training.png", "run.json"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "flow-MCMC vs HMC" in report and "![chi2](chi2.png)" in report
    assert "latticeflow run" in report
    # the trained weights record their training time: what a run shipping them counts
    from latticeflow.training.run_files import training_seconds

    last = json.loads((out / "train" / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
    assert training_seconds(out / "train" / "model.pt") == pytest.approx(last, abs=1e-3)
    assert result["cost"]["training_seconds"] == pytest.approx(last, abs=1e-3)
    # both samplers agree with the exact free field within 4σ
    for name in ("chi2", "phi2", "ising_energy"):
        for label in ("flow-mcmc", "hmc", "cluster"):
            r = table["observables"][name][label]
            assert abs(r["deviation_sigma"]) < 4, (name, label, r)
    # resuming a finished run adds nothing and rewrites the report; a bigger -n extends it
    again = run_cli("run", model, "-n", 3000, "--resume", out, "--quiet", "--json")
    assert again.returncode == 0, again.stderr
    assert all(e["n"] == 3000 for e in json.loads(again.stdout)["comparison"]["ensembles"])


def test_a_run_counts_the_training_time_its_shipped_weights_record(tmp_path):
    """Shipped weights that record their training time (``model_file``) have it counted in the
    cost with training; weights without a record leave it unknown (no ratio with training)."""
    from latticeflow.config import load_config
    from latticeflow.files import atomic_save
    from latticeflow.flows import build_flow
    from latticeflow.training.run_files import model_file

    model = tmp_path / "tiny.toml"
    model.write_text(MODEL)
    cfg = load_config(model)
    flow = build_flow(cfg.theory.build(), cfg.flow)
    for seconds, run in ((123.0, "recorded"), (None, "unknown")):
        atomic_save(model_file(flow, cfg, seconds), tmp_path / "tiny.pt")
        proc = run_cli("run", model, "-n", 100, "--out", tmp_path / run, "--quiet", "--json", "--baselines", "none",
                       env_extra={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        cost = json.loads(proc.stdout)["cost"]
        assert cost["training_seconds"] == seconds
        if seconds is None:
            assert cost["ratio_with_training"] is None
        else:
            flow_cost, best = cost["flow_seconds_per_independent"], cost["best_seconds_per_independent"]
            assert cost["ratio_with_training"] == pytest.approx((seconds + 1e4 * flow_cost) / (1e4 * best))
            assert "123 (recorded in the shipped weights)" in (tmp_path / run / "report.md").read_text()


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
    proc = run_cli("run", model, "-n", 1600, "--out", out, "--quiet", "--json", "--baselines", "none",
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


def test_run_never_takes_over_a_training_directory(tmp_path):
    """A directory of `latticeflow train` (checkpoint, metrics, its own model.pt) is refused
    as a run directory, by --resume and by --out alike, and its weights are left alone;
    --out and --resume naming two directories, and a bad --train-minutes, are refused
    before any directory is made."""
    from latticeflow import study
    from latticeflow.errors import ConfigError, LatticeflowError

    model = tmp_path / "tiny.toml"
    model.write_text(MODEL)
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.toml").write_text(MODEL)
    (trained / "checkpoint.pt").write_bytes(b"checkpoint")
    (trained / "model.pt").write_bytes(b"trained weights")
    for kw in ({"resume": trained}, {"out": trained}):
        with pytest.raises(LatticeflowError, match="a training run directory"):
            study.prepare(model, **kw)
    assert (trained / "model.pt").read_bytes() == b"trained weights"
    with pytest.raises(LatticeflowError, match="different run directories"):
        study.prepare(model, out=tmp_path / "a", resume=tmp_path / "b")
    with pytest.raises(ConfigError, match="--train-minutes"):
        study.prepare(model, out=tmp_path / "c", train_minutes=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    proc = run_cli("run", model, "--resume", trained)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_a_resumed_run_keeps_the_weights_it_started_with(tmp_path):
    """The shipped weights are copied into the run once: if they change between a run and
    its resume, the ensemble keeps being sampled with the flow it started with."""
    import torch

    from latticeflow import pipeline, study
    from latticeflow.files import atomic_save
    from latticeflow.flows import build_flow
    from latticeflow.training.run_files import model_file

    model = tmp_path / "tiny.toml"
    model.write_text(MODEL)
    cfg, run_dir = study.prepare(model, out=tmp_path / "run")
    flow = build_flow(cfg.theory.build(), cfg.flow)
    atomic_save(model_file(flow, cfg), tmp_path / "tiny.pt")
    study.trained_flow(cfg, run_dir)
    started = (run_dir / "model.pt").read_bytes()
    with torch.no_grad():
        next(flow.parameters()).add_(1.0)
    atomic_save(model_file(flow, cfg), tmp_path / "tiny.pt")
    cfg, again = study.prepare(model, resume=run_dir)
    study.trained_flow(cfg, again)
    assert (run_dir / "model.pt").read_bytes() == started


def test_a_started_run_refuses_another_flow(tmp_path):
    """A run sampling its copy of the shipped weights refuses --train/--train-minutes (they
    would continue its ensemble with a new flow); a finished training refuses another
    --train-minutes; --out naming a directory with weights or ensembles of its own, but no
    run config, is refused (they would be adopted as the run's)."""
    from latticeflow import pipeline, study
    from latticeflow.errors import LatticeflowError
    from latticeflow.files import atomic_save
    from latticeflow.flows import build_flow
    from latticeflow.training.run_files import model_file, write_configs

    model = tmp_path / "tiny.toml"
    model.write_text(MODEL)
    cfg, run_dir = study.prepare(model, out=tmp_path / "run")
    atomic_save(model_file(build_flow(cfg.theory.build(), cfg.flow), cfg), tmp_path / "tiny.pt")
    study.trained_flow(cfg, run_dir)
    for kw in ({"retrain": True}, {"minutes": 1.0}):
        with pytest.raises(LatticeflowError, match="cannot change the flow of a run that has started"):
            study.trained_flow(cfg, run_dir, **kw)
    (tmp_path / "tiny.pt").unlink()  # the shipped weights gone: the run keeps its copy, no training
    assert "the run's copy" in study.trained_flow(cfg, run_dir)[1]
    assert not (run_dir / "train").exists()

    trained = tmp_path / "trained" / "train"  # a run whose flow finished training in 2 minutes
    trained.mkdir(parents=True)
    write_configs(trained, pipeline.override(cfg, "train", {"minutes": "--train-minutes"}, minutes=2.0))
    atomic_save(model_file(build_flow(cfg.theory.build(), cfg.flow), cfg), trained / "model.pt")
    study.trained_flow(cfg, trained.parent, minutes=2.0)  # the same command: its flow
    with pytest.raises(LatticeflowError, match="finished training"):
        study.trained_flow(cfg, trained.parent, minutes=5.0)

    for name in ("model.pt", "flow-mcmc.h5"):
        foreign = tmp_path / f"foreign-{name}"
        foreign.mkdir()
        (foreign / name).write_bytes(b"someone else's")
        with pytest.raises(LatticeflowError, match=f"holds {name} but is not a run directory"):
            study.prepare(model, out=foreign)
        assert sorted(p.name for p in foreign.iterdir()) == [name]



def test_a_run_interrupted_in_training_resumes_the_training(tmp_path, monkeypatch):
    """Ctrl-C in the training stage leaves a snapshot model.pt (marked interrupted.json): the
    same command continues the training to its end instead of sampling the snapshot."""
    from latticeflow import pipeline, study
    from latticeflow.theories import Phi4

    model = tmp_path / "tiny.toml"  # no weights beside it: the run trains its flow
    model.write_text(MODEL)
    cfg, run_dir = study.prepare(model, out=tmp_path / "run")
    calls, action = [0], Phi4.action

    def interrupt_at_call_11(self, x):
        calls[0] += 1
        if calls[0] == 11:
            raise KeyboardInterrupt
        return action(self, x)
    monkeypatch.setattr(Phi4, "action", interrupt_at_call_11)
    with pytest.raises(KeyboardInterrupt):
        study.trained_flow(cfg, run_dir, progress=False)
    assert (run_dir / "train" / "model.pt").is_file()
    monkeypatch.setattr(Phi4, "action", action)
    flow, how = study.trained_flow(cfg, run_dir, progress=False)
    assert "(40 steps, stopped by steps)" in how
    assert "trained in" in study.trained_flow(cfg, run_dir, progress=False)[1]  # finished: loaded
