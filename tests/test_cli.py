"""The command line: `exact`, `--version`, and one-line errors with exit code 2."""

import json
from pathlib import Path

import pytest

import latticeflow
from latticeflow.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_exact_json_for_the_tutorial_point(capsys):
    assert main(["exact", str(ROOT / "models" / "u1_L8_b2.toml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["theory"] == {"name": "u1", "shape": [8, 8], "beta": 2.0}
    assert out["observables"]["plaquette"] == pytest.approx(0.697775, abs=5e-7)
    assert out["observables"]["chi_Q"] == pytest.approx(0.0193640, abs=5e-8)


def test_exact_human_su2(tmp_path, capsys):
    model = tmp_path / "su2.toml"
    model.write_text('[theory]\nname = "sun"\nN = 2\nL = 8\nbeta = 2.0\n')
    assert main(["exact", str(model)]) == 0
    out = capsys.readouterr().out
    assert "plaquette" in out and "0.4331" in out


@pytest.mark.parametrize("content,needle", [
    ('[theory]\nname = "u1"\nL = 8\nbeta = -2.0\n', "theory.beta"),
    ('[theory]\nname = "qcd"\nL = 8\n', "theory.name"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_input_one_line_exit_2(tmp_path, cli, content, needle):
    model = tmp_path / "bad.toml"
    model.write_text(content)
    proc = cli("exact", model, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_version_and_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert latticeflow.__version__ in capsys.readouterr().out
    assert main(["exact", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_real_entry_points_behave_like_the_forked_commands(tmp_path):
    """The suite forks most commands from a pre-imported server (tests/forkserver.py); here
    the real ``python -m latticeflow`` and the installed ``latticeflow`` script give the same
    exit codes, output and one-line errors."""
    import os
    import shutil
    import subprocess
    import sys

    import forkserver

    good, bad = tmp_path / "u1.toml", tmp_path / "bad.toml"
    good.write_text('[theory]\nname = "u1"\nL = 4\nbeta = 1.0\n')
    bad.write_text('[theory]\nname = "u1"\nL = 4\nbeta = -1.0\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = shutil.which("latticeflow", path=str(Path(sys.executable).parent))
    module = [sys.executable, "-m", "latticeflow"]
    for start, model, code in ((module, good, 0), ([script] if script else module, bad, 2)):
        real = subprocess.run([*start, "exact", str(model), "--json"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        forked = forkserver.run(["exact", model, "--json"], cwd=tmp_path)
        assert real.returncode == forked.returncode == code, (start, real.stderr, forked.stderr)
        assert real.stdout == forked.stdout and real.stderr == forked.stderr
