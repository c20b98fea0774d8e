"""Pseudofermion HMC of the two-flavour Schwinger model: the unpreconditioned solver (CG on
D†D from zero, the only one before even–odd preconditioning) against even–odd
preconditioning and the chronological guess, measured in one run on one machine, from the
same equilibrium configurations.

Every solver runs ``--trajectories`` trajectories of ``--chains`` chains at each MD step
count of ``--steps`` (Omelyan, trajectory length 1; the same momenta and random numbers
for all), so that they are compared both at the same step size and at the same
acceptance: at matched acceptance each solver takes its cheapest step count whose
Metropolis probability ⟨min(1, e^{−ΔH})⟩ (an estimator of the acceptance with less noise
than the accept flags) reaches ``--target``.  Reported per run: seconds per trajectory of
all chains (the CPU time of this process, which other processes on a shared machine do not
inflate, and the wall time), applications of the normal operator (D†D or D̂†D̂) per
trajectory and chain (CG iterations, the guess's and the residuals'), the most CG
iterations of one solve, the acceptance, ⟨e^{−ΔH}⟩ and the rms ΔH.  First, how reversible
a trajectory is with each initial guess and force tolerance (why a guess is used only with
cg_tolerance ≤ 1e-9).

    OMP_NUM_THREADS=1 python benchmarks/pseudofermions.py [--L 16] [--beta 2] [--kappa 0.26]
        [--chains 4] [--thermalization 60] [--steps 4,5,6,7,8] [--trajectories 20]
        [--target 0.8] [--out docs/pseudofermions.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from latticeflow.mcmc.hmc import HMC
from latticeflow.theories import Schwinger
from latticeflow.theories.even_odd import EvenOddPseudofermionAction
from latticeflow.theories.schwinger import CHRONO_DEPTH

#: name -> [hmc] keys; the first is the reference the ratios divide by
SOLVERS = {
    "unpreconditioned zero": {"even_odd": False, "cg_guess": "zero"},
    "unpreconditioned chrono": {"even_odd": False, "cg_guess": "chrono"},
    "even-odd zero": {"even_odd": True, "cg_guess": "zero"},
    "even-odd last": {"even_odd": True, "cg_guess": "last"},
    "even-odd chrono": {"even_odd": True, "cg_guess": "chrono"},
}


def measure(hmc: HMC, x: torch.Tensor, n: int, seed: int) -> dict:
    """``n`` trajectories from ``x``: costs, acceptance, energy violations."""
    g = torch.Generator().manual_seed(seed)
    cpu, wall, apps, its, acc, dh = 0.0, 0.0, [], [], [], []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        x, accepted, delta_h = hmc.trajectory(x, g)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        apps.append(hmc.md.applications.double().mean())
        its.append(hmc.last_stats["cg_iterations"].max())
        acc.append(accepted.double())
        dh.append(delta_h)
    dh, acc = torch.stack(dh), torch.stack(acc)
    prob = torch.exp(-dh.clamp(min=0)).nan_to_num(0.0)
    return {"steps": hmc.steps, "cpu_seconds_per_trajectory": cpu / n, "wall_seconds_per_trajectory": wall / n,
            "applications_per_trajectory": float(torch.stack(apps).mean()),
            "max_cg_iterations_per_solve": float(torch.stack(its).max()),
            "acceptance": float(acc.mean()), "metropolis_probability": float(prob.mean()),
            "metropolis_probability_error": float(prob.std() / prob.numel() ** 0.5),
            "exp_minus_delta_h": float(torch.exp(-dh).mean()), "delta_h_rms": float(dh.square().mean().sqrt())}


def reversibility(theory, x: torch.Tensor, steps: int, seed: int) -> dict:
    """Back and forth along one trajectory (even–odd, the guess's history cleared before each
    direction, as at every trajectory's start), for each guess and force tolerance with the
    guess forced on: the largest |Δθ| and |Δπ| on return."""
    out = {}
    for guess in ("zero", "last", "chrono"):
        for tolerance in (1e-6, 1e-8, 1e-9, 1e-10):
            hmc = HMC(theory, steps=steps)
            hmc.md = EvenOddPseudofermionAction(theory, tolerance, 10**4, 1e-10, guess=guess, depth=CHRONO_DEPTH)
            g = torch.Generator().manual_seed(seed)
            p = hmc.sample_momenta(x.shape[0], g)
            hmc.md.refresh(x, g)
            x1, p1 = hmc.integrate(x, p)
            hmc.md.history.reset()
            x2, p2 = hmc.integrate(x1, -p1)
            dx = float((torch.remainder(x2 - x + math.pi, 2 * math.pi) - math.pi).abs().max())
            dp = float((p2 + p).abs().max())
            out[f"{guess} {tolerance:g}"] = {"max_dtheta": dx, "max_dpi": dp}
            print(f"reversibility  guess {guess:6s} cg_tolerance {tolerance:g}: max|dθ| {dx:.1e}, "
                  f"max|dπ| {dp:.1e}", flush=True)
    return out


def matched(runs: dict, target: float) -> dict | None:
    """The cheapest run whose Metropolis probability reaches ``target``."""
    good = [r for r in runs.values() if r["metropolis_probability"] >= target]
    return min(good, key=lambda r: r["cpu_seconds_per_trajectory"]) if good else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--L", type=int, default=16)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--kappa", type=float, default=0.26)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--thermalization", type=int, default=60, help="trajectories to equilibrium (even-odd, last)")
    parser.add_argument("--steps", default="4,5,6,7,8", help="comma-separated MD step counts every solver runs")
    parser.add_argument("--trajectories", type=int, default=20, help="timed trajectories per solver and step count")
    parser.add_argument("--target", type=float, default=0.8, help="the acceptance at which costs are matched")
    parser.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated names of SOLVERS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    theory = Schwinger((args.L, args.L), beta=args.beta, kappa=args.kappa)
    names, step_counts = args.solvers.split(","), [int(s) for s in args.steps.split(",")]
    g = torch.Generator().manual_seed(args.seed)
    warm = HMC(theory, steps=8, target_acceptance=args.target, even_odd=True, cg_guess="last")
    x = warm.thermalize(theory.random_field(args.chains, g), args.thermalization, g)
    print(f"L = {args.L}, beta = {args.beta}, kappa = {args.kappa}, {args.chains} chains; equilibrium "
          f"from {args.thermalization} trajectories (even-odd, last)", flush=True)
    reverse = reversibility(theory, x, warm.steps, args.seed + 3)
    runs = {name: {} for name in names}
    for steps in step_counts:
        for name in names:
            hmc = HMC(theory, steps=steps, **SOLVERS[name])
            runs[name][steps] = r = measure(hmc, x.clone(), args.trajectories, args.seed + 2)
            print(f"{name:24s} {json.dumps(r)}", flush=True)
    reference = names[0]
    print(f"\n| solver | MD steps | acceptance | ⟨min(1, e^(−ΔH))⟩ | s / trajectory (CPU) | "
          f"D†D applications / trajectory | cost / {reference} at the same steps |\n|---|---|---|---|---|---|---|")
    for name in names:
        for steps, r in runs[name].items():
            ratio = r["cpu_seconds_per_trajectory"] / runs[reference][steps]["cpu_seconds_per_trajectory"]
            print(f"| {name} | {steps} | {r['acceptance']:.3f} | {r['metropolis_probability']:.3f}"
                  f"({1000 * r['metropolis_probability_error']:.0f}) | {r['cpu_seconds_per_trajectory']:.3f} | "
                  f"{r['applications_per_trajectory']:.0f} | {ratio:.3f} |")
    best = {name: matched(runs[name], args.target) for name in names}
    print(f"\nat matched acceptance (the cheapest step count with ⟨min(1, e^(−ΔH))⟩ ≥ {args.target}):")
    for name, r in best.items():
        if r is None:
            print(f"  {name}: no step count reached the target")
            continue
        ratio = (f"; cost / {reference}: {r['cpu_seconds_per_trajectory'] / best[reference]['cpu_seconds_per_trajectory']:.3f}"
                 if best[reference] else "")
        print(f"  {name}: {r['steps']} steps, acceptance {r['acceptance']:.3f}, {r['cpu_seconds_per_trajectory']:.3f} s, "
              f"{r['applications_per_trajectory']:.0f} applications{ratio}")
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                        "args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": {n: {str(s): r for s, r in v.items()} for n, v in runs.items()},
                                        "matched": best, "reversibility": reverse}, indent=1) + "\n")


if __name__ == "__main__":
    main()
