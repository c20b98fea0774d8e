"""The Schwinger model (N_f = 2 Wilson fermions) at L = 16, β = 6, κ = 0.24: every sampler
that reaches L = 16 on one thread, side by side (docs/schwinger.md, "L = 16, β = 6").

Each sampler runs ``latticeflow sample`` / ``hmc`` (``pipeline``) on a model file written to
``OUT/<label>.toml`` (the ensemble beside it, resumable) for a fixed wall-clock budget of
generation (thermalisation not counted), the samplers interleaved in ``--rounds`` slices so
that the load of a shared machine falls on all of them alike (``benchmarks/schwinger_study.py``'s
``Timed`` and ``measure``: acceptance, means and τ_int (Γ-method, chains as replicas) of Q,
χ_Q, the condensate and the plaquette, seconds per independent Q and condensate). The base
update everywhere: even–odd pseudofermion HMC (Omelyan, τ = 1, step size tuned to acceptance
0.8 in thermalisation, then frozen), from a cold start.

- ``hmc-pf``: the base alone; ``jump-pf``: one base trajectory, then an instanton jump with the
  exact determinant;
- ``ne-mcmc``: the one-plaquette defect switched on in one base trajectory, one trajectory at
  c = 0 per start; ``snf``: the same with the shipped map (``models/snf_schwinger_L16_b6_k0.24``,
  the pure-gauge L = 8 map, 116 s of training);
- ``annealed-jump``: one base trajectory, then a jump followed by N = 2 exact-determinant
  trajectories of S_λ; ``flow-jump``: the same with the maps of
  ``models/flow_jump_schwinger_L8_b6_k0.24`` (trained at L = 8 on the jump work, 137 s; the maps
  are local, so they apply at L = 16 unchanged).

The pion correlator of the ``hmc-pf`` and ``jump-pf`` ensembles gives the effective mass
m_eff(t) = arccosh((C(t − 1) + C(t + 1)) / 2C(t)) and m_π L (the issue asks for 4–6). The verdict
per cost observable: the cheapest sampler without training and the cheapest trained one, and
their ratio with the training counted for ``INDEPENDENT`` independent samples.

    OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py --budget 480 --json docs/schwinger_l16.json
    python benchmarks/schwinger_l16.py --replot docs/schwinger_l16.json

Start with an empty ``--out`` (a resumed ensemble would upset the budget's pacing);
``--measure`` re-measures the ensembles a finished run left there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from latticeflow import ensemble  # noqa: E402
from latticeflow.schema import render_table  # noqa: E402
from schwinger_study import COSTS, Timed, measure, pulls, stepper  # noqa: E402  (benchmarks/schwinger_study.py)

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "images" / "schwinger_l16.png"
L, BETA, KAPPA = 16, 6.0, 0.24  #: the study's point (``--beta``, ``--kappa`` choose others)
INDEPENDENT = 10_000  #: independent samples at which the training is counted
SNF = ROOT / "models" / "snf_schwinger_L16_b6_k0.24.toml"
JUMP = ROOT / "models" / "flow_jump_schwinger_L8_b6_k0.24.toml"
#: label -> (sampler, [sample] lines, weights' model file or None, training seconds, title)
SAMPLERS = {
    "hmc-pf": ("hmc", "", None, 0.0, "HMC, even–odd pseudofermions"),
    "jump-pf": ("instanton-jump", 'jump_determinant = "exact"\n', None, 0.0, "HMC + exact-det jumps"),
    "ne-mcmc": ("ne-mcmc", "protocol_steps = 1\ndefect_length = 1\nprior_updates = 1\n", None, 0.0,
                "NE-MCMC, one-plaquette defect"),
    "annealed-jump": ("annealed-jump", "jump_steps = 2\n", None, 0.0, "HMC + annealed jumps (N = 2)"),
    "snf": ("snf", "protocol_steps = 1\ndefect_length = 1\nprior_updates = 1\nmaps = 1\npatch = 2\n", SNF, 116.0,
            "SNF (defect map)"),
    "flow-jump": ("flow-jump", 'jump_steps = 2\nmaps = 1\ndtype = "float64"\n', JUMP, 137.0,
                  "HMC + flow-assisted jumps (N = 2)"),
}
TRAINED = ("snf", "flow-jump")


def model_text(label: str, chains: int, seed: int, beta: float = BETA, kappa: float = KAPPA, size: int = L) -> str:
    """The model file of sampler ``label`` at L = ``size``, ``beta``, ``kappa``."""
    sampler, own, weights, _, _ = SAMPLERS[label]
    text = (f'description = "schwinger_l16.py: {label} at L = {size}, beta = {beta}, kappa = {kappa}"\n\n'
            f'[theory]\nname = "schwinger"\nL = {size}\nbeta = {beta}\nkappa = {kappa}\n\n')
    if weights is not None:
        text += "[flow]\n" + "\n".join(render_table(tomllib.loads(weights.read_text())["flow"])) + "\n\n"
    text += ('[hmc]\nfermions = "pseudofermion"\neven_odd = true\nintegrator = "omelyan"\ntrajectory_length = 1.0\n'
             f"steps = 4\ntune = true\ntarget_acceptance = 0.8\nthermalization = 60\nchains = {chains}\nseed = {seed}\n\n")
    if sampler != "hmc":
        text += f'[sample]\nsampler = "{sampler}"\nchains = {chains}\nthermalization = 60\nseed = {seed}\n' + own
    return text


def run(out: Path, budget: float, rounds: int, chains: int, seed: int, beta: float, kappa: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timed = {}
    for label, (sampler, _, weights, _, _) in SAMPLERS.items():
        model, path = out / f"{label}.toml", out / f"{label}.h5"
        model.write_text(model_text(label, chains, seed, beta, kappa))
        timed[label] = Timed(stepper(sampler, model, path, weights and weights.with_suffix(".pt")), chains)
        timed[label].warm()
        print(f"{label}: thermalised", flush=True)
    for r in range(rounds):
        for label, t in timed.items():
            t.run(budget / rounds)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {t.n}" for k, t in timed.items()), flush=True)
    timing = {label: {"wall_seconds": t.wall, "cpu_fraction": t.cpu / t.wall} for label, t in timed.items()}
    (out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    return measure_all(out)


def measure_all(out: Path) -> dict:
    """The measurements of the ensembles in ``out`` (and the timing the run recorded there)."""
    timing = json.loads((out / "timing.json").read_text())
    results = {}
    for label in SAMPLERS:
        results[label] = measure(out / f"{label}.h5") | timing[label] | {"training_seconds": SAMPLERS[label][3]}
        if label in ("hmc-pf", "jump-pf"):
            results[label]["pion"] = pion(out / f"{label}.h5", L)
    results["jump-pf"]["sector_bound"] = sectors(out / "jump-pf.h5")
    return results


def sectors(path: Path) -> float:
    """The acceptance of a perfect jump between neighbouring sectors (no ±1 move is accepted
    more often; ``benchmarks/flow_jumps.py``), from the charges of an ensemble."""
    from flow_jumps import sector_bound  # benchmarks/flow_jumps.py

    with ensemble.open(path) as ens:
        return sector_bound(np.round(ens.observable("topological_charge")).ravel())


def pion(path: Path, size: int) -> dict:
    """The pion correlator C(t) (mean and error over chains' block means) and the effective
    mass arccosh((C(t−1) + C(t+1)) / 2C(t)), t = 1 … L/2 − 1, of an ensemble at L = ``size``."""
    from latticeflow.analysis import gamma_method

    with ensemble.open(path) as ens:
        data = [ens.observable(f"pion_t{t}").T for t in range(size // 2 + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = [gamma_method(d) for d in data]
    mean = np.array([r.mean for r in c])
    # the effective mass's error by jackknife over chains
    chains = np.stack([d.mean(axis=1) for d in data], axis=1)  # (C, T)
    masses = [meff(np.delete(chains, i, axis=0).mean(axis=0)) for i in range(chains.shape[0])]
    m = meff(mean)
    n = len(masses)
    err = np.sqrt((n - 1) / n * ((np.array(masses) - np.mean(masses, axis=0)) ** 2).sum(axis=0))
    return {"C": mean.tolist(), "C_error": [r.error for r in c], "m_eff": m.tolist(), "m_eff_error": err.tolist()}


def meff(c: np.ndarray) -> np.ndarray:
    ratio = (c[:-2] + c[2:]) / (2 * c[1:-1])
    return np.arccosh(np.maximum(ratio, 1.0))


def verdict(results: dict) -> dict:
    out = {}
    for key in ("Q", "condensate"):
        cost = f"seconds_per_independent_{key}"
        usable = {k: r for k, r in results.items() if r[cost] > 0 and not r[COSTS[key]]["lower_bound"]}
        classical = {k: r[cost] for k, r in usable.items() if k not in TRAINED}
        trained = {k: r[cost] for k, r in usable.items() if k in TRAINED}
        if not classical or not trained:
            out[key] = None
            continue
        best_c, best_t = min(classical, key=classical.get), min(trained, key=trained.get)
        c_c, c_t, t = classical[best_c], trained[best_t], results[best_t]["training_seconds"]
        out[key] = {"best_classical": best_c, "best_trained": best_t, "generation_ratio": c_t / c_c,
                    "ratio_with_training": (t + INDEPENDENT * c_t) / (INDEPENDENT * c_c),
                    "break_even": t / (c_c - c_t) if c_c > c_t else None}
    return out


def table(data: dict) -> str:
    from latticeflow.analysis import format_value_error

    lines = ["| sampler | configs | acc. | jump acc. | ms / config | τ_int(Q) | τ_int(cond.) | ms / indep. Q | ms / indep. cond. "
             "| training s | Q | χ_Q | condensate | plaquette | largest pull |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in data["results"].items():
        tau = {k: ("≥ " if r[k]["lower_bound"] else "") + f"{r[k]['tau_int']:.1f}"
               for k in ("topological_charge", "chiral_condensate")}
        pull = max(r["pull"].items(), key=lambda kv: abs(kv[1])) if "pull" in r else None
        jump = f"{r['jump_acceptance_mean']:.3f}" if "jump_acceptance_mean" in r else "–"
        lines.append(f"| {SAMPLERS[label][4]} | {r['n']} | {r['acceptance']:.3f} | {jump} | {1e3 * r['seconds_per_config']:.0f} | "
                     f"{tau['topological_charge']} | {tau['chiral_condensate']} | "
                     f"{1e3 * r['seconds_per_independent_Q']:.0f} | {1e3 * r['seconds_per_independent_condensate']:.0f} | "
                     f"{r['training_seconds']:.0f} | "
                     + " | ".join(format_value_error(r[n]["mean"], r[n]["error"])
                                  for n in ("topological_charge", "chi_Q", "chiral_condensate", "plaquette"))
                     + f" | {f'{pull[1]:+.1f}σ ({pull[0]})' if pull else '– (reference)'} |")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = data["results"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(res)
    xs = np.arange(len(labels))
    for i, key in enumerate(("Q", "condensate")):
        ys = [1e3 * res[k][f"seconds_per_independent_{key}"] for k in labels]
        bars = a.bar(xs + 0.4 * i, ys, 0.4, label=f"per independent {key}")
        for bar, k in zip(bars, labels):
            if res[k][COSTS[key]]["lower_bound"]:  # τ_int longer than the run allows: a lower bound
                bar.set_hatch("//")
    a.bar([], [], color="white", edgecolor="k", hatch="//", label="hatched: a lower bound (chains too short)")
    a.set_xticks(xs + 0.2, [SAMPLERS[k][4] for k in labels], rotation=30, ha="right", fontsize=8)
    a.set(yscale="log", ylabel="ms (generation, one thread)",
          title=f"L = {data['L']}, β = {data['beta']:g}, κ = {data['kappa']}")
    a.legend(fontsize=8)
    for label in ("hmc-pf", "jump-pf"):
        p = res[label].get("pion")
        if p:
            t = np.arange(1, len(p["m_eff"]) + 1)
            b.errorbar(t, p["m_eff"], p["m_eff_error"], fmt="o-", capsize=3, label=SAMPLERS[label][4])
    b.set(xlabel="t", ylabel="m_eff(t)", title="pion effective mass (cosh)")
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=480, help="seconds of generation per sampler")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "schwinger_l16")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--replot", type=Path, help="redraw the table and figure from this JSON; measure nothing")
    p.add_argument("--measure", action="store_true", help="measure the ensembles already in --out; sample nothing")
    p.add_argument("--beta", type=float, default=BETA, help="another β (the trained samplers keep their weights)")
    p.add_argument("--kappa", type=float, default=KAPPA)
    p.add_argument("--figure", type=Path, default=FIGURE)
    a = p.parse_args()
    if a.replot:
        data = json.loads(a.replot.read_text())
    else:
        torch.set_num_threads(1)
        data = {"command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py", *sys.argv[1:]]),
                "L": L, "beta": a.beta, "kappa": a.kappa, "load_average_start": os.getloadavg()[1],
                "independent": INDEPENDENT,
                "results": (measure_all(a.out) if a.measure
                            else run(a.out, a.budget, a.rounds, a.chains, a.seed, a.beta, a.kappa))}
        data["load_average_end"] = os.getloadavg()[1]
    pulls(data["results"], "jump-pf")
    data["verdict"] = verdict(data["results"])
    if a.json and not a.replot:
        a.json.write_text(json.dumps(data, indent=1, default=float) + "\n")
    print(table(data))
    print(json.dumps(data["verdict"], indent=1))
    if "sector_bound" in data["results"]["jump-pf"]:
        print(f"sectors' bound on a jump's acceptance (jump-pf's charges): {data['results']['jump-pf']['sector_bound']:.3f}")
    for label in ("hmc-pf", "jump-pf"):
        pi = data["results"][label].get("pion")
        if pi:
            print(f"{label}: m_eff(t) = " + ", ".join(f"{m:.3f}({1e3 * e:.0f})" for m, e in zip(pi["m_eff"], pi["m_eff_error"])))
    plot(data, a.figure)


if __name__ == "__main__":
    main()
