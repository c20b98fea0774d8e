"""Hostile input and hostile machines: no traceback, no hang, no silently wrong answer, no
changed file.  The long version (many more kills and files) is ``benchmarks/faults.py``;
what is promised is in docs/reliability.md.

Commands run in-process through ``latticeflow.cli.main`` where a refusal is expected (fast),
and as subprocesses where a process must die (kills) or a file system must fill up.
"""

import contextlib
import random
import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latticeflow.cli import main
from latticeflow.faults import (damaged_copies, hostile_model_texts, kill_and_resume, run_command,
                                same_ensemble, sha256)

from conftest import refuse

TINY_U1 = """
[theory]
name = "u1"
L = 4
beta = 1.0

[flow]
layers = 2
bijection = "ncp"
components = 2
hidden = [4]

[train]
steps = 30
batch_size = 16
eval_every = 10
eval_batch = 32
checkpoint_every = 5
log_every = 1

[hmc]
chains = 2
thermalization = 10
steps = 4
block = 5

[sample]
chains = 2
batch_size = 32
block = 5
"""


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs mounted at ``where`` for the block (the test is skipped where mounting is not
    allowed)."""
    where.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here (needs root and mount rights)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)])


def five_commands(model: Path, tmp: Path):
    return [["exact", model], ["hmc", model, "-n", 10, "--out", tmp / "h.h5", "--quiet"],
            ["sample", model, "-n", 10, "--out", tmp / "s.h5", "--quiet"],
            ["train", model, "--out", tmp / "t", "--steps", 1, "--quiet"],
            ["run", model, "-n", 10, "--out", tmp / "r", "--quiet"]]


# --- model files --------------------------------------------------------------------------
@pytest.mark.parametrize("what,content,refusers", hostile_model_texts(),
                         ids=[w for w, _, _ in hostile_model_texts()])
def test_hostile_model_files_through_every_command(tmp_path, capsys, what, content, refusers):
    model = tmp_path / "m.toml"
    model.write_bytes(content)
    (tmp_path / "m.pt").write_bytes(b"")  # so that `sample` gets as far as the config
    for argv in five_commands(model, tmp_path):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err.strip()
        assert code in (0, 2), (what, argv, code, err)
        if code == 2:
            assert len(err.splitlines()) == 1 and "Traceback" not in err, (what, argv, err)
        assert code == 2 or argv[0] not in refusers, (what, argv, "should have been refused")
        if code == 2 and argv[0] in ("hmc", "sample"):
            assert not Path(argv[4]).exists(), (what, argv, "a refused run left a file behind")


_KEYS = {
    "theory": {"name": ['"u1"', '"phi4"', '"sun"', '"qcd"', "3"], "L": ["4", "0", "-4", "4.5", '"4"', "inf"],
               "beta": ["1.0", "-1.0", "nan", "inf", "0", "[1]"], "m2": ["-1.0", "nan"], "lam": ["1.0", "-inf"],
               "N": ["2", "4", "2.0"], "dim": ["2", "0", "1", "true"], "shape": ["[4, 4]", "[4, 0]", "[]", '["a"]']},
    "hmc": {"chains": ["2", "0", "-3", "1e9"], "steps": ["4", "0", "2.5"], "trajectory_length": ["1.0", "inf", "-1"],
            "integrator": ['"omelyan"', '"euler"'], "block": ["5", "0"], "seed": ["0", "-1"]},
    "train": {"lr": ["0.01", "inf", "nan", "-1"], "steps": ["3", "0"], "batch_size": ["4", "0"],
              "estimator": ['"path"', '"magic"']},
    "sample": {"chains": ["2", "0"], "dtype": ['"float32"', '"float16"'], "batch_size": ["8", "-8"]},
    "flow": {"layers": ["2", "0", "-1"], "bijection": ['"ncp"', '"spline"', '"affine"', '"nf"'],
             "components": ["2", "0"], "bound": ["inf", "2.0"], "z2": ["true", "1"], "hidden": ["[4]", "[0]", '"4"']},
}


@st.composite
def broken_model(draw):
    """A small model file with random keys, at least one of them invalid for sure."""
    lines = {"theory": {"name": '"u1"', "L": "4", "beta": "1.0"}}
    for section, keys in _KEYS.items():
        for key, values in keys.items():
            if draw(st.booleans()):
                lines.setdefault(section, {})[key] = draw(st.sampled_from(values))
    section = draw(st.sampled_from(sorted(_KEYS)))
    key = draw(st.sampled_from(sorted(_KEYS[section])))
    lines.setdefault(section, {})[key] = draw(st.sampled_from(["inf", "nan", '"?"', "[[]]"]))  # invalid for every key
    if draw(st.booleans()):
        lines.setdefault(section, {})["no_such_key"] = "1"
    return "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kv.items()) for s, kv in lines.items()) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=broken_model())
def test_fuzzed_broken_model_files_are_refused_by_every_command(tmp_path_factory, capsys, text):
    tmp = tmp_path_factory.mktemp("fuzz")
    model = tmp / "m.toml"
    model.write_text(text)
    for argv in five_commands(model, tmp):
        refuse(argv, capsys)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(["--chains", "--seed", "-n"]),
       value=st.sampled_from(["-2", "0", "-1", "abc", "1e9", "", "nan", "99999999999999999999999"]),
       command=st.sampled_from(["hmc", "sample"]))
def test_fuzzed_command_line_overrides_are_refused(tmp_path_factory, capsys, flag, value, command):
    tmp = tmp_path_factory.mktemp("args")
    model = tmp / "m.toml"
    model.write_text(TINY_U1)
    (tmp / "m.pt").write_bytes(b"not weights")
    argv = [command, model, "-n", "10", "--out", tmp / "x.h5", "--quiet", flag, value]
    if flag == "--seed" and value in ("0",):
        return
    refuse(argv, capsys)
    assert not (tmp / "x.h5").exists()


@pytest.mark.parametrize("edit,what", [
    ("L = 4", "L = 100000"), ("L = 4", "L = 2\ndim = 100"), ("chains = 2\nthermalization", "chains = 1000000000\nthermalization"),
])
def test_sizes_that_cannot_fit_are_refused_with_the_estimate(tmp_path, capsys, edit, what):
    model = tmp_path / "m.toml"
    without_flow = re.sub(r"\[flow\].*?(?=\n\[)", "", TINY_U1, flags=re.S)
    model.write_text(without_flow.replace(edit, what, 1))
    err = refuse(["hmc", model, "-n", 10, "--out", tmp_path / "h.h5", "--quiet"], capsys)
    assert "needs about" in err and "memory" in err and "GiB" in err, err
    assert len(err) < 300, err


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text(TINY_U1)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        for argv in (["hmc", model, "-n", 10, "--out", ro / "h.h5"], ["train", model, "--out", ro / "t"],
                     ["run", model, "-n", 10, "--out", ro / "r"]):
            err = refuse(argv, capsys)
            assert "cannot write there" in err or "Read-only" in err, err


# --- damaged ensembles --------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_ensembles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good")
    model = tmp / "u1.toml"
    model.write_text(TINY_U1)
    for n, name in ((40, "good.h5"), (60, "straight60.h5")):
        r = run_command(["hmc", model, "-n", n, "--out", tmp / name, "--quiet"])
        assert r.returncode == 0, r.stderr
    return model, tmp


def test_damaged_ensembles_are_refused_without_changing_them(good_ensembles, tmp_path, capsys):
    model, tmp = good_ensembles
    cases = damaged_copies(tmp / "good.h5", tmp_path / "damaged", random.Random(3))
    assert len(cases) >= 25
    for what, path in cases:
        before = sha256(path)
        for argv in (["analyze", path], ["compare", path, tmp / "good.h5"]):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code
            err = capsys.readouterr().err.strip()
            assert code in (0, 2) and "Traceback" not in err, (what, argv, err)
            if code == 2:
                assert len(err.splitlines()) == 1, (what, err)
            capsys.readouterr()
        code = main(["hmc", str(model), "-n", "60", "--out", str(path), "--quiet"])
        err = capsys.readouterr().err.strip()
        if code == 2:
            assert len(err.splitlines()) == 1 and "Traceback" not in err, (what, err)
            assert sha256(path) == before, f"{what}: a refused resume changed the file"
        else:  # accepted: then it must be exactly the uninterrupted run
            assert code == 0, (what, code, err)
            assert same_ensemble(tmp / "straight60.h5", path) == [], what


# --- kills ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["hmc", "sample", "train", "run"])
def test_kill_9_then_the_same_command_gives_the_uninterrupted_result(tmp_path, command):
    """SIGKILL at a random moment (fixed seed; two for hmc, whose runs are short), rerun the
    same command; the result equals an uninterrupted run bit for bit.  benchmarks/faults.py
    kills many more times."""
    model = tmp_path / "u1.toml"
    model.write_text(TINY_U1)
    weights = tmp_path / "trained"
    if command == "sample":
        r = run_command(["train", model, "--out", weights, "--quiet"])
        assert r.returncode == 0, r.stderr

    def args(out):
        return {"hmc": ["hmc", model, "-n", 600, "--out", out, "--quiet"],
                "sample": ["sample", weights, "-n", 4000, "--out", out, "--quiet"],
                "train": ["train", model, "--out", out, "--quiet"],
                "run": ["run", model, "-n", 400, "--out", out, "--quiet", "--train", "--baselines", "direct"]}[command]

    straight = tmp_path / ("straight.h5" if command in ("hmc", "sample") else "straight")
    t0 = time.monotonic()
    r = run_command(args(straight))
    duration = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    rng = random.Random(sum(map(ord, command)))
    kills = 0
    # until the planned kills have landed (a run can finish sooner than the straight one did)
    for k in range(4):
        if kills == (2 if command == "hmc" else 1):
            break
        out = tmp_path / (f"killed{k}.h5" if command in ("hmc", "sample") else f"killed{k}")
        code, rerun = kill_and_resume(args(out), rng.uniform(0.5, 0.85) * duration * 0.8**k)
        kills += code == -9
        if command == "train" and rerun.returncode == 2 and "already holds" in rerun.stderr:
            rerun = run_command(args(out) + ["--resume"])  # a checkpoint was written: resume it
        assert rerun.returncode == 0, (code, rerun.stderr)
        if command in ("hmc", "sample"):
            assert same_ensemble(straight, out) == []
        elif command == "train":
            _same_training(straight, out)
        else:
            for name in ("flow-mcmc.h5", "hmc.h5", "direct.h5"):
                assert same_ensemble(straight / name, out / name) == [], name
    assert kills >= 1, "no kill landed while the command was running"


def _same_training(a: Path, b: Path):
    import json

    import torch

    def lines(run):
        rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert lines(a) == lines(b)
    sa, sb = (torch.load(run / "model.pt", weights_only=True)["state_dict"] for run in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- a full disk ------------------------------------------------------------------------------
def test_full_disk_gives_one_line_keeps_committed_rows_and_resumes(tmp_path):
    model = tmp_path / "u1.toml"
    model.write_text(TINY_U1)
    with tmpfs(tmp_path / "small", "size=400k") as small:
        out = small / "h.h5"
        args = ["hmc", model, "-n", 4000, "--out", out, "--quiet"]
        full = run_command(args)
        assert full.returncode == 2, full.stderr
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and "disk" in lines[0] and "Traceback" not in full.stderr, full.stderr
        assert not [p for p in small.iterdir() if p.name.startswith(".") and "partial" in p.name]
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        again = run_command(args)
        assert again.returncode == 0, again.stderr
        straight = tmp_path / "straight.h5"
        assert run_command(["hmc", model, "-n", 4000, "--out", straight, "--quiet"]).returncode == 0
        assert same_ensemble(straight, out) == []


# --- diverging training -------------------------------------------------------------------
def test_diverging_training_stops_with_one_line_and_never_saves_non_finite_weights(tmp_path, capsys):
    import torch

    model = tmp_path / "m.toml"
    model.write_text(TINY_U1.replace("[train]\n", "[train]\nlr = 1e30\n").replace("steps = 30", "steps = 300"))
    code = main(["train", str(model), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "training diverged" in err[-1] and "Traceback" not in "\n".join(err), err
    assert not (tmp_path / "run" / "model.pt").exists()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values())
    # the last good weights still sample, exactly
    assert main(["sample", str(tmp_path / "run"), "-n", "20", "--quiet"]) == 0


@pytest.mark.parametrize("damage", ["garbage metrics line", "checkpoint without optimizer",
                                    "checkpoint with NaN weights", "checkpoint at step -5",
                                    "model.pt with an int config", "model.pt with a list state_dict"])
def test_damaged_training_directories_are_refused_in_one_line(tmp_path, capsys, damage):
    import torch

    model = tmp_path / "m.toml"
    model.write_text(TINY_U1)
    run = tmp_path / "run"
    assert main(["train", str(model), "--out", str(run), "--steps", "10", "--quiet"]) == 0
    capsys.readouterr()
    ckpt, weights = run / "checkpoint.pt", run / "model.pt"
    if damage == "garbage metrics line":
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write("garbage{\n[1, 2]\n")
        assert main(["train", str(model), "--out", str(run), "--resume", "--steps", "12", "--quiet"]) == 0
        return  # torn lines are dropped on resume
    if damage.startswith("checkpoint"):
        s = torch.load(ckpt, weights_only=True)
        if "optimizer" in damage:
            del s["optimizer"]
        elif "NaN" in damage:
            s["model"] = {k: v * float("nan") for k, v in s["model"].items()}
        else:
            s["step"] = -5
        torch.save(s, ckpt)
        refuse(["train", model, "--out", run, "--resume", "--steps", 12, "--quiet"], capsys)
        assert not any(torch.isnan(v).any() for v in torch.load(weights, weights_only=True)["state_dict"].values())
    else:
        s = torch.load(weights, weights_only=True)
        s["config" if "config" in damage else "state_dict"] = 5 if "config" in damage else [1, 2]
        torch.save(s, weights)
        refuse(["sample", run, "-n", 10, "--out", tmp_path / "x.h5", "--quiet"], capsys)


def test_python_api_refuses_bad_arguments_with_latticeflow_errors(tmp_path):
    import latticeflow

    model = tmp_path / "m.toml"
    model.write_text(TINY_U1)
    for call in (lambda: latticeflow.train(model, out=tmp_path / "t", steps=-1),
                 lambda: latticeflow.train(model, out=tmp_path / "t", steps=1.5),
                 lambda: latticeflow.hmc(None, 10), lambda: latticeflow.hmc(model, 10, out=5),
                 lambda: latticeflow.analyze(None), lambda: latticeflow.hmc(model, 0)):
        with pytest.raises(latticeflow.LatticeflowError):
            call()
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_default_output_works_from_a_fresh_directory(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.toml"
    model.write_text(TINY_U1)
    monkeypatch.chdir(tmp_path)
    assert main(["hmc", str(model), "-n", "10", "--quiet"]) == 0
    assert (tmp_path / "runs" / "m-hmc.h5").is_file()


def test_an_interrupt_swallowed_by_a_finaliser_is_not_reported():
    """A stop that lands in a weakref callback or __del__ is dropped by Python; the run still
    stops at the next safe point, and nothing ("Exception ignored ... Traceback") is printed."""
    import io
    import sys as _sys

    from latticeflow.interrupts import STOP_REQUESTED, check_stop, stop_on_signals

    class Finalised:
        def __del__(self):
            STOP_REQUESTED.set()
            raise KeyboardInterrupt

    err = io.StringIO()
    old, _sys.stderr = _sys.stderr, err
    try:
        with stop_on_signals():
            Finalised()  # dropped at once: its exception goes to sys.unraisablehook
            with pytest.raises(KeyboardInterrupt):
                check_stop()
    finally:
        _sys.stderr = old
        STOP_REQUESTED.clear()  # a stop left set would stop every later loop that checks it
    assert err.getvalue() == ""
