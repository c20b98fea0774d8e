"""Ensemble HDF5 files: round trips, resume, crash safety and the errors a user can meet."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from latticeflow import ensemble
from latticeflow.ensemble import deferred_signals, rows_needed
from latticeflow.errors import EnsembleError

REPO = Path(__file__).resolve().parents[1]
U1 = {"name": "u1", "shape": [4, 4], "beta": 2.0}
C = 3
FIELD = (2, 4, 4)


def _make(path, *, field_dtype=np.float64, field_shape=FIELD, sampler="hmc", mcmc=None):
    return ensemble.create(
        path, theory=U1, sampler=sampler, config_text='[theory]\nname = "u1"\n', seed=7,
        n_chains=C, observables=["plaquette", "row"],
        mcmc=mcmc or ["accepted", "delta_h", "n_steps"], field_shape=field_shape,
        field_dtype=field_dtype, extra={"step_size": 0.1},
    )


def _block(start, rows, dtype=np.float64, mcmc=("accepted", "delta_h", "n_steps")):
    """Rows start..start+rows-1 with values computable from (row, chain)."""
    t = np.arange(start, start + rows, dtype=np.float64)[:, None] + np.zeros(C)
    chain = np.arange(C)[None, :] + np.zeros((rows, 1))
    cols = {"accepted": (t + chain) % 2 == 0, "delta_h": 0.01 * t - chain,
            "log_weight": -t - 0.5 * chain, "n_steps": 10 + chain}
    cfg = (t + 0.1 * chain)[:, :, None, None, None] + np.linspace(0, 1, 32).reshape(FIELD)
    if np.dtype(dtype).kind == "c":
        cfg = cfg + 1j * (cfg ** 2)
    return dict(observables={"plaquette": np.cos(t + chain), "row": t},
                mcmc={k: cols[k] for k in mcmc}, configs=cfg.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_round_trip(tmp_path, dtype):
    path = tmp_path / "e.h5"
    with _make(path, field_dtype=dtype) as w:
        assert w.n_rows == 0 and w.state() == {} and w.extra == {"step_size": 0.1}
        for b in range(3):
            w.append(**_block(5 * b, 5, dtype), state={"x": np.ones(2)}, seconds=1.5)
    want = _block(0, 15, dtype)
    with ensemble.open(path) as e:
        assert (e.sampler, e.seed, e.version, e.n_chains, e.n_rows, e.n) == ("hmc", 7, 1, C, 15, 45)
        assert e.theory == U1 and e.config_text == '[theory]\nname = "u1"\n'
        assert e.generation_seconds == pytest.approx(4.5) and e.extra == {"step_size": 0.1}
        assert e.latticeflow_version and e.created.startswith("20")
        for k, v in want["observables"].items():
            np.testing.assert_array_equal(e.observables[k], v)
            np.testing.assert_array_equal(e.observable(k), v)
        for k, v in want["mcmc"].items():
            np.testing.assert_array_equal(e.mcmc[k], v)
        assert e.accepted.dtype == bool and e.log_weight is None
        np.testing.assert_array_equal(e.delta_h, want["mcmc"]["delta_h"])
        cfg, ref = e.configs, want["configs"]
        assert e.has_configs and len(cfg) == 15 and cfg.shape == ref.shape and cfg.dtype == dtype
        for key in [3, -1, slice(2, 9), slice(None, None, -4), slice(9, 2, -2), slice(4, 4),
                    (slice(1, 12, 3), 2), (7, 1), (-2, slice(0, 2), 0), [4, 0, 4],
                    np.arange(15) % 4 == 0, ([1, 2], [0, 2]), (Ellipsis, 1), (slice(0, 3), Ellipsis, 0)]:
            np.testing.assert_array_equal(cfg[key], ref[key], err_msg=str(key))
        with pytest.raises(IndexError):
            cfg[15]
        with pytest.raises(KeyError, match="no observable 'nope'"):
            e.observable("nope")
        assert "u1" in repr(e) and "3 chains × 15 rows" in repr(e)


def test_state_round_trip_reproduces_torch_rng(tmp_path):
    path = tmp_path / "e.h5"
    gen = torch.Generator().manual_seed(123)
    torch.rand(5, generator=gen)
    saved = gen.get_state()
    expected = torch.rand(8, generator=gen, dtype=torch.float64)
    with _make(path) as w:
        w.append(**_block(0, 2), state={"rng": saved.numpy(), "rng_bytes": bytes(saved.numpy()),
                                        "step": np.float64(0.25), "field": np.arange(6.0).reshape(2, 3)})
    with ensemble.open_for_append(path, theory=U1, sampler="hmc", n_chains=C) as w:
        state = w.state()
    assert state["rng"].dtype == np.uint8
    np.testing.assert_array_equal(state["rng_bytes"], state["rng"])
    assert float(state["step"]) == 0.25 and state["field"].shape == (2, 3)
    restored = torch.Generator()
    restored.set_state(torch.from_numpy(state["rng"]))
    assert torch.equal(torch.rand(8, generator=restored, dtype=torch.float64), expected)


def test_resume_continues_without_duplication(tmp_path):
    path = tmp_path / "e.h5"
    with _make(path) as w:
        w.append(**_block(0, 4), state={"x": np.zeros(3)}, seconds=1.0)
    with ensemble.open_for_append(path, theory={**U1, "shape": (4, 4)}, sampler="hmc", n_chains=C) as w:
        assert w.n_rows == 4 and w.n == 12
        w.append(**_block(4, 4), state={"x": np.ones(5)}, seconds=2.0, extra={"step_size": 0.2})
        w.append(**_block(8, 2), state={"x": np.ones(5)}, seconds=0.5)
    with ensemble.open(path) as e:
        assert e.n_rows == 10 and e.generation_seconds == pytest.approx(3.5)
        assert e.extra == {"step_size": 0.2}
        np.testing.assert_array_equal(e.observable("row")[:, 0], np.arange(10))
        np.testing.assert_array_equal(e.configs[:], _block(0, 10)["configs"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(theory={**U1, "beta": 3.0}), r"holds u1 with beta=2\.0 but the config asks for beta=3\.0"),
    (dict(theory={**U1, "shape": [8, 8]}), r"shape=\[4, 4\] but the config asks for shape=\[8, 8\]"),
    (dict(theory={"name": "phi4", "shape": [4, 4], "m2": -4.0, "lam": 8.0}),
     "holds u1 but the config asks for phi4"),
    (dict(sampler="flow-mcmc"), "sampler 'hmc', this run uses 'flow-mcmc'"),
    (dict(n_chains=4), "has 3 chains but this run asks for 4"),
])
def test_resume_refuses_mismatch(tmp_path, kwargs, message):
    path = tmp_path / "e.h5"
    with _make(path) as w:
        w.append(**_block(0, 2))
    args = dict(theory=U1, sampler="hmc", n_chains=C) | kwargs
    with pytest.raises(EnsembleError, match=message) as info:
        ensemble.open_for_append(path, **args)
    assert "\n" not in str(info.value)
    with ensemble.open(path) as e:  # refusing left the file untouched
        assert e.n_rows == 2


def test_uncommitted_rows_are_dropped_on_resume(tmp_path):
    path = tmp_path / "e.h5"
    with _make(path) as w:
        w.append(**_block(0, 4))
    with h5py.File(path, "r+") as f:  # a run killed after writing rows, before committing
        for name in ("observables/row", "mcmc/delta_h", "configs"):
            f[name].resize(11, axis=0)
            f[name][4:] = -99
    with ensemble.open(path) as e:
        assert e.n_rows == 4 and e.observable("row").shape == (4, C) and len(e.configs) == 4
        with pytest.raises(IndexError):
            e.configs[4]
    with ensemble.open_for_append(path, theory=U1, sampler="hmc", n_chains=C) as w:
        w.append(**_block(4, 3))
    with h5py.File(path, "r") as f:
        assert {f[n].shape[0] for n in ("observables/row", "mcmc/delta_h", "configs")} == {7}
    with ensemble.open(path) as e:
        np.testing.assert_array_equal(e.observable("row")[:, 1], np.arange(7))
        np.testing.assert_array_equal(e.configs[:], _block(0, 7)["configs"])


def test_a_file_that_never_committed_a_block_is_replaced_and_damage_is_not(tmp_path):
    """``holds_no_rows``: only an ensemble with no committed row and no state slot (its first
    block was interrupted or failed) is started afresh by the next run; n_rows damaged to 0
    on a file that committed two blocks is refused, not restarted (its rows would be lost)."""
    import hashlib

    empty, damaged = tmp_path / "empty.h5", tmp_path / "damaged.h5"
    with _make(empty):
        pass
    assert ensemble.holds_no_rows(empty)
    with _make(damaged) as w:
        w.append(**_block(0, 2), state={"x": np.zeros(3)})
        w.append(**_block(2, 2), state={"x": np.ones(3)})
    with h5py.File(damaged, "r+") as f:
        f.attrs["n_rows"] = 0
    before = hashlib.sha256(damaged.read_bytes()).hexdigest()
    assert not ensemble.holds_no_rows(damaged)
    with pytest.raises(EnsembleError, match="n_rows is 0 but it holds the state of two committed blocks"):
        ensemble.read_resume_state(damaged, theory=U1, sampler="hmc", n_chains=C)
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == before
    for other in (tmp_path, tmp_path / "missing.h5", REPO / "README.md"):
        assert not ensemble.holds_no_rows(other)


def test_state_of_an_uncommitted_block_is_ignored(tmp_path):
    """A run killed after writing a block's state but before moving n_rows resumes from the
    state of the committed rows (two state slots make the commit atomic)."""
    path = tmp_path / "e.h5"
    with _make(path) as w:
        w.append(**_block(0, 4), state={"step": np.array(4)})
        w.append(**_block(4, 2), state={"step": np.array(6)})
    with h5py.File(path, "r+") as f:  # the next block wrote its state, then the run died
        stale = "a" if int(f["state/b"].attrs["rows"]) == 6 else "b"
        del f["state"][stale]
        g = f["state"].create_group(stale)
        g["step"] = np.array(9)
        g.attrs["rows"] = 9
    with ensemble.open_for_append(path, theory=U1, sampler="hmc", n_chains=C) as w:
        assert w.n_rows == 6 and int(w.state()["step"]) == 6
        w.append(**_block(6, 1), state={"step": np.array(7)})
        assert int(w.state()["step"]) == 7


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from latticeflow import ensemble
    path, C, B = sys.argv[1], 3, 5
    theory = {"name": "phi4", "shape": [32, 32], "m2": -4.0, "lam": 8.0}
    w = ensemble.create(path, theory=theory, sampler="flow-mcmc", config_text="", seed=1,
                        n_chains=C, observables=["row"], mcmc=["accepted", "log_weight"],
                        field_shape=(32, 32))
    start = 0
    while True:
        t = np.arange(start, start + B, dtype=float)[:, None] + np.zeros(C)
        w.append({"row": t}, {"accepted": t > 0, "log_weight": -t},
                 t[:, :, None, None] + np.zeros((32, 32)), state={"last": t[-1]}, seconds=0.01)
        start += B
        print("committed", start, flush=True)
""")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_leaves_committed_rows_intact(tmp_path, signum):
    path, B, C_ = tmp_path / "killed.h5", 5, 3
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        committed, deadline = 0, time.monotonic() + 15
        while committed < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            committed += 1
        os.kill(proc.pid, signum)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert committed == 3 and proc.returncode == -signum
    with ensemble.open(path) as e:
        n = e.n_rows
        assert n >= 3 * B and n % B == 0
        t = np.arange(n, dtype=float)[:, None] + np.zeros(C_)
        np.testing.assert_array_equal(e.observable("row"), t)
        np.testing.assert_array_equal(e.log_weight, -t)
        np.testing.assert_array_equal(e.configs[n - 1], np.full((C_, 32, 32), n - 1.0))
    theory = {"name": "phi4", "shape": [32, 32], "m2": -4.0, "lam": 8.0}
    with ensemble.open_for_append(path, theory=theory, sampler="flow-mcmc", n_chains=C_) as w:
        assert float(w.state()["last"][0]) == n - 1
        t = np.arange(n, n + B, dtype=float)[:, None] + np.zeros(C_)
        w.append({"row": t}, {"accepted": t > 0, "log_weight": -t}, np.zeros((B, C_, 32, 32)))
    with ensemble.open(path) as e:
        np.testing.assert_array_equal(e.observable("row")[:, 2], np.arange(n + B))


