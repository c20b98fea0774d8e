"""Training and sampling throughput: milliseconds per step of the settings of
docs/performance.md, measured through the real code paths (``Trainer.train_step`` and the
samplers' proposal call).

Settings (batch 1024 unless ``--batch``; median of steps 5–25; one thread unless
``--threads``):

- ``phi4``: φ⁴ L = 8, 16 affine checkerboard layers, CNN [16, 16, 16];
- ``phi4-z2``: the same with ``z2 = true`` (Z₂-symmetrised conditioner, two passes);
- ``phi4-z2-odd``: the same with ``z2_conditioner = "odd"`` (one pass of an odd tanh trunk);
- ``phi4-tanh``: the plain flow with tanh activations (the baseline of the odd conditioner);
- ``u1``: U(1) L = 8 β = 2, 16 circular-spline layers (8 bins), plaquette inputs, CNN [32, 32];
- ``u1-sample``: that flow's proposals, time per 1024 (no gradients, float32, the action
  and log w in float64 included);
- ``u1-L16``, ``u1-L32``: the U(1) training step at L = 16 and 32 (steps per second).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/throughput.py                 # all settings
    OMP_NUM_THREADS=1 python benchmarks/throughput.py --settings u1 --steps 25 --json out.json
    OMP_NUM_THREADS=1 python benchmarks/throughput.py --settings phi4 phi4-z2 phi4-z2-odd --interleave
    python benchmarks/throughput.py --device cuda --threads 16        # on a GPU machine

Every ratio quoted in docs/performance.md compares numbers printed by one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latticeflow.config import parse_config  # noqa: E402
from latticeflow.devices import resolve  # noqa: E402
from latticeflow.mcmc.independence import log_weight  # noqa: E402
from latticeflow.training.trainer import Trainer  # noqa: E402

PHI4 = """
[theory]
name = "phi4"
L = 8
m2 = -4.0
lam = 8.0

[flow]
layers = 16
bijection = "affine"
hidden = [16, 16, 16]
z2 = {z2}
"""

ODD = """z2_conditioner = "odd"
activation = "tanh"
"""

U1 = """
[theory]
name = "u1"
L = {L}
beta = 2.0

[flow]
layers = 16
bijection = "spline"
bins = 8
hidden = [32, 32]
loops = ["plaquette"]
"""

TRAIN = """
[train]
batch_size = {batch}
steps = 100000
estimator = "reparam"
device = "{device}"
"""

SETTINGS = {
    "phi4": PHI4.format(z2="false"),
    "phi4-z2": PHI4.format(z2="true"),
    "phi4-z2-odd": PHI4.format(z2="true") + ODD,
    "phi4-tanh": PHI4.format(z2="false") + 'activation = "tanh"\n',
    "u1": U1.format(L=8),
    "u1-sample": U1.format(L=8),
    "u1-L16": U1.format(L=16),
    "u1-L32": U1.format(L=32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(name: str, batch: int, device: str, run_dir: Path) -> Trainer:
    """A :class:`Trainer` of the setting ``name`` at ``batch`` on ``device``, writing to ``run_dir``."""
    return Trainer(parse_config(SETTINGS[name] + TRAIN.format(batch=batch, device=device)), run_dir)


def _kept(times: list[float]) -> list[float]:
    """The steps a median is taken of: from the fifth on, when there are more than 8."""
    return times[4:] if len(times) > 8 else times


def _step(name: str, trainer: Trainer, batch: int, where: torch.device) -> float:
    """Seconds of one training step (or one batch of proposals) of ``trainer``."""
    _sync(where)
    t0 = time.perf_counter()
    if name.endswith("-sample"):
        with torch.no_grad():
            x, log_q = trainer.flow.sample(batch, generator=trainer.generator)
            x = trainer.theory.field_space.to_action_dtype(x)
            log_weight(trainer.theory.action(x), log_q).cpu()
    else:
        trainer.train_step()
    _sync(where)
    return time.perf_counter() - t0


def _row(name: str, times: list[float], batch: int, where: torch.device) -> dict:
    kept = _kept(times)
    return {"setting": name, "ms_per_step": 1e3 * statistics.median(kept),
            "steps_per_second": 1 / statistics.median(kept), "steps_timed": len(kept),
            "batch": batch, "device": str(where), "threads": torch.get_num_threads()}


def time_setting(name: str, steps: int, batch: int, device: str) -> dict:
    where = resolve(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(name, batch, device, Path(tmp))
        times = [_step(name, trainer, batch, where) for _ in range(steps)]
    return _row(name, times, batch, where)


def time_interleaved(names: list[str], steps: int, batch: int, device: str) -> list[dict]:
    """The settings' steps taken in turn (one of each, then again), so that the machine's
    drifts hit all of them alike: the form for ratios."""
    where = resolve(device)
    names = list(dict.fromkeys(names))  # each setting once
    times = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(name, batch, device, Path(tmp) / name) for name in names}
        for _ in range(steps):
            for name in names:
                times[name].append(_step(name, trainers[name], batch, where))
    return [_row(name, times[name], batch, where) for name in names]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--steps", type=int, default=25, help="steps per setting (median of 5..N)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--interleave", action="store_true",
                   help="take the settings' steps in turn in one process (for ratios)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    if args.interleave:
        timed = time_interleaved(args.settings, args.steps, args.batch, args.device)
    else:
        timed = (time_setting(name, args.steps, args.batch, args.device) for name in args.settings)
    for row in timed:
        name = row["setting"]
        rows.append(row)
        print(f"{name:<12} {row['ms_per_step']:9.1f} ms/step  ({row['steps_per_second']:.2f} steps/s, "
              f"batch {row['batch']}, {row['device']}, {row['threads']} thread(s))", flush=True)
    by = {r["setting"]: r["ms_per_step"] for r in rows}
    if "phi4" in by and "phi4-z2" in by:
        print(f"z2 / plain: {by['phi4-z2'] / by['phi4']:.2f}")
    if "phi4" in by and "phi4-z2-odd" in by:
        print(f"odd z2 / plain: {by['phi4-z2-odd'] / by['phi4']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
