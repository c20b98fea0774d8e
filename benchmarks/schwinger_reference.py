"""Reference values of the two-flavour Schwinger model on 4×4 (β = 1, κ = 0.25), which the
sampler tests (tests/mcmc/test_schwinger_exactness.py) compare against.

Two independent estimates, both exact in the limit of many samples:

- brute force: i.i.d. uniform (Haar) links reweighted by e^{−S_eff} (no Markov chain, no
  molecular dynamics, no flow); its effective sample size is N·ESS with ESS ≈ 0.002 here;
- a long run of exact-determinant HMC (dense force, Γ-method errors over 64 chains).

Writes ``tests/mcmc/schwinger_reference.json`` with both and their combination (the
inverse-variance mean; the two must agree within their errors, which the script checks).

    OMP_NUM_THREADS=1 python benchmarks/schwinger_reference.py [--haar 4194304] [--trajectories 4000]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from latticeflow.analysis import gamma_method, reweighted_mean
from latticeflow.mcmc.hmc import HMC
from latticeflow.theories import Schwinger

POINT = dict(shape=(4, 4), beta=1.0, kappa=0.25)
OBSERVABLES = ("plaquette", "chiral_condensate", "chi_Q", "pion_t1", "pion_t2")
OUT = Path(__file__).resolve().parents[1] / "tests" / "mcmc" / "schwinger_reference.json"


def haar(theory, n: int, chunk: int = 1 << 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = {k: [] for k in OBSERVABLES}
    log_w = []
    for _ in tqdm(range(n // chunk), desc="haar", unit="chunk"):
        x = theory.random_field(chunk, g)
        log_w.append(-theory.action(x))
        o = theory.observables(x)
        for k in OBSERVABLES:
            obs[k].append(o[k])
    log_w = torch.cat(log_w).numpy()
    out = {}
    for k in OBSERVABLES:
        r = reweighted_mean(torch.cat(obs[k]).numpy(), log_w)
        out[k] = {"mean": r.mean, "error": r.error}
    w = np.exp(log_w - log_w.max())
    out["effective_samples"] = float(w.sum() ** 2 / (w**2).sum())
    return out


def hmc(theory, trajectories: int, chains: int = 64, seed: int = 1) -> dict:
    h = HMC(theory, steps=4, fermions="exact")
    g = torch.Generator().manual_seed(seed)
    x = h.thermalize(theory.random_field(chains, g), 300, g)
    hist = {k: [] for k in OBSERVABLES}
    for _ in tqdm(range(trajectories // 100), desc="hmc", unit="100 traj"):
        x, block = h.sample(x, 100, g)
        for k in OBSERVABLES:
            hist[k].append(block[k])
    out = {}
    for k in OBSERVABLES:
        r = gamma_method(torch.cat(hist[k]).numpy().T)
        out[k] = {"mean": r.mean, "error": r.error, "tau_int": r.tau_int}
    out["trajectories"] = trajectories * chains
    out["steps"], out["step_size"] = h.steps, h.step_size
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--haar", type=int, default=1 << 22)
    ap.add_argument("--trajectories", type=int, default=4000)
    args = ap.parse_args()
    theory = Schwinger(**POINT)
    t0 = time.time()
    brute = haar(theory, args.haar)
    long_run = hmc(theory, args.trajectories)
    combined = {}
    for k in OBSERVABLES:
        a, b = brute[k], long_run[k]
        wa, wb = a["error"] ** -2, b["error"] ** -2
        pull = (a["mean"] - b["mean"]) / math.hypot(a["error"], b["error"])
        combined[k] = {"mean": (wa * a["mean"] + wb * b["mean"]) / (wa + wb),
                       "error": (wa + wb) ** -0.5, "pull_haar_vs_hmc": pull}
        print(f"{k:18s} haar {a['mean']:.5f}({a['error']:.5f})  hmc {b['mean']:.5f}({b['error']:.5f})"
              f"  pull {pull:+.2f}")
        if abs(pull) > 4:
            raise SystemExit(f"{k}: the two references disagree by {pull:.1f} sigma")
    result = {"theory": {"name": "schwinger", **POINT, "shape": list(POINT["shape"])},
              "command": "OMP_NUM_THREADS=1 python benchmarks/schwinger_reference.py "
                         f"--haar {args.haar} --trajectories {args.trajectories}",
              "seconds": round(time.time() - t0, 1),
              "haar_reweighting": brute, "exact_hmc": long_run, "reference": combined}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