def test_deferred_signals_delivers_after_the_block():
    # Python's own SIGINT handler, whatever this process inherited (a shell that starts a command
    # in the background without job control makes it ignore SIGINT)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with deferred_signals():
                # to this thread: os.kill may hand the signal to another thread of the process
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                time.sleep(0.01)
                done.append(True)
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_without_configs(tmp_path):
    path = tmp_path / "e.h5"
    with _make(path, field_shape=None, sampler="flow-iid", mcmc=["accepted", "log_weight"]) as w:
        block = _block(0, 6, mcmc=("accepted", "log_weight"))
        w.append(block["observables"], block["mcmc"], configs=None)
    with ensemble.open(path) as e:
        assert not e.has_configs and e.configs is None and e.n == 18
        assert e.delta_h is None
        np.testing.assert_array_equal(e.log_weight, block["mcmc"]["log_weight"])
        assert "not stored" in repr(e)


def test_bad_arguments(tmp_path):
    path = tmp_path / "e.h5"
    with pytest.raises(ValueError, match="must include delta_h"):
        _make(path, mcmc=["accepted"])
    with pytest.raises(ValueError, match="field_dtype"):
        _make(path, field_dtype=np.int32)
    assert not path.exists()
    with _make(path) as w:
        good = _block(0, 2)
        with pytest.raises(ValueError, match=r"observables/row: expected shape \(2, 3\)"):
            w.append({**good["observables"], "row": np.zeros((2, 4))}, good["mcmc"], good["configs"])
        with pytest.raises(ValueError, match=r"missing \['row'\]"):
            w.append({"plaquette": np.zeros((2, C))}, good["mcmc"], good["configs"])
        with pytest.raises(ValueError, match="configs: expected shape"):
            w.append(good["observables"], good["mcmc"], good["configs"][:, :, 0])
        with pytest.raises(ValueError, match="needs configs"):
            w.append(good["observables"], good["mcmc"], None)
        assert w.n_rows == 0
    with pytest.raises(EnsembleError, match="already exists"):
        _make(path)


