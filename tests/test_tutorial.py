"""docs/tutorial.py runs end to end as a plain script (no jupytext), small, from the
repository root, writing only into its output directory."""

import os
import subprocess
import sys

from conftest import ROOT


def test_tutorial_runs_as_a_script(tmp_path):
    out = tmp_path / "tutorial"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LATTICEFLOW_TUTORIAL_N="200",
               LATTICEFLOW_TUTORIAL_STEPS="2", LATTICEFLOW_TUTORIAL_OUT=str(out), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "tutorial.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("| topological_charge | hmc |", "tau_int(Q) direct", "plaquette (flow-iid):",
                 "hmc      sigma = "):
        assert line in proc.stdout, line
    for name in ("flow-mcmc.h5", "flow-iid.h5", "mixed.h5", "hmc.h5", "direct.h5", "hmc.json.gz", "train"):
        assert (out / name).exists(), name


def test_tutorial_is_jupytext_percent_format():
    text = (ROOT / "docs" / "tutorial.py").read_text()
    assert "format_name: percent" in text
    assert text.count("\n# %% [markdown]\n") >= 6 and text.count("\n# %%\n") >= 6
