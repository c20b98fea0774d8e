"""Continue training a shipped flow from its weights (how the shipped U(1) weights were made).

The project's trainer (``latticeflow.training.Trainer``) is started from a model file and its
shipped ``.pt`` weights, with ``[train]`` settings overridden on the command line; the run
directory holds the usual ``metrics.jsonl``, ``training.png`` and ``model.pt``.

    OMP_NUM_THREADS=1 python benchmarks/finetune_flow.py models/u1_L8_b2.toml \\
        --minutes 15 --lr 1e-3 --batch 128 --estimator path --out runs/u1_finetune
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from latticeflow.config import load_config
from latticeflow.training import Trainer, load_flow
from latticeflow.training.run_files import write_configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="model TOML with weights beside it (same stem, .pt)")
    p.add_argument("--weights", help="start from these weights instead of the shipped ones")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=100000, help="planned steps (cosine horizon)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--estimator", choices=["reparam", "path"], default="path")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    cfg = load_config(args.model)
    start = load_flow(Path(args.weights or Path(args.model).with_suffix(".pt")), cfg)
    train = dataclasses.replace(cfg.train, minutes=args.minutes, steps=args.steps, lr=args.lr,
                                batch_size=args.batch, estimator=args.estimator, seed=args.seed,
                                eval_every=200, checkpoint_every=200, log_every=20)
    cfg = dataclasses.replace(cfg, train=train)
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_configs(run_dir, cfg)  # the effective config: the overrides above included
    trainer = Trainer(cfg, run_dir, steps=args.steps, init=start.state_dict())
    result = trainer.run(progress=True)
    print(f"finished at step {result.step} ({result.stopped}); metrics: {result.metrics}")


if __name__ == "__main__":
    main()
