"""Instanton jumps against topological freezing: HMC alone vs HMC + jumps (and heat bath +
jumps where the heat-bath kernel exists), in 2D U(1) and the Schwinger model.

For each setting the step size is tuned during thermalisation (HMC alone and HMC + jumps
each tune their own), then ``--steps`` steps of ``--chains`` chains are measured; one step
is one HMC trajectory (or one heat-bath sweep) followed by ``--jumps`` instanton jumps.
Reported: jump acceptance, τ_int of Q and of the plaquette (Γ-method, chains as replicas,
in steps), the CPU seconds per step, and the seconds per independent Q, 2 τ_int(Q) × (s per
step).  A τ_int the chains cannot resolve (fewer than 20 τ_int per chain, or Q frozen) is
shown as a lower bound.  Timings are process CPU seconds on one thread, so a busy machine
inflates them less than wall time.

Usage (the default, U(1) at L = 16, β = 6 and the Schwinger model at L = 8, β = 2,
κ = 0.26 with the exact determinant, takes a few minutes):

    python benchmarks/instanton_jumps.py --out docs/instanton_jumps.json
    python benchmarks/instanton_jumps.py --settings u1:32:8 --steps 4000
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from latticeflow.analysis import gamma_method
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.hmc_chains import HMCChains
from latticeflow.mcmc.jumps import InstantonJump, jump_chains
from latticeflow.theories import U1
from latticeflow.theories.schwinger import Schwinger


def tau(data: np.ndarray) -> tuple[float, float, bool]:
    """τ_int, its error, and whether the chains resolve it (``data``: (chains, n))."""
    if np.ptp(data) == 0:
        return float(data.shape[1]), float("nan"), False  # frozen: not one change
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = gamma_method(data)
    return r.tau_int, r.tau_int_error, data.shape[1] >= 20 * r.tau_int


def theory_of(setting: str):
    """``u1:L:beta`` or ``schwinger:L:beta:kappa``."""
    kind, *numbers = setting.split(":")
    if kind == "u1":
        return U1((int(numbers[0]),) * 2, beta=float(numbers[1])), {}
    return Schwinger((int(numbers[0]),) * 2, beta=float(numbers[1]), kappa=float(numbers[2])), {"fermions": "exact"}


def measure(theory, md, label: str, args) -> dict:
    torch.manual_seed(args.seed)
    common = dict(thermalization=args.thermalization, seed=args.seed, store_configs=False, progress=False)
    if label == "hmc":
        sampler = HMCChains(theory, HMC(theory, steps=args.md_steps, **md), args.chains, **common)
    else:
        if label == "heatbath+jumps":
            from latticeflow.mcmc.heatbath import HeatbathKernel

            base = HeatbathKernel(theory, overrelaxation=args.overrelaxation)
        else:
            base = HMC(theory, steps=args.md_steps, **md)
        sampler = jump_chains(theory, base, InstantonJump(theory, **md), args.chains, 1, args.jumps, **common)
    sampler.start(None)
    start = time.process_time()
    block = sampler.advance(args.steps)
    seconds = (time.process_time() - start) / args.steps
    q, plaq = block.observables["topological_charge"].T, block.observables["plaquette"].T
    tq, tq_err, q_ok = tau(q)
    tp, tp_err, p_ok = tau(plaq)
    row = {"sampler": label, "seconds_per_step": seconds, "tau_Q": tq, "tau_Q_error": tq_err,
           "tau_Q_resolved": q_ok, "tau_plaquette": tp, "tau_plaquette_error": tp_err,
           "tau_plaquette_resolved": p_ok, "seconds_per_independent_Q": 2 * tq * seconds,
           "chi_Q": float(np.mean(q**2) / theory.volume), "plaquette": float(np.mean(plaq)),
           "acceptance": float(np.mean(block.mcmc["accepted"]))}
    if "jump_acceptance" in block.mcmc:
        row["jump_acceptance"] = float(np.mean(block.mcmc["jump_acceptance"]))
        row["sector_changes_per_step"] = float(np.mean(np.abs(block.mcmc["sector_change"])))
    if getattr(sampler, "hmc", None) is not None:
        row["md_steps"] = sampler.hmc.steps
    return row


def show(setting: str, rows: list[dict]) -> None:
    print(f"\n{setting}")
    print(f"{'sampler':>16} {'jump acc':>9} {'tau_int(Q)':>14} {'tau_int(plaq)':>14} {'s/step':>9} "
          f"{'s per indep. Q':>15}")
    for r in rows:
        bound = "" if r["tau_Q_resolved"] else ">"
        tq = f"{bound}{r['tau_Q']:.1f}({r['tau_Q_error']:.1f})"
        tp = f"{'' if r['tau_plaquette_resolved'] else '>'}{r['tau_plaquette']:.1f}"
        acc = f"{r['jump_acceptance']:.3f}" if "jump_acceptance" in r else "-"
        print(f"{r['sampler']:>16} {acc:>9} {tq:>14} {tp:>14} {r['seconds_per_step']:9.2e} "
              f"{bound}{r['seconds_per_independent_Q']:14.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["u1:16:6", "schwinger:8:2:0.26"],
                        help="u1:L:beta or schwinger:L:beta:kappa (exact determinant)")
    parser.add_argument("--samplers", nargs="+", default=["hmc", "hmc+jumps", "heatbath+jumps"])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6000, help="measured steps per chain (Schwinger: / 4)")
    parser.add_argument("--thermalization", type=int, default=200)
    parser.add_argument("--md-steps", type=int, default=8, help="initial MD steps (tuned)")
    parser.add_argument("--jumps", type=int, default=1, help="jumps per step")
    parser.add_argument("--overrelaxation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"command": "python benchmarks/instanton_jumps.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "out" and v is not None), "settings": {}}
    for setting in args.settings:
        theory, md = theory_of(setting)
        run = argparse.Namespace(**vars(args))
        if md:  # the dense determinant: fewer, costlier steps
            run.steps, run.chains = max(100, args.steps // 4), max(1, args.chains // 2)
        rows = []
        for label in args.samplers:
            if label == "heatbath+jumps" and md:
                continue  # the heat bath updates pure gauge fields only
            try:
                rows.append(measure(theory, md, label, run))
            except ImportError:
                print(f"({label}: no heat-bath kernel in this installation)")
        show(setting, rows)
        results["settings"][setting] = {"chains": run.chains, "steps": run.steps, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
