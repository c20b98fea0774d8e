"""Train the U(1) flows of a β-scan by transfer, e.g. L=8 β=2 → L=16 β=2 → 3 → 4 → 5 → 6.

Each model file ``models/u1_L<L>_b<β>.toml`` names the weights it starts from in
``[train] init`` (volume transfer for β=2, β transfer after that) and its fine-tuning budget
(``[train] minutes``); this script trains them in order and copies each run's ``model.pt``
beside its TOML, where the next model's ``init`` and ``latticeflow run`` find it.

    OMP_NUM_THREADS=1 python benchmarks/transfer_chain.py --L 16 --betas 2 3 4 5 6 --out runs/chain
    OMP_NUM_THREADS=1 python benchmarks/transfer_chain.py --L 8 --betas 4 6 --out runs/chain_L8
    OMP_NUM_THREADS=1 python benchmarks/transfer_chain.py --suffix _ncp --out runs/chain_ncp

``--suffix _ncp`` trains the chain ``u1_L<L>_b<β>_ncp.toml`` instead: the smooth flows of
flow HMC.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import latticeflow
from latticeflow.training import read_metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--betas", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    p.add_argument("--out", default="runs/chain", help="folder for the training runs")
    p.add_argument("--models", default="models")
    p.add_argument("--suffix", default="", help="model stem suffix, e.g. _ncp: u1_L16_b2_ncp.toml")
    args = p.parse_args()
    torch.set_num_threads(1)
    summary = []
    for beta in args.betas:
        model = Path(args.models) / f"u1_L{args.L}_b{beta}{args.suffix}.toml"
        run_dir = Path(args.out) / model.stem
        t0 = time.perf_counter()
        result = latticeflow.train(model, out=run_dir, resume=(run_dir / "checkpoint.pt").is_file())
        seconds = time.perf_counter() - t0
        shutil.copy(run_dir / "model.pt", model.with_suffix(".pt"))
        acc = [r["acceptance"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("acceptance") is not None]
        row = {"beta": beta, "steps": result.step, "seconds": round(seconds, 1),
               "acceptance_first": acc[0] if acc else None, "acceptance_last": acc[-1] if acc else None}
        summary.append(row)
        print(json.dumps(row), flush=True)
    (Path(args.out) / "chain.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
