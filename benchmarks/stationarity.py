"""Exactness of the flow samplers where their chains cannot converge in a run of minutes.

At U(1) L = 16, β ≥ 4 flow-MCMC accepts < 1 % of its proposals and flow HMC costs up to
2 s per trajectory, so runs started from a flow sample stay far shorter than τ_int(Q) and
their means test nothing.  A sampler that keeps e^{−S} invariant must keep an equilibrium
ensemble in equilibrium, however short the run.  So, per point (L, β, sampler):

1. HMC (the models' tuned τ = 8, 32 steps) thermalises C independent chains for
   ``--thermalization`` trajectories (≥ 18 τ_int(Q) at β = 6) and stores their last
   configurations (``hmc_start.h5``; its own row is checked against the exact values).
2. The sampler runs from them (``[sample] start``, no thermalization) for a few steps.
3. Each chain's mean of the plaquette and of Q²/V over its steps; the chains are
   independent replicas, so the mean of the C chain means and its error (their spread
   / √C) is an unbiased test, in σ, against the exact torus values.

How much each row can detect is printed beside it: the accepted moves, the share of the
chain-steps spent off the starting configuration, and the bias of the raw flow in units of
the row's error bar (where a chain that had drifted all the way to the flow's
distribution would sit).  Writes ``results.json`` and ``table.md`` into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/stationarity.py --out runs/stationarity
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from latticeflow import ensemble, pipeline
from latticeflow.config import load_config
from latticeflow.training import load_flow

#: steps per latent trajectory of length 0.5: where the scan's step-size tuner (target
#: acceptance 0.7) landed (docs/critical_slowing_down.md)
FLOW_HMC_STEPS = {(16, 3): 33, (16, 4): 67, (16, 5): 137, (16, 6): 216, (8, 4): 37, (8, 6): 119}
#: the rows the scan left unconverged
POINTS = ["16:4:flow-mcmc", "16:5:flow-mcmc", "16:6:flow-mcmc", "16:3:flow-hmc",
          "16:4:flow-hmc", "16:5:flow-hmc", "16:6:flow-hmc", "8:4:flow-hmc", "8:6:flow-hmc"]


def chain_means(values: np.ndarray) -> tuple[float, float]:
    """Mean of the chain means of ``(n_rows, C)`` data and its error (spread / √C)."""
    m = values.mean(axis=0)
    return float(m.mean()), float(m.std(ddof=1) / math.sqrt(m.size))


def test_row(path: Path, exact: dict) -> dict:
    """Chain-mean plaquette and χ_Q of an ensemble, deviations in σ, acceptance, moves."""
    with ensemble.open(path) as ens:
        obs = {k: ens.observable(k) for k in ("plaquette", "chi_Q")}
        accepted = ens.accepted
        row = {"rows": ens.n_rows, "chains": ens.n_chains, "seconds": ens.generation_seconds}
    for k, v in obs.items():
        mean, err = chain_means(v)
        row[k] = [mean, err, exact[k]]
        row[f"{k}_dev"] = (mean - exact[k]) / err
    if accepted is not None:
        row["acceptance"] = float(accepted.mean())
        row["accepted_moves"] = int(accepted.sum())
        row["moved"] = float((np.cumsum(accepted, axis=0) > 0).mean())  # chain-steps off the start
    return row


def flow_bias(cfg, flow, n: int, path: Path, seed: int) -> dict:
    """Raw (unweighted) means of ``n`` flow samples: where a sampler without its
    Metropolis correction would drift."""
    c = pipeline.override(cfg, "sample", sampler="flow-iid", chains=1, seed=seed, batch_size=512)
    pipeline.sample(c, n, out=path, flow=flow, configs=False, progress=False)
    with ensemble.open(path) as ens:
        return {k: float(ens.observable(k).mean()) for k in ("plaquette", "chi_Q")}


def hmc_start(L: int, beta: int, chains: int, thermalization: int, out: Path, seed: int) -> Path:
    """One stored row of ``chains`` HMC chains after ``thermalization`` tuned trajectories."""
    path = out / f"L{L}_b{beta}" / "hmc_start.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = pipeline.override(load_config(f"models/u1_L{L}_b{beta}.toml"), "hmc", chains=chains,
                            seed=seed, thermalization=thermalization, tune=False)
    pipeline.hmc(cfg, chains, out=path, configs=True, progress=False)
    return path


def model(L: int, beta: int, kind: str):
    """``(config, flow)``: the spline flow of ``models/u1_L<L>_b<β>`` for flow-MCMC, the
    smooth NCP flow of ``models/u1_L16_b<β>_ncp`` (run on this L) for flow HMC."""
    theory = load_config(f"models/u1_L{L}_b{beta}.toml").theory
    name = f"models/u1_L16_b{beta}_ncp.toml" if kind == "flow-hmc" else f"models/u1_L{L}_b{beta}.toml"
    cfg = dataclasses.replace(load_config(name), theory=theory)
    return cfg, load_flow(Path(name).with_suffix(".pt"), cfg)


def run_point(point: str, args) -> dict:
    L, beta, kind = point.split(":")
    L, beta = int(L), int(beta)
    out = args.out / f"L{L}_b{beta}"
    t0 = time.perf_counter()
    start = hmc_start(L, beta, args.chains, args.thermalization, args.out, args.seed)
    cfg, flow = model(L, beta, kind)
    exact = cfg.theory.build().exact()
    c = pipeline.override(cfg, "sample", sampler=kind, chains=args.chains, seed=args.seed + 1,
                          thermalization=0, block=1000)
    if kind == "flow-hmc":
        c = pipeline.override(c, "hmc", integrator="omelyan", trajectory_length=0.5, tune=False,
                              steps=FLOW_HMC_STEPS[(L, beta)])
        steps = args.trajectories
    else:
        steps = args.proposals
    path = out / f"{kind}.h5"
    pipeline.sample(c, steps * args.chains, out=path, flow=flow, configs=False, progress=False,
                    start=str(start))
    row = {"L": L, "beta": beta, "sampler": kind, "start": test_row(start, exact),
           "run": test_row(path, exact)}
    raw = flow_bias(cfg, flow, args.flow_samples, out / f"{kind}-raw-flow.h5", args.seed + 2)
    row["flow_bias_sigma"] = {k: (raw[k] - exact[k]) / row["run"][k][1] for k in raw}
    row["raw_flow"] = raw
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def table(rows: list[dict]) -> str:
    head = ("| L | β | sampler | chains × steps | acceptance | accepted moves | steps off the start | plaquette | dev | "
            "χ_Q | dev | raw flow's bias (plaq, χ_Q) | HMC start dev (plaq, χ_Q) | seconds |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        run, s, b = r["run"], r["start"], r["flow_bias_sigma"]
        lines.append(
            f"| {r['L']} | {r['beta']} | {r['sampler']} | {run['chains']} × {run['rows']} | "
            f"{run['acceptance']:.3g} | {run['accepted_moves']} | {run['moved']:.0%} | "
            f"{run['plaquette'][0]:.5f}({run['plaquette'][1] * 1e5:.0f}) | {run['plaquette_dev']:+.1f}σ | "
            f"{run['chi_Q'][0]:.5f}({run['chi_Q'][1] * 1e5:.0f}) | {run['chi_Q_dev']:+.1f}σ | "
            f"{b['plaquette']:+.1f}σ, {b['chi_Q']:+.1f}σ | "
            f"{s['plaquette_dev']:+.1f}σ, {s['chi_Q_dev']:+.1f}σ | {run['seconds']:.0f} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/stationarity"))
    p.add_argument("--points", nargs="+", default=POINTS, help="L:beta:sampler")
    p.add_argument("--chains", type=int, default=32)
    p.add_argument("--thermalization", type=int, default=3000, help="HMC trajectories of τ = 8")
    p.add_argument("--proposals", type=int, default=1500, help="flow-MCMC steps per chain")
    p.add_argument("--trajectories", type=int, default=3, help="flow-HMC trajectories per chain")
    p.add_argument("--flow-samples", type=int, default=2048)
    p.add_argument("--seed", type=int, default=41)
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for point in args.points:
        rows.append(run_point(point, args))
        r = rows[-1]
        print(json.dumps({"point": point, "acceptance": r["run"]["acceptance"],
                          "dev": [r["run"]["plaquette_dev"], r["run"]["chi_Q_dev"]],
                          "flow_bias": r["flow_bias_sigma"], "s": round(r["wall_seconds"])}), flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))
        (args.out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
