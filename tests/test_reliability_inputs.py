"""Hostile input, round three: a solver tolerance that would bias results, conflicting
options, inputs that are not regular files (a FIFO would hang), a byte-order mark, weights
that are a directory or a symbolic link loop, and keys that would do nothing.  (The lost
torchrun peer is in ``test_distributed.py``; the exactness of a loose force solver in
``mcmc/test_schwinger_exactness.py``.)  docs/reliability.md lists the promises."""

import os
import subprocess
import sys

import pytest

from latticeflow.cli import main
from latticeflow.config import parse_config

from conftest import ROOT, TINY_PHI4, refuse

SCHWINGER = """
[theory]
name = "schwinger"
L = 4
beta = 2.0
kappa = 0.24
[hmc]
chains = 2
thermalization = 2
steps = 3
"""

SU2 = """
[theory]
name = "sun"
N = 2
L = 4
beta = 2.0
[flow]
layers = 2
hidden = [4]
"""


@pytest.mark.parametrize("key,value,words", [
    ("cg_tolerance", "1e-300", "hmc.cg_tolerance: must be in [1e-14, 1)"),
    ("cg_tolerance", "1.0", "hmc.cg_tolerance: must be in [1e-14, 1)"),
    ("cg_action_tolerance", "0.9", "hmc.cg_action_tolerance: must be in [1e-14, 1e-8]"),
    ("cg_action_tolerance", "1e-6", "hmc.cg_action_tolerance: must be in [1e-14, 1e-8]"),
    ("cg_action_tolerance", "1e-20", "hmc.cg_action_tolerance: must be in [1e-14, 1e-8]"),
])
def test_solver_tolerances_that_bias_or_never_finish_are_refused(tmp_path, capsys, key, value, words):
    model = tmp_path / "s.toml"
    model.write_text(SCHWINGER + f"{key} = {value}\n")
    err = refuse(["hmc", model, "-n", 4, "--out", tmp_path / "h.h5", "--quiet"], capsys)
    assert words in err
    assert not (tmp_path / "h.h5").exists()


def test_a_loose_force_solver_keeps_the_strict_action_solver():
    """cg_tolerance is the force's alone: the Metropolis action is solved to
    cg_action_tolerance whatever the force uses (the chain's exactness in numbers is
    ``test_schwinger_exactness.py``)."""
    from latticeflow.mcmc.hmc import HMC

    cfg = parse_config(SCHWINGER + "cg_tolerance = 0.9\n")
    md = HMC.from_config(cfg.theory.build(), cfg.hmc).md
    assert (md.tolerance, md.action_tolerance) == (0.9, 1e-10)
    assert "cg_action_tolerance" in cfg.toml  # recorded in every file's effective config


def test_conflicting_sampler_options_are_refused(tmp_path, capsys):
    model = ROOT / "models" / "u1_L8_b2.toml"
    err = refuse(["sample", model, "-n", 8, "--sampler", "mixed", "--iid", "--out", tmp_path / "x.h5"], capsys)
    assert "--iid means --sampler flow-iid, which conflicts with --sampler mixed" in err
    assert not (tmp_path / "x.h5").exists()
    # the two spellings of the same sampler do not conflict
    assert main(["sample", str(model), "-n", "4", "--sampler", "flow-iid", "--iid", "--out",
                 str(tmp_path / "y.h5"), "--quiet", "--chains", "2"]) == 0


@pytest.mark.parametrize("sampler,key", [("flow-mcmc", "hmc_per_step = 3"), ("flow-iid", "flow_per_step = 2"),
                                         ("direct", "thermalization = 5"), ("mixed", None), ("flow-hmc", None)])
def test_common_keys_the_files_sampler_does_not_use_are_pointed_out(sampler, key):
    """A burn-in or a kernel mix the chosen sampler ignores is named (one model file often
    serves several samplers, so it is a note, not a refusal)."""
    from latticeflow.samplers import sampler_kind

    text = '[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[sample]\nsampler = "{}"\n{}\n'
    note = sampler_kind(sampler).idle_key_problem(parse_config(text.format(sampler, key or "")).sample)
    if key is None:  # the mixed kernel and flow HMC read them all
        note = sampler_kind(sampler).idle_key_problem(parse_config(text.format(
            sampler, "thermalization = 3" + ("\nhmc_per_step = 2" if sampler == "mixed" else ""))).sample)
        assert note is None
    else:
        assert note.startswith(f"sample.{key} was not used: the {sampler} sampler does not read it")


def test_an_idle_key_is_noted_by_sample_unless_the_sampler_came_from_the_command_line(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n'
                     '[sample]\nsampler = "direct"\nthermalization = 5\nchains = 2\n')
    assert main(["sample", str(model), "-n", "4", "--quiet", "--out", str(tmp_path / "a.h5")]) == 0
    err = capsys.readouterr().err
    assert "note: sample.thermalization = 5 was not used: the direct sampler does not read it (only mixed" in err
    mixed = tmp_path / "mixed.toml"
    mixed.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n'
                     '[sample]\nsampler = "mixed"\nhmc_per_step = 2\nthermalization = 3\nchains = 2\n')
    assert main(["sample", str(mixed), "-n", "4", "--sampler", "direct", "--out", str(tmp_path / "d.h5"),
                 "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("command", [["exact"], ["hmc", "-n", "4"], ["train", "--steps", "1"],
                                     ["sample", "-n", "4"], ["run", "-n", "40"]])
