"""The critical-slowing-down tables and figure from a fresh clone: `--replot --results` of the
committed runs redraws them without sampling, leaves the committed file as it is, and refuses
inputs that are not that run's (one line, exit code 2)."""

import json
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "critical_slowing_down.py"
L8 = ROOT / "docs" / "critical_slowing_down_L8.json"


def replot(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_replot_of_the_committed_l8_run(tmp_path):
    before = L8.read_bytes()
    proc = replot(ROOT / "sampling" / "u1_L8_scan.toml", "--out", tmp_path / "csd", "--replot",
                  "--results", L8)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "csd" / "table.md").read_text()
    assert "| 6 | mixed |" in table and "Against the targets" in table
    assert (tmp_path / "csd" / "critical_slowing_down.png").read_bytes()[:4] == b"\x89PNG"
    assert L8.read_bytes() == before


def test_replot_refuses_inputs_of_another_run(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    for args, words in (((ROOT / "sampling" / "u1_L16_scan.toml", "--results", L8), "holds L = [8]"),
                        ((ROOT / "sampling" / "u1_L8_scan.toml", "--results", tmp_path / "bad.json"),
                         "not a results file")):
        proc = replot(*args, "--out", tmp_path / "out", "--replot")
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_replot_of_the_schwinger_l16_and_snf_scaling_studies(tmp_path):
    """docs/schwinger.md ("L = 16, β = 6"), docs/nonequilibrium.md ("Scaling with the volume")
    and docs/flow_jumps.md (the scan along κ) from their committed results, without sampling."""
    for script, results, words in (
            ("schwinger_l16.py", "schwinger_l16.json", ("| HMC + exact-det jumps |", "sectors' bound", "m_eff(t)")),
            ("schwinger_l16.py", "schwinger_l16_b2.json", ("| flow-MCMC (independence) |", "| mixed (PF HMC + flow) |")),
            ("snf_scaling.py", "snf_scaling.json", ("| 32 | 4 |",)),
            ("jump_bound_scan.py", "jump_bound_scan.json", ("kappa = 0.26: jump acceptance 0.035",))):
        before = (ROOT / "docs" / results).read_bytes()
        figure = tmp_path / f"{script}.png"
        drawn = script != "jump_bound_scan.py"  # the scan prints a table only
        proc = subprocess.run([sys.executable, ROOT / "benchmarks" / script, "--replot", ROOT / "docs" / results,
                               *(["--figure", figure] if drawn else [])], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert all(w in proc.stdout for w in words), proc.stdout
        assert not drawn or figure.read_bytes()[:4] == b"\x89PNG"
        assert (ROOT / "docs" / results).read_bytes() == before


def test_the_schwinger_l16_study_summary_from_the_committed_results(tmp_path):
    """docs/schwinger.md ("The L = 16 study"): the table of every β and the probe, and the
    figure, from the committed results of all three points."""
    figure = tmp_path / "study.png"
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "schwinger_l16.py", "--study", ROOT / "docs",
                           "--figure", figure], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 2 |", "| 4 |", "| 6 |"))]
    assert len(rows) == 2 * 3 + 3, proc.stdout  # Q and condensate per β, then the probe per β
    assert "flow-MCMC (independence)" in proc.stdout and "`u1_L8_b6.pt`" in proc.stdout
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_the_whole_schwinger_l16_study_is_one_command(tmp_path, monkeypatch):
    """``--all DIR`` runs every β of the study with its budget, writes each point's results and
    figure, the probe and the summary into DIR (here with the sampling replaced by the
    committed results, so that only the plumbing is timed)."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    study = importlib.import_module("schwinger_l16")
    calls = []

    def run(out, budget, rounds, chains, seed, beta, kappa, only=None):
        calls.append((beta, kappa, budget, rounds, out.name))
        return json.loads((ROOT / "docs" / study.POINTS[beta]["json"]).read_text())["results"]

    monkeypatch.setattr(study, "run", run)
    monkeypatch.setattr(study, "probe", lambda: json.loads((ROOT / "docs" / study.PROBE_JSON).read_text()))
    monkeypatch.setattr(sys, "argv", ["schwinger_l16.py", "--all", str(tmp_path)])
    study.main()
    assert calls == [(6.0, 0.24, 420, 6, "schwinger_l16_b6"), (4.0, 0.255, 240, 4, "schwinger_l16_b4"),
                     (2.0, 0.26, 240, 4, "schwinger_l16_b2")]
    for point in study.POINTS.values():
        assert json.loads((tmp_path / point["json"]).read_text())["kappa"] == point["kappa"]
        assert (tmp_path / "images" / point["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "images" / "schwinger_l16_study.png").is_file() and (tmp_path / study.PROBE_JSON).is_file()
