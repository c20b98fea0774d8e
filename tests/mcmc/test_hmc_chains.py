"""`latticeflow hmc`: exact results from the command line, and kill/resume without loss or duplication."""

import json
import signal
import time

import h5py
import numpy as np

from latticeflow import ensemble
from latticeflow.theories import exact

import forkserver
from conftest import run_cli

U1_SMALL = """
[theory]
name = "u1"
L = 4
beta = 1.5

[hmc]
chains = 16
thermalization = 60
block = 50
seed = 7
"""


def test_hmc_then_analyze_matches_exact(tmp_path):
    model = tmp_path / "u1.toml"
    model.write_text(U1_SMALL)
    out = tmp_path / "u1.h5"
    proc = run_cli("hmc", model, "-n", 12000, "--out", out, "--quiet", "--no-configs")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("analyze", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["sampler"] == "hmc" and summary["n"] == 12000 and summary["ess"] is None
    assert 0.6 < summary["acceptance"] <= 1.0
    obs = summary["observables"]
    expected = {"plaquette": exact.u1_plaquette(1.5, 16),
                "chi_Q": exact.u1_topological_susceptibility(1.5, 16)}
    for name, value in expected.items():
        assert abs(obs[name]["mean"] - value) < 4 * obs[name]["error"], name
        assert obs[name]["tau_int"] >= 0.4 and obs[name]["tau_int_error"] > 0
    dh = summary["exp_minus_delta_h"]
    assert abs(dh["mean"] - 1) < 4 * dh["error"]


def _committed_rows(path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f.attrs.get("n_rows", 0))
    except OSError:
        return 0


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path):
    model = tmp_path / "u1.toml"
    model.write_text(U1_SMALL.replace("block = 50", "block = 10").replace("chains = 16", "chains = 4"))
    killed, straight = tmp_path / "killed.h5", tmp_path / "straight.h5"
    n = 4 * 400
    proc = forkserver.spawn(["hmc", model, "-n", n, "--out", killed, "--quiet"], capture=False)
    deadline = time.time() + 120
    while _committed_rows(killed) < 40 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = _committed_rows(killed)
    assert 0 < rows_at_kill < 400, "the run should be killed part-way"
    resumed = run_cli("hmc", model, "-n", n, "--out", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli("hmc", model, "-n", n, "--out", straight, "--quiet").returncode == 0
    with ensemble.open(killed) as a, ensemble.open(straight) as b:
        assert a.n == b.n == n
        # resuming restores fields, RNG and the tuned step size: the data are identical
        for name in ("plaquette", "topological_charge"):
            diff = np.flatnonzero(np.any(a.observable(name) != b.observable(name), axis=1))
            assert diff.size == 0, f"{name}: first differing row {diff[:1]}, killed at row {rows_at_kill}"
        assert np.array_equal(a.configs[-1], b.configs[-1])
    # the same command on a complete file adds nothing
    again = run_cli("hmc", model, "-n", n, "--out", killed, "--quiet")
    assert again.returncode == 0 and "0 new rows" in again.stderr


def test_resume_with_other_physics_is_refused(tmp_path):
    model = tmp_path / "u1.toml"
    model.write_text(U1_SMALL)
    out = tmp_path / "u1.h5"
    assert run_cli("hmc", model, "-n", 160, "--out", out, "--quiet").returncode == 0
    model.write_text(U1_SMALL.replace("beta = 1.5", "beta = 2.5"))
    proc = run_cli("hmc", model, "-n", 320, "--out", out, "--quiet")
    assert proc.returncode == 2
    assert "beta" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with ensemble.open(out) as ens:
        assert ens.n == 160  # untouched


def test_analyze_rejects_non_ensembles(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.arange(3)
    proc = run_cli("analyze", bad)
    assert proc.returncode == 2 and "not a latticeflow ensemble" in proc.stderr
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    proc = run_cli("analyze", text, "--json")
    assert proc.returncode == 2 and proc.stdout == ""


def test_sigterm_stops_cleanly_and_the_same_command_resumes(tmp_path):
    model = tmp_path / "u1.toml"
    model.write_text(U1_SMALL.replace("block = 50", "block = 10").replace("chains = 16", "chains = 4"))
    out = tmp_path / "term.h5"
    n = 4 * 400
    proc = forkserver.spawn(["hmc", model, "-n", n, "--out", out, "--quiet"])
    deadline = time.time() + 120
    while _committed_rows(out) < 40 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with ensemble.open(out) as ens:  # a readable file holding whole committed blocks
        assert 0 < ens.n_rows < 400 and ens.n_rows % 10 == 0
    assert run_cli("hmc", model, "-n", n, "--out", out, "--quiet").returncode == 0
    with ensemble.open(out) as ens:
        assert ens.n == n
