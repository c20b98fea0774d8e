"""Tests of latticeflow/training/ and `latticeflow train`: the loss goes down, metrics
and run directory, exact resume, non-finite steps, time budget, path gradient, the Python
API and the CLI.  Tiny lattices (4x4), tiny flows, fixed seeds: each run takes ~1 s."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latticeflow
from latticeflow import cli
from latticeflow.config import load_config, parse_config
from latticeflow.errors import ConfigError, LatticeflowError
from latticeflow.flows import build_flow
from latticeflow.theories.phi4 import Phi4
from latticeflow import training
from latticeflow.training import MAX_BAD_STEPS, Trainer, kl_loss, load_flow, train

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"step", "loss", "log_z_bound", "ess", "acceptance", "lr", "seconds", "grad_norm",
        "skipped", "bad_steps", "rollbacks"}



def toml(steps=20, schedule="cosine", lam=8.0, layers=2, estimator="reparam", **train):
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in train.items())
    return (f'[theory]\nname = "phi4"\nL = 4\nm2 = -4.0\nlam = {lam}\n\n'
            f'[flow]\nlayers = {layers}\nhidden = [4]\n\n'
            f'[train]\nsteps = {steps}\nbatch_size = 32\nlr = 0.01\nschedule = "{schedule}"\n'
            f'estimator = "{estimator}"\nseed = 3\neval_batch = 64\n{extra}')


def cfg(**kw):
    return parse_config(toml(**kw))


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def params(flow):
    return torch.cat([p.detach().flatten() for p in flow.parameters()])


@pytest.fixture
def count_actions(monkeypatch):
    """Replace Phi4.action by ``hook(n, x)`` where n counts the calls from 1."""
    def install(hook):
        calls, original = [0], Phi4.action

        def action(self, x):
            calls[0] += 1
            return hook(calls[0], original(self, x))
        monkeypatch.setattr(Phi4, "action", action)
    return install


def test_short_run_lowers_the_loss_and_fills_the_run_directory(tmp_path):
    c = cfg(steps=30, layers=4, log_every=1, eval_every=10, checkpoint_every=15)
    result = training.train(c, out=tmp_path / "run", progress=False)
    records = metrics(result.run_dir)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all(KEYS <= set(r) for r in records)
    first, last = records[:5], records[-5:]
    assert sum(r["loss"] for r in last) / 5 < sum(r["loss"] for r in first) / 5 - 10
    assert all(r["log_z_bound"] == -r["loss"] for r in records)
    assert all(0 < r["ess"] <= 1 for r in records)
    accs = [r["acceptance"] for r in records if r["acceptance"] is not None]
    assert len(accs) == 3 and all(0 <= a <= 1 for a in accs)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.toml", "metrics.jsonl", "training.png", "checkpoint.pt", "model.pt"} <= files
    assert (result.run_dir / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result.run_dir / "config.toml").read_text() == c.text
    assert result.step == 30 and result.stopped == "steps" and result.metrics == records[-1]
    assert next(result.flow.parameters()).dtype == torch.float32


def test_resume_is_exact(tmp_path):
    # constant schedule with warmup: 10 steps planned, then extended to 20 on resume
    c = cfg(schedule="constant", warmup=3, log_every=1, eval_every=5)
    straight = training.train(c, out=tmp_path / "a", steps=20, progress=False)
    training.train(c, out=tmp_path / "b", steps=10, progress=False)
    resumed = training.train(c, out=tmp_path / "b", steps=20, resume=True, progress=False)
    assert torch.equal(params(straight.flow), params(resumed.flow))
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert drop(metrics(tmp_path / "a")) == drop(metrics(tmp_path / "b"))


def test_interrupted_cosine_run_resumes_exactly(tmp_path, count_actions):
    c = cfg(schedule="cosine", eval_every=100, log_every=1)
    straight = training.train(c, out=tmp_path / "a", progress=False)

    def interrupt_step_11(n, s):
        if n == 11:
            raise KeyboardInterrupt
        return s
    count_actions(interrupt_step_11)
    with pytest.raises(KeyboardInterrupt):
        training.train(c, out=tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 10
    # its model.pt is a snapshot, marked as such: `latticeflow run` resumes the training
    assert (tmp_path / "b" / "model.pt").is_file() and (tmp_path / "b" / "interrupted.json").is_file()
    count_actions(lambda n, s: s)
    resumed = training.train(c, out=tmp_path / "b", resume=True, progress=False)
    assert torch.equal(params(straight.flow), params(resumed.flow))
    assert not (tmp_path / "b" / "interrupted.json").exists()


def test_resume_refuses_other_physics_or_architecture(tmp_path):
    training.train(cfg(steps=2), out=tmp_path / "run", progress=False)
    with pytest.raises(LatticeflowError, match="theory.lam"):
        training.train(cfg(steps=4, lam=6.0), out=tmp_path / "run", resume=True, progress=False)
    with pytest.raises(LatticeflowError, match="flow.layers"):
        training.train(cfg(steps=4, layers=4), out=tmp_path / "run", resume=True, progress=False)
    with pytest.raises(LatticeflowError, match="already holds"):
        training.train(cfg(steps=4), out=tmp_path / "run", progress=False)
    with pytest.raises(LatticeflowError, match="no checkpoint"):
        training.train(cfg(steps=4), out=tmp_path / "empty", resume=True, progress=False)


def test_non_finite_steps_are_skipped_then_rolled_back(tmp_path, count_actions):
    trainer = Trainer(cfg(), tmp_path)
    for _ in range(3):
        assert not trainer.train_step()["skipped"]
    trainer.save_checkpoint()  # in-memory snapshot at step 3
    at_checkpoint = params(trainer.flow)
    trainer.train_step()
    moved = params(trainer.flow)
    assert not torch.equal(moved, at_checkpoint)

    count_actions(lambda n, s: torch.full_like(s, float("nan")))
    for k in range(1, MAX_BAD_STEPS):
        record = trainer.train_step()
        assert record["skipped"] and record["loss"] is None and record["ess"] is None
        assert torch.equal(params(trainer.flow), moved)  # no update from a NaN loss
    record = trainer.train_step()
    assert record["rolled_back_to"] == 3 and trainer.rollbacks == 1
    assert torch.equal(params(trainer.flow), at_checkpoint)
    assert trainer.bad_steps == MAX_BAD_STEPS and trainer.step == 4 + MAX_BAD_STEPS


def test_nan_gradients_are_skipped_and_logged(tmp_path, count_actions):
    # NaN on a few sites of one configuration of steps 3 and 4: the batch loss is NaN
    def poison(n, s):
        if n in (3, 4):
            s = s.clone()
            s[0] = float("nan")
        return s
    count_actions(poison)
    result = training.train(cfg(steps=8, log_every=100, eval_every=100), out=tmp_path / "run", progress=False)
    records = metrics(result.run_dir)
    assert [r["step"] for r in records if r["skipped"]] == [3, 4]
    assert records[-1]["bad_steps"] == 2 and records[-1]["rollbacks"] == 0
    assert torch.isfinite(params(result.flow)).all()


def test_time_budget_stops_cleanly(tmp_path):
    result = training.train(cfg(steps=10_000, minutes=1e-5), out=tmp_path / "run", progress=False)
    assert result.stopped == "time" and result.step < 10_000
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert result.metrics["acceptance"] is not None


def test_path_gradient_vanishes_when_the_flow_is_the_target():
    # target p = q_θ0 (action −log q_θ0): the path gradient is zero sample by sample,
    # the reparameterisation gradient is only zero on average (its score term).
    torch.manual_seed(0)
    flow = build_flow(Phi4((4, 4), m2=-4.0, lam=8.0), cfg().flow).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    target = training.frozen_twin(flow)

    class FlowTarget:
        def action(self, x):
            return -target.log_prob(x)

    grads = {}
    for estimator in ("reparam", "path"):
        flow.zero_grad()
        loss, log_q, action = kl_loss(flow, FlowTarget(), 16, torch.Generator().manual_seed(1), estimator)
        loss.backward()
        assert abs(loss.item()) < 1e-8  # KL = 0 and log Z = 0: both surrogates have value 0
        grads[estimator] = torch.cat([p.grad.flatten() for p in flow.parameters()])
    assert grads["path"].abs().max() < 1e-9
    assert grads["reparam"].abs().max() > 1e-3


def test_path_estimator_trains(tmp_path):
    result = training.train(cfg(steps=15, estimator="path", log_every=1), out=tmp_path / "run", progress=False)
    losses = [r["loss"] for r in metrics(result.run_dir)]
    assert losses[-1] < losses[0] - 10


def test_python_api_and_load_flow(tmp_path):
    model = tmp_path / "tiny.toml"
    model.write_text(toml(steps=3))
    result = latticeflow.train(model, out=tmp_path / "run", progress=False)
    assert result.run_dir == tmp_path / "run" and result.metrics["step"] == 3
    for source, config in [(tmp_path / "run", None), (tmp_path / "run" / "model.pt", model)]:
        flow = latticeflow.load_flow(source, config)
        assert torch.equal(params(flow), params(result.flow))
    with pytest.raises(LatticeflowError, match="architecture"):
        load_flow(tmp_path / "run", parse_config(toml(layers=4)))


def test_shipped_tutorial_weights_load_beside_their_toml():
    flow = load_flow(ROOT / "models" / "phi4_tutorial.pt")
    x, log_q = flow.sample(4)
    assert x.shape == (4, 8, 8) and torch.isfinite(log_q).all()
    # the same weights on a larger lattice (same architecture, other L): allowed
    text = (ROOT / "models" / "phi4_tutorial.toml").read_text().replace("L = 8\n", "L = 12\n")
    flow12 = load_flow(ROOT / "models" / "phi4_tutorial.pt", parse_config(text))
    assert flow12.sample(2)[0].shape == (2, 12, 12)


def test_cli_train_end_to_end(tmp_path, capsys):
    model = tmp_path / "tiny.toml"
    model.write_text(toml(steps=4))
    out = tmp_path / "run"
    assert cli.main(["train", str(model), "--out", str(out), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 4 and summary["run_dir"] == str(out) and KEYS <= set(summary["metrics"])
    assert cli.main(["train", str(model), "--out", str(out), "--steps", "6", "--resume", "--quiet"]) == 0
    assert "to step 6" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--resume"], "--out"),
    (["--resume", "--out", "{tmp}/nothing"], "no checkpoint.pt"),
    (["--steps", "0"], "--steps"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    model = tmp_path / "tiny.toml"
    model.write_text(toml(steps=2))
    argv = ["train", str(model)] + [a.format(tmp=tmp_path) for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_model_without_flow_table(tmp_path):
    model = tmp_path / "hmc_only.toml"
    model.write_text('[theory]\nname = "phi4"\nL = 4\nm2 = -4.0\nlam = 8.0\n')
    proc = subprocess.run([sys.executable, "-m", "latticeflow", "train", str(model), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "[flow]" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LatticeflowError, match="not a readable latticeflow checkpoint"):
        training.train(cfg(steps=2), out=tmp_path / "run", resume=True, progress=False)


def test_path_after_switches_estimator(tmp_path, monkeypatch):
    seen = []
    real = training.kl_loss

    def spy(flow, theory, batch, generator=None, estimator="reparam", twin=None):
        seen.append((estimator, twin is not None))
        return real(flow, theory, batch, generator, estimator, twin)

    monkeypatch.setattr(training.objectives, "kl_loss", spy)  # the reverse-KL objective calls it
    result = training.train(cfg(steps=6, path_after=4), out=tmp_path / "run", progress=False)
    assert result.step == 6
    assert [e for e, _ in seen] == ["reparam"] * 4 + ["path"] * 2
    assert all(has_twin for _, has_twin in seen)
    trainer = training.Trainer(cfg(steps=6), tmp_path / "plain")
    assert {trainer.estimator_at(s) for s in range(6)} == {"reparam"} and trainer.twin is None
    with pytest.raises(ConfigError, match="train.path_after"):
        cfg(path_after=-1)


def test_trainer_starts_from_given_weights(tmp_path):
    """``init`` (used to fine-tune shipped weights) replaces the fresh weights, twin included."""
    source = Trainer(cfg(estimator="path"), tmp_path / "a")
    with torch.no_grad():
        for p in source.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    init = source.flow.state_dict()
    trainer = Trainer(cfg(estimator="path"), tmp_path / "b", init=init)
    for name, value in trainer.flow.state_dict().items():
        assert torch.equal(value, init[name]), name
    for p_twin, p in zip(trainer.twin.parameters(), trainer.flow.parameters()):
        assert torch.equal(p_twin, p)


def test_train_init_transfers_weights_to_another_lattice(tmp_path):
    """``[train] init``: L = 4 weights start an L = 6 run at another coupling; the run
    directory records where it started."""
    first = train(cfg(steps=5), out=tmp_path / "small", progress=False)
    text = toml(steps=1).replace("lr = 0.01", "lr = 1e-12").replace("L = 4", "L = 6").replace("lam = 8.0", "lam = 6.0")
    model = tmp_path / "big.toml"
    model.write_text(text.replace("[train]\n", f'[train]\ninit = "{tmp_path / "small"}"\n'))
    second = train(load_config(model), out=tmp_path / "big", progress=False)
    for a, b in zip(params(first.flow), params(second.flow)):
        assert abs(float(a - b)) < 1e-6
    record = json.loads((tmp_path / "big" / "init.json").read_text())
    assert record["resolved"] == str((tmp_path / "small").resolve())
    assert record["theory"]["lam"] == 8.0 and record["theory"]["shape"] == [4, 4]
    assert len(record["sha256"]) == 64
    # the weights record the whole training: their own and that of the weights they started from
    from latticeflow.training.run_files import training_seconds

    first_seconds = training_seconds(tmp_path / "small" / "model.pt")
    assert first_seconds > 0 and record["training_seconds"] == first_seconds
    own = json.loads((tmp_path / "big" / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
    assert training_seconds(tmp_path / "big" / "model.pt") == pytest.approx(first_seconds + own, abs=1e-3)
    # a relative path is looked up beside the model file too
    (tmp_path / "small" / "model.pt").rename(tmp_path / "w.pt")
    model.write_text(text.replace("[train]\n", '[train]\ninit = "w.pt"\n'))
    assert train(load_config(model), out=tmp_path / "rel", progress=False).step == 1
    # started from weights that record no training time: the total is unknown, not undercounted
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    del state["training_seconds"]
    torch.save(state, tmp_path / "w.pt")
    assert train(load_config(model), out=tmp_path / "unknown", progress=False).step == 1
    assert training_seconds(tmp_path / "unknown" / "model.pt") is None


@pytest.mark.parametrize("init, message", [
    ("missing.pt", "train.init: no weights file or run directory 'missing.pt'"),
    ("other", "train.init: .*weights of a different architecture"),
    ("", "train.init: must be a non-empty path"),
])
def test_train_init_errors(tmp_path, init, message):
    train(cfg(steps=2, layers=4), out=tmp_path / "other", progress=False)
    model = tmp_path / "m.toml"
    model.write_text(toml(steps=1).replace("[train]\n", f'[train]\ninit = "{init}"\n'))
    with pytest.raises(LatticeflowError, match=message):
        train(load_config(model), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    # nor are a stale run's files touched when init is refused
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(LatticeflowError, match=message):
        train(load_config(model), out=tmp_path / "stale", progress=False)
    assert (tmp_path / "stale" / "metrics.jsonl").read_text() == "{}\n"


def test_coupling_schedule_anneals_the_training_target(tmp_path):
    """``anneal_from``: the loss at step t uses the linearly scheduled coupling; the
    schedule is part of the run (metrics record it, a resume continues it exactly)."""
    from latticeflow.training.schedule import CouplingSchedule

    c = cfg(steps=6, anneal_from=4.0, anneal_coupling="lam", anneal_steps=4)
    schedule = CouplingSchedule(c, c.theory.build())
    assert [schedule.value_at(t) for t in range(6)] == [4.0, 5.0, 6.0, 7.0, 8.0, 8.0]
    assert schedule.theory_at(1).lam == 5.0 and schedule.theory_at(5) is schedule.theory
    huge = cfg(steps=6, anneal_from=1e308, anneal_coupling="lam", anneal_steps=4)  # end − start overflows
    values = [CouplingSchedule(huge, huge.theory.build()).value_at(t) for t in range(5)]
    assert values == pytest.approx([1e308, 0.75e308, 0.5e308, 0.25e308, 8.0])
    c = cfg(steps=8, schedule="constant", anneal_from=4.0, anneal_coupling="lam", anneal_steps=4,
            log_every=1, eval_every=100)
    whole = train(c, out=tmp_path / "whole", steps=8, progress=False)
    records = metrics(tmp_path / "whole")
    assert [r["train_lam"] for r in records] == [4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 8.0, 8.0]
    train(c, out=tmp_path / "part", steps=3, progress=False)  # stops inside the ramp
    resumed = train(c, out=tmp_path / "part", steps=8, resume=True, progress=False)
    assert torch.equal(params(whole.flow), params(resumed.flow))
    # a schedule changes what is trained: the same run without it ends elsewhere
    plain = train(cfg(steps=8, schedule="constant", log_every=1, eval_every=100),
                  out=tmp_path / "plain", progress=False)
    assert not torch.equal(params(whole.flow), params(plain.flow))


@pytest.mark.parametrize("extra, message", [
    ({"anneal_from": 4.0, "anneal_coupling": "beta"}, "train.anneal_coupling: the phi4 theory has no coupling 'beta'"),
    ({"anneal_from": -1.0, "anneal_coupling": "lam"}, "train.anneal_from: theory.lam"),
])
def test_coupling_schedule_errors(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        train(cfg(steps=2, **extra), out=tmp_path / "run", progress=False)


def test_a_schedule_longer_than_the_training_is_refused(tmp_path):
    """A training that ends before the schedule reaches the model's coupling would train
    another theory than the one its weights are labelled with; the length that counts is
    the training's (--steps overrides train.steps)."""
    from latticeflow import pipeline

    short = cfg(steps=3, anneal_from=4.0, anneal_coupling="lam", anneal_steps=4)  # --steps may lengthen it
    with pytest.raises(ConfigError, match="train.anneal_steps: 4 is more than the 3 steps"):
        pipeline.train(short, out=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="train.anneal_steps: 4 is more than the 2 steps"):
        pipeline.train(cfg(steps=8, anneal_from=4.0, anneal_coupling="lam", anneal_steps=4),
                       out=tmp_path / "run", steps=2, progress=False)
    assert not (tmp_path / "run").exists()
    assert pipeline.train(short, out=tmp_path / "long", steps=4, progress=False).step == 4
