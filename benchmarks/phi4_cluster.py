"""Cluster updates against HMC along the φ⁴ line E1–E5 (models/phi4_E*.toml, L = 6 … 14,
m_p L ≈ 4): τ_int of |M| and χ₂, seconds per independent |M|, and a fitted dynamic exponent
z (τ_int ∝ L^z) for each sampler, beside the HMC and flow-MCMC numbers of
docs/phi4_scaling.json.

Samplers (all vectorised over ``--chains`` chains, the same number for each):

- ``hmc``: HMC alone (Omelyan, trajectory length 1, ε tuned to acceptance 0.8 during the
  thermalisation, then frozen), started from the equilibrated fields of the first cluster
  variant (hot starts freeze in domain walls in this broken phase).
- ``wolff+hmc``, ``sw+hmc``, ``wolff+metropolis``, ``sw+metropolis``: the ``cluster``
  sampler (latticeflow.mcmc.cluster): per step ``--updates-per-step`` field updates (one HMC
  trajectory, or one checkerboard Metropolis sweep tuned to acceptance 0.5), then one Wolff
  or Swendsen–Wang update of the signs; a hot start thermalised by the sampler itself.

τ_int is in units of each sampler's steps (Γ-method, chains as replicas); the cost of an
independent |M| is 2 τ_int × (CPU seconds per step and chain), measured in the same run with
one thread (CPU time, not wall time, so that other jobs on a shared machine barely change it).

    OMP_NUM_THREADS=1 python benchmarks/phi4_cluster.py [--steps 4000] [--chains 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latticeflow.analysis import format_value_error, gamma_method
from latticeflow.config import load_config
from latticeflow.mcmc.cluster import ClusterChains, ClusterStep, LocalMetropolisKernel, SwendsenWangKernel, WolffKernel
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.hmc_chains import HMCChains
from latticeflow.mcmc.kernels import HMCKernel

ROOT = Path(__file__).resolve().parents[1]
OBSERVABLES = ("abs_magnetization", "chi2")
VARIANTS = ("sw+hmc", "wolff+hmc", "sw+metropolis", "wolff+metropolis", "hmc")


def cluster_chains(theory, variant: str, chains: int, seed: int, thermalization: int, k: int):
    flip, field = variant.split("+")
    move = HMCKernel(HMC(theory, steps=10)) if field == "hmc" else LocalMetropolisKernel(theory, 1.0)
    kernel = ClusterStep(move, WolffKernel() if flip == "wolff" else SwendsenWangKernel(), k)
    return ClusterChains(theory, kernel, chains, seed=seed, thermalization=thermalization)


def hmc_chains(theory, start: torch.Tensor, seed: int, thermalization: int):
    chains = HMCChains(theory, HMC(theory, steps=10), start.shape[0], thermalization, seed=seed, progress=False)
    chains.initial_field = lambda: start.clone()  # equilibrium fields, not a hot start
    return chains


def measure(chains, steps: int) -> dict:
    chains.start(None)
    t0 = time.process_time()  # CPU time of this (one-thread) process: other jobs on the machine barely move it
    block = chains.advance(steps)
    seconds = time.process_time() - t0
    out = {"seconds_per_step": seconds / (steps * chains.n_chains),
           "acceptance": float(np.mean(block.mcmc.get("amplitude_acceptance", block.mcmc["accepted"])))}
    if "cluster_size" in block.mcmc:
        out["cluster_size"] = float(np.mean(block.mcmc["cluster_size"]))
    for name in OBSERVABLES:
        r = gamma_method(block.observables[name].T)
        out[name] = {"mean": r.mean, "error": r.error, "tau_int": r.tau_int, "tau_int_error": r.tau_int_error}
    out["seconds_per_independent"] = 2 * out["abs_magnetization"]["tau_int"] * out["seconds_per_step"]
    return out, chains.x


def fit_z(ls, taus, errors) -> tuple[float, float]:
    """Weighted least squares of log τ = z log L + c; returns (z, its error)."""
    x, y = np.log(ls), np.log(taus)
    w = (np.asarray(taus) / np.asarray(errors)) ** 2
    a = np.vstack([x, np.ones_like(x)]).T
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    return float((cov @ (a.T @ (w * y)))[0]), float(np.sqrt(cov[0, 0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000, help="stored steps per chain and sampler")
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--thermalization", type=int, default=400)
    ap.add_argument("--updates-per-step", type=int, default=1)
    ap.add_argument("--ensembles", default="1,2,3,4,5", help="which of E1..E5")
    ap.add_argument("--variants", default="sw+hmc,wolff+hmc,hmc", help=f"among {', '.join(VARIANTS)}")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    variants = args.variants.split(",")
    reference = json.loads((ROOT / "docs" / "phi4_scaling.json").read_text())["rows"]
    rows = []
    for k in map(int, args.ensembles.split(",")):
        theory = load_config(ROOT / "models" / f"phi4_E{k}.toml").theory.build()
        row, start = {"ensemble": f"E{k}", "L": theory.shape[0]}, None
        for v in variants:
            if v == "hmc":
                if start is None:  # equilibrium fields to start HMC from
                    warm = cluster_chains(theory, "wolff+hmc", args.chains, k, args.thermalization, 1)
                    warm.start(None)
                    start = warm.x
                row[v], _ = measure(hmc_chains(theory, start, 100 + k, args.thermalization), args.steps)
            else:
                row[v], x = measure(cluster_chains(theory, v, args.chains, k, args.thermalization,
                                                   args.updates_per_step), args.steps)
                start = x if start is None else start
            r = row[v]
            print(f"E{k} L={row['L']:2d} {v:17s} acc {r['acceptance']:.3f}  "
                  + "  ".join(f"{n} {format_value_error(r[n]['mean'], r[n]['error'])} τ {r[n]['tau_int']:.3f}"
                              f"({r[n]['tau_int_error'] * 1000:.0f})" for n in OBSERVABLES)
                  + f"  {r['seconds_per_step'] * 1e3:.3f} ms/step  {r['seconds_per_independent'] * 1e3:.3f} ms/indep",
                  flush=True)
        rows.append(row)
    ref = {r["ensemble"]: r for r in reference}
    print("\n| ensemble | L | sampler | acceptance | ⟨\\|M\\|⟩ | τ_int(\\|M\\|) | τ_int(χ₂) | CPU ms/step "
          "| CPU ms per independent \\|M\\| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        old = ref.get(row["ensemble"], {})
        runs = [(v, row[v]) for v in variants] + [(f"{s} (phi4_scaling.json)", old[s]) for s in ("hmc", "flow") if old]
        for v, r in runs:
            m, cost = r["abs_magnetization"], r.get("seconds_per_independent")
            cost = 2 * m["tau_int"] * r["seconds_per_step"] if cost is None else cost
            print(f"| {row['ensemble']} | {row['L']} | {v} | {r['acceptance']:.3f} | "
                  f"{format_value_error(m['mean'], m['error'])} | "
                  + " | ".join(format_value_error(r[n]["tau_int"], r[n]["tau_int_error"]) for n in OBSERVABLES)
                  + f" | {r['seconds_per_step'] * 1e3:.3f} | {cost * 1e3:.3f} |")
    fits = {}
    if len(rows) >= 3:
        ls = [r["L"] for r in rows]
        for v in variants:
            fits[v] = {n: fit_z(ls, [r[v][n]["tau_int"] for r in rows], [r[v][n]["tau_int_error"] for r in rows])
                       for n in OBSERVABLES}
            print(f"z {v:17s} " + "  ".join(f"{n}: {z:.2f} ± {dz:.2f}" for n, (z, dz) in fits[v].items()))
        for s in ("hmc", "flow"):
            old = [ref[r["ensemble"]][s] for r in rows if r["ensemble"] in ref]
            if len(old) == len(rows):
                z = {n: fit_z(ls, [o[n]["tau_int"] for o in old], [o[n]["tau_int_error"] for o in old]) for n in OBSERVABLES}
                print(f"z {s + ' (json)':17s} " + "  ".join(f"{n}: {a:.2f} ± {b:.2f}" for n, (a, b) in z.items()))
    if args.json:
        command = ("OMP_NUM_THREADS=1 python benchmarks/phi4_cluster.py "
                   f"--steps {args.steps} --chains {args.chains} --thermalization {args.thermalization} "
                   f"--updates-per-step {args.updates_per_step} --ensembles {args.ensembles} --variants {args.variants}")
        Path(args.json).write_text(json.dumps({"command": command, "rows": rows,
                                               "z": {v: {n: {"z": z, "error": dz} for n, (z, dz) in f.items()}
                                                     for v, f in fits.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
