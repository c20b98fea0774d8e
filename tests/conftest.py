"""Shared test helpers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=600, env_extra=None):
    """Run ``python -m latticeflow ARGS`` as a user would, with this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "latticeflow", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests use tiny tensors: on a small shared CPU, intra-op threads only add
    contention (10-50x slower), so every test runs torch on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
