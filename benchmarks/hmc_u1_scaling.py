"""HMC critical slowing down in 2D U(1): τ_int of Q and of the plaquette versus β.

The setting of arXiv:2003.06413 (L = 16, β = 2 … 7): topological freezing makes τ_int(Q)
grow roughly exponentially with β.  For each β the step size is tuned during
thermalisation, then ``--trajectories`` trajectories of ``--chains`` chains are measured;
errors and τ_int come from the Γ-method with the chains as replicas.  When a chain is
too short for τ_int (fewer than 20 τ_int per chain, or Q never changed) the table shows a
lower bound ``> τ``.

Usage (a smoke run takes a minute; production wants ~10⁴ trajectories per β):

    python benchmarks/hmc_u1_scaling.py --trajectories 200 --betas 2 4 6
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from latticeflow.analysis import format_value_error, gamma_method
from latticeflow.mcmc import HMC
from latticeflow.theories import U1


def tau_column(data: np.ndarray) -> str:
    """τ_int with error, or a lower bound when the chains are too short to resolve it."""
    n = data.shape[1]
    if np.ptp(data) == 0:
        return f"> {n}"  # frozen: not one change in any chain
    with warnings.catch_warnings():  # "chain too short" is reported as a lower bound below
        warnings.simplefilter("ignore", RuntimeWarning)
        result = gamma_method(data)
    if n < 20 * result.tau_int:
        return f"> {result.tau_int:.1f}"
    return format_value_error(result.tau_int, result.tau_int_error, digits=1)


def run_beta(beta: float, args) -> dict:
    theory = U1((args.L, args.L), beta=beta)
    g = torch.Generator().manual_seed(args.seed)
    hmc = HMC(theory, integrator=args.integrator, trajectory_length=args.trajectory_length,
              steps=args.steps, target_acceptance=args.target)
    x = hmc.thermalize(theory.random_field(args.chains, g), args.thermalization, g)
    start = time.perf_counter()
    _, history = hmc.sample(x, args.trajectories, g)
    seconds = time.perf_counter() - start
    data = {k: v.T.double().numpy() for k, v in history.items()}  # (chains, n)
    exact = theory.exact()
    plaquette = gamma_method(data["plaquette"])
    chi = gamma_method(data["chi_Q"])
    return {
        "beta": beta, "steps": hmc.steps, "eps": hmc.step_size,
        "acceptance": data["accepted"].mean(),
        "plaquette": str(format_value_error(plaquette.mean, plaquette.error)),
        "plaquette_exact": exact["plaquette"],
        "tau_plaquette": tau_column(data["plaquette"]),
        "chi_Q": str(format_value_error(chi.mean, chi.error)),
        "chi_Q_exact": exact["chi_Q"],
        "tau_Q": tau_column(data["topological_charge"]),
        "ms_per_trajectory": 1e3 * seconds / (args.trajectories * args.chains),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=1000, help="per chain, after thermalisation")
    parser.add_argument("--thermalization", type=int, default=200)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--L", type=int, default=16)
    parser.add_argument("--betas", type=float, nargs="+", default=[2, 3, 4, 5, 6, 7])
    parser.add_argument("--integrator", choices=["omelyan", "leapfrog"], default="omelyan")
    parser.add_argument("--trajectory-length", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10, help="initial MD steps (tuned)")
    parser.add_argument("--target", type=float, default=0.8, help="target acceptance")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"U(1) L={args.L}, {args.chains} chains × {args.trajectories} trajectories "
          f"({args.integrator}, τ={args.trajectory_length}), torch threads={torch.get_num_threads()}\n")
    print("| β | steps | ε | acc | plaquette | exact | τ_int(plaq) | χ_Q | exact | τ_int(Q) "
          "| ms/traj/chain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for beta in args.betas:
        r = run_beta(beta, args)
        print(f"| {r['beta']:g} | {r['steps']} | {r['eps']:.3f} | {r['acceptance']:.2f} "
              f"| {r['plaquette']} | {r['plaquette_exact']:.5f} | {r['tau_plaquette']} "
              f"| {r['chi_Q']} | {r['chi_Q_exact']:.5f} | {r['tau_Q']} "
              f"| {r['ms_per_trajectory']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
