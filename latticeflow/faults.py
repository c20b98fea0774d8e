"""Fault injection for the reliability suite and ``benchmarks/faults.py``.

Three generators of hostile conditions, each checked the same way in tests (few cases) and
in the benchmark (many):

- :func:`kill_and_resume`: start a command, SIGKILL it at a random moment, run the same
  command again, and compare the file with an uninterrupted run bit for bit;
- :func:`damaged_copies`: copies of a good ensemble with one thing broken (truncated file,
  deleted dataset or state, attributes of the wrong type, ``n_rows`` changed), each of which
  every command must refuse with one line without changing the file;
- :func:`hostile_model_texts`: model files that are not what they claim (bad encodings,
  non-finite and absurd numbers, wrong types, unknown keys).

Nothing here is imported by the rest of the package.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

__all__ = ["sha256", "spawn", "run_command", "kill_and_resume", "same_ensemble", "damaged_copies",
           "hostile_model_texts", "COMMANDS"]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def spawn(args, cwd=None, env=None, capture=True):
    """Start ``python -m latticeflow ARGS`` with the environment ``env`` (a ``Popen``; output
    captured as text, or discarded).  The test suite replaces it by a fork server that skips
    the interpreter's start (``tests/forkserver.py``)."""
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "latticeflow", *map(str, args)], cwd=cwd, env=env,
                            stdout=pipe, stderr=pipe, text=True)


