"""``latticeflow run``: from a model file to a report of the flow against HMC and every
classical baseline that applies (``--baselines`` chooses them), in one command.

The stages are :func:`latticeflow.study.run`; this module prints their progress, the
comparison and the verdicts (exactness, agreement, the best classical sampler and the
flow's cost ratio to it), and on an interrupt the command that continues the run.
"""

from __future__ import annotations

import json
import sys

from .. import study
from ..analysis.cost import verdict_lines
from ..config.overrides import check_n
from ..training.distributed import rank_device

__all__ = ["cmd_run"]


def cmd_run(args) -> int:
    n = study.DEFAULT_N if args.n is None else args.n
    check_n(n, 10)
    if args.device is not None:  # a missing GPU is refused before the run directory is made
        rank_device(args.device, "--device")
    spec = args.baselines
    cfg, run_dir = study.prepare(args.model, args.out, args.resume, args.train_minutes, spec)
    baselines = study.choose_baselines(cfg, spec)
    cfg = study.pipeline.on_device(cfg, args.device)

    def stage(title: str) -> None:
        if not args.quiet:
            print(f"\n== {title}", file=sys.stderr)

    try:
        result = study.run(cfg, run_dir, n, args.train, args.train_minutes, not args.quiet, stage,
                           model=args.model, baselines=baselines)
    except KeyboardInterrupt:
        print("\ninterrupted: everything written so far is kept; continue with\n  "
              + study.resume_command(args.model, run_dir, n, args.train, args.train_minutes, spec),
              file=sys.stderr)
        raise
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "report": str(result["report"]),
                          "comparison": result["comparison"], "cost": result["cost"]}, indent=2))
        return 0
    print(result["markdown"])
    for label, c in result["consistency"].items():
        if c["n_compared"]:
            verdict = "consistent" if c["consistent"] else "NOT consistent"
            print(f"{label}: {verdict} with exact values (largest deviation "
                  f"{c['max_abs_deviation']:.1f}σ)")
    pair = result["agreement"]
    if pair["n_compared"]:
        a, b = pair["pairs"]
        verdict = "agree" if pair["consistent"] else "do NOT agree"
        print(f"{a} and {b}: {verdict} within 4σ (largest pull {pair['max_abs_pull']:.1f}σ in "
              f"{pair['worst']})")
    if result["cost"]:
        for line in verdict_lines(result["cost"], result["cost"]["observable"]):
            print(line[2:].replace("**", ""))
    print(f"\nreport: {result['report']}  ({len(result['figures'])} plots in {run_dir})")
    return 0
