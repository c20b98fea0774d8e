"""The README's commands and Python example run as written (so they never drift)."""

import os
import re
import subprocess
import sys

from conftest import ROOT, run_cli

README = (ROOT / "README.md").read_text()


def _block(heading: str, language: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_quick_start_commands():
    first = _block("## Quick start", "bash")
    assert first.strip() == "pip install -e . && latticeflow run models/u1_L8_b2.toml"
    second = README.split("To run the test suite:", 1)[1]
    command = re.search(r"pip install -e '\.\[test\]' && (pytest[^\n]*)", second).group(1)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[test]'" in ci and f"\n{command}\n" in ci  # CI runs the README's command


def test_quick_start_run_completes(tmp_path):
    # the README's main command, with a smaller -n and an output folder of the test's own
    command = _block("## Quick start", "bash").split("&&", 1)[1].split()
    assert command[:2] == ["latticeflow", "run"]
    proc = run_cli(*command[1:], "-n", 800, "--out", tmp_path / "run", "--quiet", "--baselines", "direct",
                   cwd=ROOT, env_extra={"OMP_NUM_THREADS": "1"})  # ne-mcmc alone would add ~20 s
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "run" / "report.md").read_text()
    assert "flow-mcmc" in report and "hmc" in report
    assert (tmp_path / "run" / "topological_charge.png").is_file()


def test_python_example_runs(tmp_path):
    code = _block("## Python API", "python")
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chi2 (reweighted):" in proc.stdout
    assert (tmp_path / "runs" / "api-demo" / "iid.h5").is_file()
