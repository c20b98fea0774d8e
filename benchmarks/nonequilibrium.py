"""Defect NE-MCMC for pure 2D U(1) (the ``ne-mcmc`` sampler, docs/nonequilibrium.md): how
its acceptance, the ESS of e^{−W} and τ_int(Q) behave with the volume at fixed N/L.

For each L: C chains of the sampler (heat-bath protocol of N = k·L updates, a defect of
``--defect`` plaquettes) run into an ensemble file, and the package's analysis reports the
acceptance, the ESS of the proposals' e^{−W}, ΔF = −log⟨e^{−W}⟩ against the exact value,
τ_int(Q), the plaquette and χ_Q against the exact torus values, and the seconds per
independent Q (generation seconds × 2τ_int(Q)/N).  ``--transports`` instead draws C
transports once per defect length and estimates the Metropolis acceptance by running
independence chains over random orders of their works (cheaper; no exactness check).

    OMP_NUM_THREADS=1 python benchmarks/nonequilibrium.py --L 8 16 32 --rows 60 25 12 --chains 32 32 24
    OMP_NUM_THREADS=1 python benchmarks/nonequilibrium.py --transports --L 32 --defect 1 L/2 L
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latticeflow
from latticeflow.analysis.gamma import ess
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.nemcmc import ExactStarts, HeatbathUpdate, NEMCMCChains, NonEquilibriumKernel, Transport
from latticeflow.theories import U1
from latticeflow.theories.defect import Protocol, free_energy_difference, with_defect


def defect_length(spec: str, L: int) -> int:
    """``L``, ``L/k`` or a number → plaquettes."""
    if spec == "L":
        return L
    return max(1, L // int(spec[2:])) if spec.startswith("L/") else int(spec)


def chain_run(L, beta, length, steps, overrelaxation, chains, rows, seed, folder) -> dict:
    theory = U1((L, L), beta)
    defect = with_defect(theory, length)
    kernel = NonEquilibriumKernel(Transport(defect, Protocol.linear(steps), HeatbathUpdate(defect, overrelaxation)),
                                  ExactStarts(defect))
    record = {"delta_f_exact": free_energy_difference(theory.shape, beta, length)}
    sampler = NEMCMCChains(theory, kernel, chains, seed=seed, store_configs=False, record=record)
    path = Path(folder) / f"L{L}_defect{length}.h5"
    run_ensemble(sampler, theory=theory, path=path, n=chains * rows, config_text="", seed=seed,
                 block=max(1, rows // 4), store_configs=False, progress=False)
    s = latticeflow.analyze(path)
    q, obs, exact = s["observables"]["topological_charge"], s["observables"], s["exact"]
    out = {"L": L, "beta": beta, "defect_length": length, "protocol_steps": steps, "overrelaxation": overrelaxation,
           "chains": chains, "rows": rows, "acceptance": s["acceptance"], "ess": s["ess"],
           "delta_f": s["delta_f"]["mean"], "delta_f_error": s["delta_f"]["error"],
           "delta_f_exact": s["delta_f"]["exact"], "tau_int_Q": q["tau_int"], "tau_int_Q_error": q["tau_int_error"],
           "too_short": q["too_short"], "seconds": s["generation_seconds"],
           "seconds_per_independent_Q": s["generation_seconds"] * 2 * q["tau_int"] / s["n"]}
    for name in ("plaquette", "chi_Q"):
        r = obs[name]
        out[name] = {"mean": r["mean"], "error": r["error"], "exact": exact[name],
                     "deviation_sigma": (r["mean"] - exact[name]) / r["error"]}
    return out


def independence_acceptance(work: np.ndarray, orders: int = 50, seed: int = 0) -> float:
    """The acceptance of Metropolis independence chains fed these works in random orders."""
    rng, rates = np.random.default_rng(seed), []
    for _ in range(orders):
        w = rng.permutation(work)
        current, accepted = w[0], 0
        for proposal, u in zip(w[1:], rng.random(len(w) - 1)):
            if math.log(u) < current - proposal:
                current, accepted = proposal, accepted + 1
        rates.append(accepted / (len(w) - 1))
    return float(np.mean(rates))


def transports(L, beta, length, steps, overrelaxation, chains, seed) -> dict:
    theory = U1((L, L), beta)
    defect = with_defect(theory, length)
    transport = Transport(defect, Protocol.linear(steps), HeatbathUpdate(defect, overrelaxation))
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    _, work, info = transport(ExactStarts(defect).propose(chains, g)[0], g)
    seconds, work = time.perf_counter() - t0, work.numpy()
    shift = work.min()
    return {"L": L, "beta": beta, "defect_length": length, "protocol_steps": steps, "overrelaxation": overrelaxation,
            "transports": chains, "acceptance_estimate": independence_acceptance(work), "ess": ess(-work),
            "work_std": float(work.std()), "delta_f": float(shift - np.log(np.mean(np.exp(-(work - shift))))),
            "delta_f_exact": free_energy_difference(theory.shape, beta, length),
            "sector_changed": float(np.mean(info["sector_change"].numpy() != 0)),
            "seconds_per_transport": seconds / chains}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--L", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--beta", type=float, default=8.0)
    p.add_argument("--defect", nargs="+", default=["L/2"], help="defect lengths: 1, L/2, L or numbers")
    p.add_argument("--steps-per-L", type=int, default=4, help="N = this × L protocol updates")
    p.add_argument("--overrelaxation", type=int, default=1, help="overrelaxation sweeps per heat-bath sweep")
    p.add_argument("--chains", type=int, nargs="+", default=[32], help="per L (the last one repeats)")
    p.add_argument("--rows", type=int, nargs="+", default=[40], help="steps per chain, per L")
    p.add_argument("--transports", action="store_true", help="transports only: acceptance estimate, ESS")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for i, L in enumerate(a.L):
            chains, rows = a.chains[min(i, len(a.chains) - 1)], a.rows[min(i, len(a.rows) - 1)]
            for spec in a.defect:
                length, steps = defect_length(spec, L), a.steps_per_L * L
                if a.transports:
                    r = transports(L, a.beta, length, steps, a.overrelaxation, chains, a.seed)
                    print(f"L={L:3d} defect={length:3d} N={steps:4d} OR={a.overrelaxation}: acceptance ≈ "
                          f"{r['acceptance_estimate']:.2f}, ESS {r['ess']:.2f}, std W {r['work_std']:.2f}, ΔF "
                          f"{r['delta_f']:.2f} (exact {r['delta_f_exact']:.2f}), {r['seconds_per_transport']:.2f} s "
                          "per transport", flush=True)
                else:
                    r = chain_run(L, a.beta, length, steps, a.overrelaxation, chains, rows, a.seed, folder)
                    pl, chi = r["plaquette"], r["chi_Q"]
                    print(f"L={L:3d} defect={length:3d} N={steps:4d} OR={a.overrelaxation}: acceptance "
                          f"{r['acceptance']:.3f}, ESS {r['ess']:.3f}, "
                          f"ΔF {r['delta_f']:.3f}({r['delta_f_error']:.3f}) exact {r['delta_f_exact']:.3f}, τ_int(Q) {r['tau_int_Q']:.2f}({r['tau_int_Q_error']:.2f})"
                          f"{'*' if r['too_short'] else ''}, plaquette {pl['deviation_sigma']:+.1f}σ, χ_Q "
                          f"{chi['mean']:.5f}({chi['error']:.5f}) vs {chi['exact']:.5f} "
                          f"({chi['deviation_sigma']:+.1f}σ), {r['seconds_per_independent_Q']:.2f} s per "
                          f"independent Q ({r['seconds']:.0f} s)", flush=True)
                results.append(r)
    if a.json:
        command = " ".join(["benchmarks/nonequilibrium.py", *sys.argv[1:]])
        a.json.write_text(json.dumps({"command": command, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