def test_a_fifo_as_model_file_is_refused_not_read(tmp_path, command):
    """Reading a FIFO blocks until someone writes to it: it is refused before it is opened
    (a subprocess, so that a regression hangs only until the timeout)."""
    fifo = tmp_path / "m.toml"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [command[0], str(fifo), *command[1:], "--out", str(tmp_path / "out")]
    if command[0] == "exact":
        argv = argv[:-2]
    done = subprocess.run([sys.executable, "-m", "latticeflow", *argv], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"latticeflow: error: {fifo}: is not a regular file (a FIFO, socket "
                                   "or device), not a TOML file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_weights_that_are_a_fifo_a_directory_or_a_link_loop_are_named(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text(TINY_PHI4)
    weights = tmp_path / "m.pt"
    cases = {"FIFO": lambda: os.mkfifo(weights), "directory": weights.mkdir,
             "loop": lambda: os.symlink(weights, weights)}
    words = {"FIFO": "is not a regular file (a FIFO, socket or device), not a weights file",
             "directory": "is a directory, not a weights file", "loop": "is a symbolic link loop, not a weights file"}
    for kind, make in cases.items():
        make()
        err = refuse(["sample", model, "-n", 4, "--out", tmp_path / "x.h5", "--quiet"], capsys)
        assert err == f"latticeflow: error: {weights}: {words[kind]}", kind
        if weights.is_dir() and not weights.is_symlink():
            weights.rmdir()
        else:
            weights.unlink()
    os.symlink(tmp_path / "gone.pt", weights)
    err = refuse(["sample", model, "-n", 4, "--out", tmp_path / "x.h5", "--quiet"], capsys)
    assert err.endswith("m.pt: is a symbolic link to nothing (its target is missing)")
    weights.unlink()
    err = refuse(["sample", model, "-n", 4, "--out", tmp_path / "x.h5", "--quiet"], capsys)
    assert "no shipped weights m.pt beside it" in err  # really absent: the hint to train them


def test_a_byte_order_mark_is_accepted(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_bytes(b"\xef\xbb\xbf" + (ROOT / "models" / "u1_L8_b2.toml").read_bytes())
    assert main(["exact", str(model), "--json"]) == 0
    assert '"plaquette"' in capsys.readouterr().out


@pytest.mark.parametrize("text,words", [
    (SU2 + 'loops = ["plaquette", "plaquette"]\n', "flow.loops: must be containing \"plaquette\""),
    (SU2 + 'loops = ["plaquette", "rectangle", "rectangle"]\n', "each once"),
    (TINY_PHI4 + "[train]\nanneal_from = 4.0\nanneal_coupling = \"lam\"\nanneal_steps = 0\n",
     "train.anneal_steps: must be >= 1 with anneal_from"),
    (TINY_PHI4 + "[train]\nanneal_steps = 50\n", "train.anneal_steps: has no effect without train.anneal_from"),
    (TINY_PHI4 + "[train]\nanneal_coupling = \"m2\"\n",
     "train.anneal_coupling: has no effect without train.anneal_from"),
])
def test_keys_that_would_do_nothing_are_refused(tmp_path, capsys, text, words):
    model = tmp_path / "m.toml"
    model.write_text(text)
    err = refuse(["train", model, "--out", tmp_path / "run", "--steps", 2, "--quiet"], capsys)
    assert words in err
    assert not (tmp_path / "run").exists()


def test_what_latticeflow_wrote_itself_still_loads():
    """Effective configurations list anneal_coupling and anneal_steps at their defaults, and
    runs made before duplicates were refused stored them: both still load."""
    cfg = parse_config(TINY_PHI4)
    assert parse_config(cfg.toml).train == cfg.train  # defaults are not "idle keys"
    old = parse_config(SU2 + 'loops = ["plaquette", "plaquette"]\n', legacy=True)
    assert old.flow.loops == ("plaquette",)


def test_continuing_a_file_with_configurations_without_them_is_refused_untouched(tmp_path, capsys):
    """`--no-configs` on a file that stores configurations was an internal error (exit 3)
    after the resume had rewritten the file; now one line, the file byte-identical."""
    import hashlib

    model = tmp_path / "u1.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[hmc]\nthermalization = 4\nchains = 2\n')
    assert main(["hmc", str(model), "-n", "20", "--out", str(tmp_path / "h.h5"), "--quiet"]) == 0
    capsys.readouterr()
    digest = hashlib.sha256((tmp_path / "h.h5").read_bytes()).hexdigest()
    err = refuse(["hmc", model, "-n", 40, "--out", tmp_path / "h.h5", "--no-configs", "--quiet"], capsys)
    assert "stores configurations and this run stores none" in err
    assert hashlib.sha256((tmp_path / "h.h5").read_bytes()).hexdigest() == digest


def test_unreadable_shipped_weights_are_refused_before_run_copies_them(tmp_path, capsys):
    """An empty .pt beside a model was copied into the run directory first, so the run stayed
    refused (naming the copy) after the shipped file was fixed."""
    import shutil

    model = tmp_path / "u.toml"
    shutil.copy(ROOT / "models" / "u1_L8_b2.toml", model)
    (tmp_path / "u.pt").write_bytes(b"")
    err = refuse(["run", model, "-n", 20, "--out", tmp_path / "r", "--quiet"], capsys)
    assert "u.pt: not a readable latticeflow model" in err and not (tmp_path / "r" / "model.pt").exists()


def test_extending_a_file_beyond_the_disk_is_refused_like_a_new_one(tmp_path, capsys):
    model = tmp_path / "u1.toml"
    model.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n[sample]\nsampler = "direct"\nchains = 2\n')
    assert main(["sample", str(model), "-n", "8", "--out", str(tmp_path / "d.h5"), "--quiet"]) == 0
    capsys.readouterr()
    err = refuse(["sample", model, "-n", 10**12, "--out", tmp_path / "d.h5", "--quiet"], capsys)
    assert "GiB" in err and "an ensemble of 1000000000000 configurations" in err