def test_rows_needed():
    assert [rows_needed(n, 4) for n in (0, 1, 4, 5, 100)] == [0, 1, 1, 2, 25]
    with pytest.raises(ValueError):
        rows_needed(5, 0)


def test_files_that_are_not_ensembles(tmp_path):
    with pytest.raises(EnsembleError, match="no such file"):
        ensemble.open(tmp_path / "missing.h5")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(EnsembleError, match="not an HDF5 file"):
        ensemble.open(tmp_path / "notes.txt")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(EnsembleError, match="plain.h5 is not a latticeflow ensemble"):
        ensemble.open(tmp_path / "plain.h5")
    with pytest.raises(EnsembleError, match="not a latticeflow ensemble"):
        ensemble.open_for_append(tmp_path / "plain.h5", theory=U1, sampler="hmc", n_chains=C)


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "e.h5"
    _make(path).close()
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 2
    with pytest.raises(EnsembleError, match=r"newer latticeflow \(format version 2 > 1\)"):
        ensemble.open(path)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 1
        del f.attrs["n_rows"], f["state"]
    with pytest.raises(EnsembleError, match="is corrupt: it lacks n_rows, state"):
        ensemble.open(path)


def test_truncated_files_are_refused(tmp_path):
    path = tmp_path / "e.h5"
    with _make(path) as w:
        for b in range(4):
            w.append(**_block(4 * b, 4))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EnsembleError, match="truncated or corrupt") as info:
        ensemble.open(cut)
    assert "\n" not in str(info.value)
    with h5py.File(path, "r+") as f:  # committed rows claimed but absent
        f.attrs["n_rows"] = 40
    with pytest.raises(EnsembleError, match="is truncated: .* holds 16 rows, 40 committed"):
        ensemble.open(path)
