"""Heat bath + overrelaxation against tuned HMC in 2D U(1): τ_int of the plaquette and of Q,
and the cost of an independent sample.

For each β both samplers start hot, thermalise (HMC tunes its step size toward
``--target`` acceptance there, then freezes it), and run ``--steps`` steps of
``--chains`` chains: one step is a heat-bath sweep plus ``--overrelaxation`` overrelaxation
sweeps (one entry per value given), or one HMC trajectory.  τ_int comes from the Γ-method
with the chains as replicas, in units of the sampler's own steps; "> τ" is a lower bound
(fewer than 20 τ_int per chain, or Q never changed).  The cost of an independent sample is
2 τ_int × the CPU seconds of one step of one chain (all chains run as one batch; CPU time
of this process, so that other jobs on the machine do not inflate it; run with one thread).

Usage (a few minutes on one core):

    OMP_NUM_THREADS=1 python benchmarks/heatbath_u1.py --L 16 --betas 2 4 6 --steps 2000 --overrelaxation 0 1 2 4
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from latticeflow.analysis import format_value_error, gamma_method
from latticeflow.mcmc import HMC
from latticeflow.mcmc.heatbath import HeatbathKernel
from latticeflow.mcmc.kernels import KernelState
from latticeflow.theories import U1


def tau(data: np.ndarray) -> tuple[str, float, bool]:
    """τ_int as text, its value, and whether it is resolved (else a lower bound)."""
    n = data.shape[1]
    if np.ptp(data) == 0:
        return f"> {n}", float(n), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = gamma_method(data)
    if n < 20 * r.tau_int:
        return f"> {r.tau_int:.1f}", r.tau_int, False
    return str(format_value_error(r.tau_int, r.tau_int_error, digits=1)), r.tau_int, True


def heatbath_run(theory, args, overrelaxation: int):
    kernel, g = HeatbathKernel(theory, overrelaxation), torch.Generator().manual_seed(args.seed)
    state = KernelState(theory.random_field(args.chains, g))
    for _ in range(args.thermalization):
        state = kernel.step(state, g)[0]
    rows, start = [], time.process_time()
    for _ in range(args.steps):
        state = kernel.step(state, g)[0]
        rows.append(theory.observables(state.x))
    seconds = time.process_time() - start
    return {k: torch.stack([r[k] for r in rows]).T.numpy() for k in rows[0]}, seconds, {}


def hmc_run(theory, args):
    g = torch.Generator().manual_seed(args.seed)
    hmc = HMC(theory, integrator="omelyan", trajectory_length=1.0, steps=10, target_acceptance=args.target)
    x = hmc.thermalize(theory.random_field(args.chains, g), args.thermalization, g)
    start = time.process_time()
    _, history = hmc.sample(x, args.steps, g)
    seconds = time.process_time() - start
    data = {k: v.T.double().numpy() for k, v in history.items()}
    return data, seconds, {"md_steps": hmc.steps, "acceptance": float(data["accepted"].mean())}


def row(name, beta, theory, data, seconds, args, extra) -> dict:
    per_step = seconds / (args.steps * args.chains)
    out = {"beta": beta, "sampler": name, "ms_per_step_per_chain": 1e3 * per_step, **extra}
    exact = theory.exact()
    for obs, key in (("plaquette", "plaquette"), ("topological_charge", "Q")):
        text, value, resolved = tau(data[obs])
        out[f"tau_{key}"], out[f"tau_{key}_resolved"] = text, resolved
        out[f"seconds_per_independent_{key}"] = 2 * value * per_step
    for obs in ("plaquette", "chi_Q"):
        r = gamma_method(data[obs])
        out[obs], out[f"{obs}_exact"] = str(format_value_error(r.mean, r.error)), exact[obs]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=16)
    parser.add_argument("--betas", type=float, nargs="+", default=[2, 4, 6])
    parser.add_argument("--steps", type=int, default=2000, help="per chain, after thermalisation")
    parser.add_argument("--thermalization", type=int, default=200)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--overrelaxation", type=int, nargs="+", default=[1], help="OR sweeps per heat-bath sweep")
    parser.add_argument("--target", type=float, default=0.8, help="HMC target acceptance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    print(f"U(1) L={args.L}, {args.chains} chains × {args.steps} steps, torch threads={torch.get_num_threads()}\n")
    print("| β | sampler | plaquette | exact | χ_Q | exact | τ_int(plaq) | τ_int(Q) | ms/step/chain "
          "| s per indep. plaq | s per indep. Q |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for beta in args.betas:
        theory = U1((args.L, args.L), beta=beta)
        runs = [(f"heatbath + {k} OR", *heatbath_run(theory, args, k)) for k in args.overrelaxation]
        h = hmc_run(theory, args)
        runs.append((f"HMC ({h[2]['md_steps']} steps, acc {h[2]['acceptance']:.2f})", *h))
        for name, data, seconds, extra in runs:
            r = row(name, beta, theory, data, seconds, args, extra)
            rows.append(r)
            bound = lambda key: "" if r[f"tau_{key}_resolved"] else "> "  # noqa: E731
            print(f"| {beta:g} | {name} | {r['plaquette']} | {r['plaquette_exact']:.5f} | {r['chi_Q']} "
                  f"| {r['chi_Q_exact']:.5f} | {r['tau_plaquette']} | {r['tau_Q']} | {r['ms_per_step_per_chain']:.3f} "
                  f"| {bound('plaquette')}{r['seconds_per_independent_plaquette']:.2g} "
                  f"| {bound('Q')}{r['seconds_per_independent_Q']:.2g} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