def run_command(args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """``python -m latticeflow ARGS`` with one torch thread."""
    proc = spawn(args, cwd, dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(["latticeflow", *map(str, args)], proc.returncode, out, err)


def kill_and_resume(args, delay: float, cwd=None, env=None) -> tuple[int, subprocess.CompletedProcess]:
    """Start ``latticeflow ARGS``, SIGKILL it after ``delay`` seconds (if still running),
    then run the same command to completion.  Returns (returncode of the killed run or -9,
    the completed rerun)."""
    proc = spawn(args, cwd, dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), capture=False)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    code = proc.wait()
    return code, run_command(args, cwd=cwd, env=env)


def same_ensemble(a, b) -> list[str]:
    """Differences between two ensemble files in everything a run determines (rows, chains,
    observables, mcmc columns, configurations); empty if they are bit-identical there."""
    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ("n_rows", "n_chains", "sampler", "theory"):
            if fa.attrs[key] != fb.attrs[key]:
                diffs.append(f"attribute {key}: {fa.attrs[key]!r} vs {fb.attrs[key]!r}")
        n = int(fa.attrs["n_rows"])
        names = [f"{g}/{k}" for g in ("observables", "mcmc") for k in fa[g]]
        names += ["configs"] if "configs" in fa else []
        for name in names:
            if name not in fb:
                diffs.append(f"{name} missing")
            elif not np.array_equal(fa[name][:n], fb[name][:n], equal_nan=True):
                diffs.append(f"{name} differs")
    return diffs


def damaged_copies(good: Path, out_dir: Path, rng: random.Random | None = None) -> list[tuple[str, Path]]:
    """``(what was broken, path)`` for copies of the ensemble ``good``, one defect each."""
    rng = rng or random.Random(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = good.stat().st_size
    cases = []

    def copy(name):
        path = out_dir / f"{len(cases):03d}-{name}.h5"
        shutil.copy(good, path)
        return path

    for frac in (0.0, 0.001, 0.1, 0.5, 0.9, rng.uniform(0.2, 0.99)):
        path = copy(f"truncated-{frac:.3f}")
        with open(path, "r+b") as fh:
            fh.truncate(int(size * frac))
        cases.append((f"truncated to {frac:.1%}", path))
    edits = {
        "delete observables/plaquette": lambda f: f["observables"].__delitem__(next(iter(f["observables"]))),
        "delete mcmc/accepted": lambda f: f["mcmc"].__delitem__("accepted"),
        "delete the state group": lambda f: f.__delitem__("state"),
        "delete both state slots": lambda f: [f["state"].__delitem__(k) for k in list(f["state"])],
        "delete the rng of the committed state": lambda f: [f["state"][k].__delitem__("rng")
                                                            for k in list(f["state"]) if "rng" in f["state"][k]],
        "n_rows = -5": lambda f: f.attrs.__setitem__("n_rows", -5),
        "n_rows lowered by 3": lambda f: f.attrs.__setitem__("n_rows", int(f.attrs["n_rows"]) - 3),
        "n_rows raised by 1000": lambda f: f.attrs.__setitem__("n_rows", int(f.attrs["n_rows"]) + 1000),
        "n_rows is a string": lambda f: f.attrs.__setitem__("n_rows", "ten"),
        "n_chains = 0": lambda f: f.attrs.__setitem__("n_chains", 0),
        "theory not JSON": lambda f: f.attrs.__setitem__("theory", "{not json"),
        "theory a number": lambda f: f.attrs.__setitem__("theory", 3),
        "theory unknown name": lambda f: f.attrs.__setitem__("theory", '{"name": "qcd", "shape": [4, 4]}'),
        "theory with a string coupling": lambda f: f.attrs.__setitem__(
            "theory", f.attrs["theory"].replace('"beta": 1.0', '"beta": "x"')),
        "extra not JSON": lambda f: f.attrs.__setitem__("extra", "]"),
        "sampler unknown": lambda f: f.attrs.__setitem__("sampler", "magic"),
        "generation_seconds nan": lambda f: f.attrs.__setitem__("generation_seconds", float("nan")),
        "format version 99": lambda f: f.attrs.__setitem__("version", 99),
        "format attribute deleted": lambda f: f.attrs.__delitem__("format"),
        "an observable with NaN": lambda f: f["observables"][next(iter(f["observables"]))].__setitem__(0, np.nan),
        "observable replaced by a group": lambda f: (f["observables"].__delitem__("plaquette"),
                                                     f["observables"].create_group("plaquette")),
        "observable of the wrong shape": lambda f: (f["observables"].__delitem__("plaquette"),
                                                    f["observables"].create_dataset("plaquette", data=np.zeros(3))),
        "observable of strings": lambda f: _replace(f, "observables/plaquette",
                                                    np.full(f["observables/plaquette"].shape, b"x")),
        "accepted as integers": lambda f: _replace(f, "mcmc/accepted", np.full(f["mcmc/accepted"].shape, 7)),
        "sampler swapped to flow-iid": lambda f: f.attrs.__setitem__("sampler", "flow-iid"),
        "theory with beta NaN": lambda f: f.attrs.__setitem__(
            "theory", f.attrs["theory"].replace('"beta": 1.0', '"beta": NaN')),
        "state fields of another lattice": lambda f: [_replace(f, f"state/{k}/field", np.zeros((2, 2, 8, 8)))
                                                      for k in list(f["state"]) if "field" in f["state"][k]],
        "state fields NaN": lambda f: [_replace(f, f"state/{k}/field", np.full(f[f"state/{k}/field"].shape, np.nan))
                                       for k in list(f["state"]) if "field" in f["state"][k]],
    }
    for what, edit in edits.items():
        path = copy(what.replace(" ", "_").replace("/", "-"))
        try:
            with h5py.File(path, "r+") as f:
                edit(f)
        except (KeyError, OSError, StopIteration):
            path.unlink()
            continue
        cases.append((what, path))
    path = copy("garbage-bytes")
    with open(path, "r+b") as fh:
        fh.seek(rng.randrange(size // 4, size // 2))
        fh.write(os.urandom(512))
    cases.append(("512 random bytes in the middle", path))
    return cases


#: the commands that take a model file
COMMANDS = ("exact", "hmc", "sample", "train", "run")
#: sizes that are valid TOML but cannot fit: refused by the commands that would allocate
_SIZES = {"theory.L = 100000": ("hmc", "sample", "train", "run"),
          "theory.L = 99999999999999999999": ("hmc", "sample", "train", "run"),
          "theory.dim = 100": ("hmc", "sample", "train", "run"),
          "hmc.chains = 1000000000": ("hmc",),
          "sample.batch_size = 1000000000000": ("sample",),
          "flow.layers = 100000000": ("sample", "train", "run")}


def _replace(f, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


def hostile_model_texts() -> list[tuple[str, bytes, tuple[str, ...]]]:
    """``(what, file content, the commands that must refuse it)`` for hostile model files;
    the other commands may accept them (an absurd size is harmless to ``exact``)."""
    return [(what, text, _SIZES.get(what, COMMANDS)) for what, text in _hostile_texts()]


def _hostile_texts() -> list[tuple[str, bytes]]:
    u1 = '[theory]\nname = "u1"\nL = 8\nbeta = 2.0\n'
    cases = [
        ("Latin-1", 'description = "café"\n'.encode("latin-1") + u1.encode()),
        ("UTF-16", u1.encode("utf-16")),
        ("binary", bytes(range(256)) * 4),
        ("empty", b""),
        ("not TOML", b"[theory\nname ="),
    ]
    for key, value in [("beta", "inf"), ("beta", "nan"), ("beta", "-inf"), ("beta", "0"), ("beta", '"2"'),
                       ("beta", "[2.0]"), ("beta", "true"), ("L", "100000"), ("L", "1"), ("L", "2.5"),
                       ("L", "-8"), ("L", "99999999999999999999"), ("dim", "100"), ("dim", "0")]:
        text = u1.replace(f"{key} = " + ("2.0" if key == "beta" else "8"), f"{key} = {value}") \
            if key != "dim" else u1 + f"dim = {value}\n"
        cases.append((f"theory.{key} = {value}", text.encode()))
    for section, key, value in [("hmc", "chains", "1000000000"), ("hmc", "chains", "0"),
                                ("hmc", "trajectory_length", "inf"), ("hmc", "steps", "-1"),
                                ("sample", "batch_size", "1000000000000"), ("train", "lr", "inf"),
                                ("train", "lr", "nan"), ("train", "steps", "0"), ("hmc", "mystery", "1"),
                                ("flow", "layers", "100000000"), ("flow", "bound", "inf"),
                                ("flow", "components", "6"), ("flow", "kernel_size", "99"),
                                ("flow", "bins", "1180591620717411303424"), ("train", "eval_batch", "1180591620717411303424"),
                                ("hmc", "steps", "1000000000"), ("train", "anneal_steps", "50"),
                                ("flow", "loops", '["plaquette", "plaquette"]')]:
        header = "" if section == "flow" else f"[{section}]\n"
        text = u1 + '[flow]\nbijection = "spline"\n' + header + f"{key} = {value}\n"
        cases.append((f"{section}.{key} = {value}", text.encode()))
    schwinger = '[theory]\nname = "schwinger"\nL = 4\nbeta = 2.0\nkappa = 0.24\n[hmc]\n'
    for key, value in [("cg_tolerance", "1e-300"), ("cg_action_tolerance", "0.9")]:
        cases.append((f"hmc.{key} = {value}", (schwinger + f"{key} = {value}\n").encode()))
    cases.append(("byte-order mark + beta = inf", b"\xef\xbb\xbf" + u1.replace("2.0", "inf").encode()))
    return cases
