"""Shared test helpers."""

import os
from pathlib import Path

import pytest

import forkserver

# One intra-op thread per process (subprocesses inherit it): the suite runs small tensors and
# many subprocesses on two cores, where torch's second thread costs more than it gives (the
# whole suite: 596 s with torch's default of two threads, 417 s with one).  Read by torch
# when it is first imported, which is after this file.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]

#: the smallest φ⁴ theory the CLI tests use (L = 4, broken phase)
PHI4_THEORY = """
[theory]
name = "phi4"
L = 4
m2 = -4.0
lam = 8.0
"""

#: that theory with a two-layer flow; add a [train] / [sample] table as a test needs
TINY_PHI4 = PHI4_THEORY + """
[flow]
layers = 2
hidden = [4]
"""


def run_cli(*args, cwd=None, timeout=600, env_extra=None):
    """Run ``latticeflow ARGS`` as a user would, as a process of its own with this checkout
    (forked from a pre-imported server, ``tests/forkserver.py``; ``test_cli.py`` also runs
    the real ``python -m latticeflow``)."""
    return forkserver.run(args, cwd=cwd, env=dict(os.environ, **(env_extra or {})), timeout=timeout)


@pytest.fixture(autouse=True, scope="session")
def commands_forked():
    """``latticeflow.faults`` (kills, damaged files) starts its commands from the fork server."""
    import latticeflow.faults

    latticeflow.faults.spawn = forkserver.spawn
    forkserver.SERVER.warm()
    yield


def refuse(argv, capsys) -> str:
    """Run ``latticeflow ARGV`` in-process; it must refuse with exit 2 and one line."""
    from latticeflow.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    return err


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


def shipped_acceptance(name: str, n: int = 512, seed: int = 0):
    """``(acceptance, flow, theory)`` of a shipped model ``models/NAME.{toml,pt}``: Metropolis
    independence acceptance of ``n`` fresh float32 proposals (``seed``), log w in the theory's
    precision (float64, complex128 links for SU(N))."""
    import torch

    from latticeflow.config import load_config
    from latticeflow.mcmc.independence import independence_acceptance
    from latticeflow.training import load_flow

    cfg = load_config(ROOT / "models" / f"{name}.toml")
    theory = cfg.theory.build()
    flow = load_flow(ROOT / "models" / f"{name}.pt", cfg)
    with torch.no_grad():
        x, log_q = flow.sample(n, generator=torch.Generator().manual_seed(seed))
        action = theory.action(theory.field_space.to_action_dtype(x))
    return independence_acceptance(-action - log_q.double(), rng=seed), flow, theory


@pytest.fixture
def shipped():
    return shipped_acceptance
