"""The Schwinger model at L = 8, β = 2, κ = 0.26: flow-MCMC with the shipped weights against
HMC with the exact determinant and HMC with pseudofermions, measured in one run.

For each sampler: acceptance, τ_int (in its own steps) and mean of the topological charge
Q, χ_Q, the chiral condensate and the plaquette; seconds per step; and the cost per
independent sample, 2 τ_int × seconds per configuration (one step of one chain; the
chains are advanced as one batch, 4 for the flow, 8 for HMC) (training time of the flow reported
beside it).  HMC: Omelyan, trajectory length 1, step size tuned to acceptance 0.8 (then
frozen), CG tolerance 1e-10.  Writes docs/schwinger.json and docs/images/schwinger_tau.png.

    OMP_NUM_THREADS=1 python benchmarks/schwinger_study.py [--n 20000] [--trajectories 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latticeflow import ensemble
from latticeflow.analysis import format_value_error, gamma_method
from latticeflow.config import load_config
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_samplers import IndependenceMetropolis
from latticeflow.mcmc.hmc import HMC
from latticeflow.pipeline import flow_proposal
from latticeflow.training import load_flow

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "schwinger_L8_b2_k0.26.toml"
OBSERVABLES = ("topological_charge", "chi_Q", "chiral_condensate", "plaquette")


def summarize(data: dict, seconds_per_step: float) -> dict:
    out = {"seconds_per_step": seconds_per_step}
    for name in OBSERVABLES:
        r = gamma_method(data[name])
        out[name] = {"mean": r.mean, "error": r.error, "tau_int": r.tau_int,
                     "tau_int_error": r.tau_int_error,
                     "seconds_per_independent": 2 * r.tau_int * seconds_per_step}
    return out


def flow_mcmc(cfg, n: int, tmp: Path) -> dict:
    theory = cfg.theory.build()
    flow = load_flow(MODEL.with_suffix(".pt"), cfg)
    sampler = IndependenceMetropolis(theory, flow_proposal(flow, "float32"), n_chains=4,
                                     batch_size=512, seed=11)
    path = tmp / "schwinger_flow.h5"
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run_ensemble(sampler, theory=theory, path=path, n=n, config_text=cfg.text, seed=11,
                 block=1000, progress=True, store_configs=False)
    seconds = time.perf_counter() - t0
    with ensemble.open(path) as ens:
        data = {name: ens.observable(name).T for name in OBSERVABLES}
        acc = float(ens.accepted.mean())
    # seconds per configuration: the 4 chains advance together, so one step costs seconds / n
    return {"acceptance": acc, **summarize(data, seconds / n)}


def hmc(cfg, fermions: str, trajectories: int, chains: int = 8) -> dict:
    theory = cfg.theory.build()
    h = HMC(theory, trajectory_length=1.0, steps=6, target_acceptance=0.8, fermions=fermions,
            cg_tolerance=1e-10)
    g = torch.Generator().manual_seed(21)
    x = h.thermalize(theory.random_field(chains, g), 200, g)
    t0 = time.perf_counter()
    _, hist = h.sample(x, trajectories, g)
    seconds = time.perf_counter() - t0
    data = {name: hist[name].T.numpy() for name in OBSERVABLES}
    out = {"acceptance": float(hist["accepted"].double().mean()), "md_steps": h.steps,
           **summarize(data, seconds / (trajectories * chains))}
    if "cg_iterations" in hist:
        out["cg_iterations_mean"] = float(hist["cg_iterations"].mean())
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(OBSERVABLES)
    xs = np.arange(len(names))
    width = 0.8 / len(results)
    for i, (label, r) in enumerate(results.items()):
        tau = [r[n]["tau_int"] for n in names]
        err = [r[n]["tau_int_error"] for n in names]
        cost = [r[n]["seconds_per_independent"] * 1e3 for n in names]
        axes[0].bar(xs + i * width, tau, width, yerr=err, capsize=3, label=label)
        axes[1].bar(xs + i * width, cost, width, label=label)
    for ax, title in zip(axes, ("τ_int (steps)", "ms per independent sample (generation only)")):
        ax.set_xticks(xs + width * (len(results) - 1) / 2, names, rotation=15)
        ax.set_title(title)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("Schwinger model N_f = 2, L = 8, β = 2, κ = 0.26")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="flow-MCMC configurations (4 chains)")
    ap.add_argument("--trajectories", type=int, default=1000, help="HMC trajectories per chain (8 chains)")
    ap.add_argument("--tmp", default=str(ROOT / "runs" / "schwinger_study"))
    args = ap.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = load_config(MODEL)
    results = {"flow-mcmc": flow_mcmc(cfg, args.n, tmp),
               "hmc (exact det)": hmc(cfg, "exact", args.trajectories),
               "hmc (pseudofermions)": hmc(cfg, "pseudofermion", args.trajectories)}
    for label, r in results.items():
        cells = "  ".join(f"{n}: {format_value_error(r[n]['mean'], r[n]['error'])} τ {r[n]['tau_int']:.2f}"
                          for n in OBSERVABLES)
        cg = f"  CG its {r['cg_iterations_mean']:.0f}" if "cg_iterations_mean" in r else ""
        print(f"{label:22s} acc {r['acceptance']:.3f}  {r['seconds_per_step'] * 1e3:.2f} ms/config{cg}  {cells}")
    plot(results, ROOT / "docs" / "images" / "schwinger_tau.png")
    out = {"command": f"OMP_NUM_THREADS=1 python benchmarks/schwinger_study.py --n {args.n} "
                      f"--trajectories {args.trajectories}", "results": results}
    (ROOT / "docs" / "schwinger.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
