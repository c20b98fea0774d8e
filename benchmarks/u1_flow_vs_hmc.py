"""τ_int of the topological charge: flow-MCMC versus HMC, 2D U(1) at L = 8.

For each β: train the model's flow for ``--minutes`` (or use the weights shipped beside its
TOML with ``--shipped``), generate ``-n`` configurations with flow-MCMC and with HMC (the
``sampling/u1_L8_b<β>_hmc.toml`` baseline), and print one Markdown row per β with the
acceptance, ESS and τ_int of Q and of the plaquette for both samplers (Γ-method, S = 1.5).

Usage (the table in docs/u1_flow_training.md was made with):

    OMP_NUM_THREADS=1 python benchmarks/u1_flow_vs_hmc.py --betas 2 4 6 -n 20000 --minutes 10

Models: ``models/u1_L8_b<β>.toml`` (β = 2 ships weights; the others are trained here).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import latticeflow
from latticeflow.analysis import format_value_error

ROOT = Path(__file__).resolve().parents[1]


def tau(obs: dict) -> str:
    if obs["tau_int"] is None:
        return "–"
    return format_value_error(obs["tau_int"], obs["tau_int_error"])


def run_beta(beta: int, args) -> dict:
    model = ROOT / "models" / f"u1_L8_b{beta}.toml"
    out = Path(args.out) / f"b{beta}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.shipped and model.with_suffix(".pt").is_file():
        source = model
    else:
        run_dir = out / "train"
        if not (run_dir / "model.pt").is_file():
            from dataclasses import replace

            from latticeflow.config import load_config

            cfg = load_config(model)
            cfg = replace(cfg, train=replace(cfg.train, minutes=args.minutes))
            latticeflow.train(cfg, out=run_dir, resume=(run_dir / "checkpoint.pt").is_file(),
                              progress=False)
        source = run_dir
    train_s = time.perf_counter() - t0
    latticeflow.sample(source, args.n, out=out / "flow.h5", configs=False, progress=False)
    latticeflow.hmc(ROOT / "sampling" / f"u1_L8_b{beta}_hmc.toml", args.n, out=out / "hmc.h5",
                    configs=False, progress=False)
    flow, hmc = latticeflow.analyze(out / "flow.h5"), latticeflow.analyze(out / "hmc.h5")
    return {"beta": beta, "train_seconds": train_s, "flow": flow, "hmc": hmc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("-n", type=int, default=20000, help="configurations per ensemble")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per β")
    parser.add_argument("--shipped", action="store_true", help="use shipped weights where present")
    parser.add_argument("--out", default="runs/u1_flow_vs_hmc")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args()
    rows = [run_beta(b, args) for b in args.betas]
    print("| β | flow acceptance | flow ESS | τ_int(Q) flow | τ_int(Q) HMC | τ_int(plaq) flow |"
          " τ_int(plaq) HMC | χ_Q flow | χ_Q HMC | χ_Q exact | training (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, h = r["flow"], r["hmc"]
        fo, ho = f["observables"], h["observables"]
        chi = lambda o: format_value_error(o["chi_Q"]["mean"], o["chi_Q"]["error"])  # noqa: E731
        print(f"| {r['beta']} | {f['acceptance']:.3f} | {f['ess']:.3f} | "
              f"{tau(fo['topological_charge'])} | {tau(ho['topological_charge'])} | "
              f"{tau(fo['plaquette'])} | {tau(ho['plaquette'])} | {chi(fo)} | {chi(ho)} | "
              f"{f['exact']['chi_Q']:.6g} | {r['train_seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
