"""Plain, annealed and flow-assisted instanton jumps in the Schwinger model (docs/flow_jumps.md):
the acceptance of each move from the same equilibrium configurations and its cost per move.

A chain of C configurations of the target is thermalised by exact-determinant HMC (step size
tuned, then frozen) and advanced between rounds by one HMC trajectory and one plain jump.  In
every round each variant proposes one move per configuration — the plain jump (N = 0), annealed
jumps with N transport trajectories (the base's frozen integrator), and with ``--maps`` the flow
jump with the model's maps — and records min(1, e^{−W}) (its mean is the acceptance rate of
moves from equilibrium) and the seconds it took.  The maps are the model's weights beside it
(``latticeflow train MODEL.toml``: ``[train] objective = "jump-work"``) or a run directory's
(``--weights``).  The sectors' bound: no move between neighbouring sectors is accepted more
often than a perfect one, Σ_Q P(Q) ½ Σ_± min(1, P(Q ± 1)/P(Q)), from the chain's charges.

    OMP_NUM_THREADS=1 python benchmarks/flow_jumps.py models/flow_jump_schwinger_L8_b6_k0.24.toml \\
        --steps 0 1 2 4 --rounds 8 --chains 16 --maps --json docs/flow_jumps.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from latticeflow.config import parse_config
from latticeflow.mcmc.flow_jumps import AnnealedJump, TransportHMC
from latticeflow.mcmc.hmc import HMC
from latticeflow.mcmc.jumps import InstantonJump
from latticeflow.mcmc.kernels import KernelState
from latticeflow.theories.u1 import topological_charge
from latticeflow.training import load_flow
from latticeflow.training.jump_work import jump_maps


def move(jump, x, g):
    q, centre, forward = jump.draw(x.shape[0], g)
    t = time.perf_counter()
    with torch.no_grad():
        _, work, acc = jump.transport(x, q, centre, forward, g)
    return torch.clamp(torch.exp(-work), max=1.0).numpy(), time.perf_counter() - t, acc


def follow(theory, hmc):
    update = TransportHMC(theory)
    update.follow(hmc)
    return update


def sector_bound(charges: np.ndarray) -> float:
    """The acceptance of a perfect jump (one that lands in equilibrium in the new sector),
    Σ_Q P(Q) ½ Σ_± min(1, P(Q ± 1)/P(Q)), from the chain's charges."""
    values, counts = np.unique(charges, return_counts=True)
    p = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
    return sum(pq * 0.5 * sum(min(1.0, p.get(q + d, 0.0) / pq) for d in (-1, 1)) for q, pq in p.items())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--L", type=int, default=None, help="another lattice extent than the model's")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--thermalization", type=int, default=100)
    p.add_argument("--maps", action="store_true", help="also the flow jump (N = [sample] jump_steps)")
    p.add_argument("--weights", type=Path, default=None, help="the maps' weights (default: beside the model)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg = parse_config(a.model.read_text(), a.model)
    if a.L:
        cfg = parse_config(cfg.toml.replace("L = 8\n", f"L = {a.L}\n"), a.model)
    theory = cfg.theory.build()
    flow_steps = cfg.sample.jump_steps
    g = torch.Generator().manual_seed(a.seed)
    hmc = HMC.from_config(theory, cfg.hmc)
    t0 = time.perf_counter()
    x = hmc.thermalize(theory.cold_field(a.chains), a.thermalization, g, tune=True)
    plain = InstantonJump(theory, fermions="exact")
    print(f"thermalised {a.thermalization} trajectories in {time.perf_counter() - t0:.0f} s: "
          f"step size {hmc.step_size:.4g} ({hmc.steps} steps)", flush=True)
    variants = {f"N={n}": AnnealedJump(theory, n, follow(theory, hmc)) for n in a.steps}
    out = {"theory": theory.params(), "chains": a.chains, "rounds": a.rounds, "hmc": hmc.state_dict()}
    if a.maps:
        flow = load_flow(a.weights or a.model.with_suffix(".pt"), cfg)
        flow = flow.double().eval().requires_grad_(False)
        variants[f"flow N={flow_steps}"] = AnnealedJump(theory, flow_steps, follow(theory, hmc),
                                                       jump_maps(flow, theory, flow_steps, cfg.sample.maps))
    probs = {k: [] for k in variants}
    seconds = {k: 0.0 for k in variants}
    update = {k: [] for k in variants}
    charges = []
    for r in range(a.rounds):
        with torch.no_grad():
            x = plain.step(KernelState(hmc.trajectory(x, g)[0]), g)[0].x
        charges.append(torch.round(topological_charge(x)).numpy())
        for name, jump in variants.items():
            prob, dt, acc = move(jump, x, g)
            probs[name].append(prob)
            seconds[name] += dt
            if acc is not None:
                update[name].append(float(acc.mean()))
        print(f"round {r + 1}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in probs.items()), flush=True)
    rows = {}
    for name in variants:
        per_round = np.array([pr.mean() for pr in probs[name]])  # rounds are nearly independent
        rows[name] = {"acceptance": float(per_round.mean()),
                      "error": float(per_round.std(ddof=1) / math.sqrt(len(per_round))),
                      "ms_per_move": 1e3 * seconds[name] / (a.rounds * a.chains),
                      "transport_hmc_acceptance": float(np.mean(update[name])) if update[name] else None}
        print(f"{name:>12}: acceptance {rows[name]['acceptance']:.3f}({1000 * rows[name]['error']:.0f}) "
              f"{rows[name]['ms_per_move']:.1f} ms/move", flush=True)
    out["variants"] = rows
    charges = np.concatenate(charges)
    out["sectors"] = {"chi_Q": float((charges ** 2).mean() / theory.volume), "P(Q=0)": float((charges == 0).mean()),
                      "perfect_jump_acceptance": sector_bound(charges)}
    print(f"sectors: {out['sectors']}", flush=True)
    if a.json:
        out["command"] = " ".join(["benchmarks/flow_jumps.py", *sys.argv[1:]])
        a.json.write_text(json.dumps(out, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
