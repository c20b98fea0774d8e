"""Critical slowing down in φ⁴ along the AKS line (arXiv:1904.12072, Fig. 7 analogue):
τ_int of |M| and of χ₂ against L for flow-MCMC (the shipped weights models/phi4_E1..E5.pt)
and HMC, with the dynamical exponent z of HMC fitted as τ_int ∝ L^z.

The ensembles E1–E5 keep m_p L ≈ 4 fixed while L grows (m² = −4, λ tuned), so L is the
correlation length in lattice units up to a constant and τ_int ∝ L^z is the usual
critical-slowing-down law.  HMC: trajectory length 1, Omelyan, step size tuned to
acceptance 0.8 during 500 thermalisation trajectories (then frozen), started from flow
samples (hot starts leave domain walls that live longer than the run); flow-MCMC: Metropolis independence
with the flow in float32, weights in float64.  τ_int is in units of each sampler's steps
(one trajectory, one proposal); the costs per step measured in the same run are printed
beside it.  Writes docs/images/phi4_scaling.png and docs/phi4_scaling.json.

    OMP_NUM_THREADS=1 python benchmarks/phi4_scaling.py [--n 40000] [--hmc-trajectories 4000]
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
from latticeflow.mcmc.driver import run_ensemble
from latticeflow.mcmc.flow_samplers import IndependenceMetropolis
from latticeflow.mcmc.hmc import HMC
from latticeflow import ensemble
from latticeflow.pipeline import flow_proposal
from latticeflow.training import load_flow

ROOT = Path(__file__).resolve().parents[1]
OBSERVABLES = ("abs_magnetization", "chi2")


def flow_mcmc(k: int, n: int, tmp: Path) -> dict:
    cfg = load_config(ROOT / "models" / f"phi4_E{k}.toml")
    theory = cfg.theory.build()
    flow = load_flow(ROOT / "models" / f"phi4_E{k}.pt")
    sampler = IndependenceMetropolis(theory, flow_proposal(flow, "float32"), n_chains=4,
                                     batch_size=2048, seed=k)
    path = tmp / f"flow_E{k}.h5"
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run_ensemble(sampler, theory=theory, path=path, n=n, config_text=cfg.text, seed=k,
                 block=5000, progress=False, store_configs=False)
    seconds = time.perf_counter() - t0
    with ensemble.open(path) as ens:
        out = {name: gamma_method(ens.observable(name).T) for name in OBSERVABLES}
        acceptance = float(ens.accepted.mean())
    return {"L": theory.shape[0], "acceptance": acceptance, "seconds_per_step": seconds / n, **out}


def hmc(k: int, trajectories: int, chains: int = 8) -> dict:
    cfg = load_config(ROOT / "models" / f"phi4_E{k}.toml")
    theory = cfg.theory.build()
    h = HMC(theory, trajectory_length=1.0, steps=10, target_acceptance=0.8)
    g = torch.Generator().manual_seed(100 + k)
    # start from flow samples: hot (random) starts in the broken phase freeze in domain walls
    # across the torus, metastable for far longer than the runs (|M| and χ₂ come out low)
    with torch.no_grad():
        start = load_flow(ROOT / "models" / f"phi4_E{k}.pt").sample(chains, generator=g)[0].double()
    x = h.thermalize(start, 500, g)
    t0 = time.perf_counter()
    _, hist = h.sample(x, trajectories, g)
    seconds = time.perf_counter() - t0
    out = {name: gamma_method(hist[name].T.numpy()) for name in OBSERVABLES}
    return {"L": theory.shape[0], "acceptance": float(hist["accepted"].double().mean()), "steps": h.steps,
            "seconds_per_step": seconds / (trajectories * chains), **out}


def fit_z(ls, taus, errors) -> tuple[float, float]:
    """Weighted least squares of log τ = z log L + c; returns (z, its error)."""
    x, y = np.log(ls), np.log(taus)
    w = (np.asarray(taus) / np.asarray(errors)) ** 2  # 1/σ² of log τ
    a = np.vstack([x, np.ones_like(x)]).T
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    z, _ = cov @ (a.T @ (w * y))
    return float(z), float(np.sqrt(cov[0, 0]))


def plot(rows, fits, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, OBSERVABLES):
        for sampler, marker in (("hmc", "o"), ("flow", "s")):
            ls = [r["L"] for r in rows]
            tau = [r[sampler][name]["tau_int"] for r in rows]
            err = [r[sampler][name]["tau_int_error"] for r in rows]
            label = "HMC" if sampler == "hmc" else "flow-MCMC (shipped E1–E5 weights)"
            ax.errorbar(ls, tau, err, marker=marker, capsize=3, label=label)
        z, dz, c = fits[name]
        grid = np.linspace(min(ls), max(ls), 50)
        ax.plot(grid, np.exp(c) * grid**z, "k:", label=f"HMC fit L^z, z = {z:.2f}({dz * 100:.0f})")
        ax.set(xscale="log", yscale="log", xlabel="L", title=f"τ_int of {name}")
        ax.set_xticks(ls, [str(v) for v in ls])
        ax.legend(fontsize=8)
    axes[0].set_ylabel("τ_int (steps: trajectories / proposals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40000, help="flow-MCMC configurations per ensemble")
    ap.add_argument("--hmc-trajectories", type=int, default=4000, help="per chain (8 chains)")
    ap.add_argument("--tmp", default=str(ROOT / "runs" / "phi4_scaling"))
    args = ap.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(1, 6):
        f, h = flow_mcmc(k, args.n, tmp), hmc(k, args.hmc_trajectories)
        row = {"ensemble": f"E{k}", "L": f["L"], "flow": {}, "hmc": {}}
        for sampler, res in (("flow", f), ("hmc", h)):
            row[sampler] = {"acceptance": res["acceptance"], "seconds_per_step": res["seconds_per_step"]}
            for name in OBSERVABLES:
                r = res[name]
                row[sampler][name] = {"mean": r.mean, "error": r.error, "tau_int": r.tau_int,
                                      "tau_int_error": r.tau_int_error}
        rows.append(row)
        print(f"E{k} L={f['L']:2d}  flow acc {f['acceptance']:.3f}  "
              + "  ".join(f"{name}: flow {format_value_error(f[name].mean, f[name].error)} "
                          f"τ {f[name].tau_int:.2f}  hmc {format_value_error(h[name].mean, h[name].error)} "
                          f"τ {h[name].tau_int:.2f}" for name in OBSERVABLES), flush=True)
    fits = {}
    for name in OBSERVABLES:
        ls = [r["L"] for r in rows]
        z, dz = fit_z(ls, [r["hmc"][name]["tau_int"] for r in rows], [r["hmc"][name]["tau_int_error"] for r in rows])
        c = float(np.mean(np.log([r["hmc"][name]["tau_int"] for r in rows]) - z * np.log(ls)))
        fits[name] = (z, dz, c)
        zf, dzf = fit_z(ls, [r["flow"][name]["tau_int"] for r in rows], [r["flow"][name]["tau_int_error"] for r in rows])
        print(f"{name}: HMC z = {z:.3f} ± {dz:.3f};  flow-MCMC slope {zf:.3f} ± {dzf:.3f}")
    plot(rows, fits, ROOT / "docs" / "images" / "phi4_scaling.png")
    out = {"command": f"OMP_NUM_THREADS=1 python benchmarks/phi4_scaling.py --n {args.n} "
                      f"--hmc-trajectories {args.hmc_trajectories}",
           "rows": rows, "hmc_z": {k: {"z": v[0], "error": v[1]} for k, v in fits.items()}}
    (ROOT / "docs" / "phi4_scaling.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
