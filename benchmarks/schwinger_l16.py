"""The Schwinger model (N_f = 2 Wilson fermions) at L = 16 and β = 2, 4, 6 (κ per :data:`POINTS`):
every sampler that reaches L = 16 on one thread, side by side (docs/schwinger.md, "The L = 16 study").

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
  the pure-gauge L = 8 map, 116 s of training; the same map at every β);
- ``annealed-jump``: one base trajectory, then a jump followed by N = 2 exact-determinant
  trajectories of S_λ; ``flow-jump``: the same with the maps of
  ``models/flow_jump_schwinger_L8_b<β>_k<κ>`` (trained at L = 8 on the jump work at each β; the
  maps are local, so they apply at L = 16 unchanged);
- at β = 2 only, where a Schwinger flow is trained (``models/schwinger_L8_b2_k0.26``, 57 min):
  ``flow-mcmc`` (Metropolis independence) and ``mixed`` (one base trajectory, then one flow
  proposal). At β = 4 and 6 no chain of an independence flow reaches L = 16; ``--probe``
  measures its acceptance at L = 8, 12, 16 instead (:data:`PROBE`).

The pion correlator of the ``hmc-pf`` and ``jump-pf`` ensembles gives the effective mass
m_eff(t) = arccosh((C(t − 1) + C(t + 1)) / 2C(t)) and m_π L (the issue asks for 4–6). The verdict
per cost observable: the cheapest sampler without training and the cheapest trained one, and
their ratio with the training counted for ``INDEPENDENT`` independent samples.

The whole study in one command (about 2 hours on one thread): ``--all docs``. The same, point
by point, then its summary table and figure (``--study docs`` alone redraws them from the
committed results):

    OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py --budget 420 --json docs/schwinger_l16.json
    OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py --beta 4 --kappa 0.255 --budget 240 --rounds 4 \\
        --out runs/schwinger_l16_b4 --json docs/schwinger_l16_b4.json --figure docs/images/schwinger_l16_b4.png
    OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py --beta 2 --kappa 0.26 --budget 240 --rounds 4 \\
        --out runs/schwinger_l16_b2 --json docs/schwinger_l16_b2.json --figure docs/images/schwinger_l16_b2.png
    OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py --probe docs/schwinger_l16_probe.json
    python benchmarks/schwinger_l16.py --study docs
    python benchmarks/schwinger_l16.py --replot docs/schwinger_l16_b2.json --figure docs/images/schwinger_l16_b2.png

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
MODELS = ROOT / "models"
FIGURE = ROOT / "docs" / "images" / "schwinger_l16.png"
STUDY_FIGURE = ROOT / "docs" / "images" / "schwinger_l16_study.png"
L, BETA, KAPPA = 16, 6.0, 0.24  #: the study's point (``--beta``, ``--kappa`` choose others)
INDEPENDENT = 10_000  #: independent samples at which the training is counted
SNF = (MODELS / "snf_schwinger_L16_b6_k0.24.toml", 116.0)
PROBE_JSON = "schwinger_l16_probe.json"  #: the independence flow probe's results, in docs/
#: the independence flow of β = 2 (the L = 8 weights; 38 min of pure-gauge training, then 19.2
#: min of fine-tuning on S_eff: benchmarks/schwinger_study.py's TRAINING)
FLOW_B2 = (MODELS / "schwinger_L8_b2_k0.26.toml", (38.0 + 19.2) * 60)
#: the study's points: β -> κ, its results' file and each trained sampler's (model file,
#: seconds of training); a sampler without weights at a point is not run there
POINTS = {
    6.0: {"kappa": 0.24, "json": "schwinger_l16.json", "figure": "schwinger_l16.png", "budget": (420, 6),
          "snf": SNF, "flow-jump": (MODELS / "flow_jump_schwinger_L8_b6_k0.24.toml", 137.0)},
    4.0: {"kappa": 0.255, "json": "schwinger_l16_b4.json", "figure": "schwinger_l16_b4.png", "budget": (240, 4),
          "snf": SNF, "flow-jump": (MODELS / "flow_jump_schwinger_L8_b4_k0.255.toml", 120.4)},
    2.0: {"kappa": 0.26, "json": "schwinger_l16_b2.json", "figure": "schwinger_l16_b2.png", "budget": (240, 4),
          "snf": SNF, "flow-jump": (MODELS / "flow_jump_schwinger_L8_b2_k0.26.toml", 79.1),
          "flow-mcmc": FLOW_B2, "mixed": FLOW_B2},
}
#: label -> (sampler, [sample] lines, title)
SAMPLERS = {
    "hmc-pf": ("hmc", "", "HMC, even–odd pseudofermions"),
    "jump-pf": ("instanton-jump", 'jump_determinant = "exact"\n', "HMC + exact-det jumps"),
    "ne-mcmc": ("ne-mcmc", "protocol_steps = 1\ndefect_length = 1\nprior_updates = 1\n",
                "NE-MCMC, one-plaquette defect"),
    "annealed-jump": ("annealed-jump", "jump_steps = 2\n", "HMC + annealed jumps (N = 2)"),
    "snf": ("snf", "protocol_steps = 1\ndefect_length = 1\nprior_updates = 1\nmaps = 1\npatch = 2\n",
            "SNF (defect map)"),
    "flow-jump": ("flow-jump", 'jump_steps = 2\nmaps = 1\ndtype = "float64"\n', "HMC + flow-assisted jumps (N = 2)"),
    "flow-mcmc": ("flow-mcmc", "batch_size = 256\n", "flow-MCMC (independence)"),
    "mixed": ("mixed", "hmc_per_step = 1\nflow_per_step = 1\nbatch_size = 256\n", "mixed (PF HMC + flow)"),
}
TRAINED = ("snf", "flow-jump", "flow-mcmc", "mixed")


def trained(beta: float, label: str):
    """(model file, training seconds) of ``label``'s weights at ``beta`` (another β: those of
    β = 6), or None (no weights there)."""
    point = POINTS.get(float(beta), POINTS[BETA])
    return point.get(label) if label in TRAINED else None


def model_text(label: str, chains: int, seed: int, beta: float = BETA, kappa: float = KAPPA, size: int = L) -> str:
    """The model file of sampler ``label`` at L = ``size``, ``beta``, ``kappa``."""
    sampler, own, _ = SAMPLERS[label]
    weights = (trained(beta, label) or (None,))[0]
    text = (f'description = "schwinger_l16.py: {label} at L = {size}, beta = {beta}, kappa = {kappa}"\n\n'
            f'[theory]\nname = "schwinger"\nL = {size}\nbeta = {beta}\nkappa = {kappa}\n\n')
    if weights is not None:
        text += "[flow]\n" + "\n".join(render_table(tomllib.loads(weights.read_text())["flow"])) + "\n\n"
    text += ('[hmc]\nfermions = "pseudofermion"\neven_odd = true\nintegrator = "omelyan"\ntrajectory_length = 1.0\n'
             f"steps = 4\ntune = true\ntarget_acceptance = 0.8\nthermalization = 60\nchains = {chains}\nseed = {seed}\n\n")
    if sampler != "hmc":
        text += f'[sample]\nsampler = "{sampler}"\nchains = {chains}\nthermalization = 60\nseed = {seed}\n' + own
    return text


def labels(beta: float, only: list[str] | None = None) -> list[str]:
    """The samplers run at ``beta``: every classical one, and the trained ones with weights there."""
    return [k for k in SAMPLERS if (k not in TRAINED or trained(beta, k)) and (not only or k in only)]


def run(out: Path, budget: float, rounds: int, chains: int, seed: int, beta: float, kappa: float,
        only: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timed = {}
    for label in labels(beta, only):
        sampler, weights = SAMPLERS[label][0], (trained(beta, label) or (None,))[0]
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
    return measure_all(out, beta)


def measure_all(out: Path, beta: float) -> dict:
    """The measurements of the ensembles in ``out`` (and the timing the run recorded there)."""
    timing = json.loads((out / "timing.json").read_text())
    results = {}
    for label in timing:
        results[label] = (measure(out / f"{label}.h5") | timing[label]
                          | {"training_seconds": (trained(beta, label) or (None, 0.0))[1]})
        if label in ("hmc-pf", "jump-pf"):
            results[label]["pion"] = pion(out / f"{label}.h5", L)
    if "jump-pf" in results:
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


def compare(results: dict, key: str, bounds: bool = False) -> dict | None:
    """The cheapest classical sampler per independent ``key`` (a measured cost, not a lower
    bound) against the cheapest trained one (``bounds``: a lower bound allowed), their cost
    ratio in generation and with the training counted for ``INDEPENDENT`` independent samples,
    and the break-even size (None: never); None where either side has no such cost."""
    cost = f"seconds_per_independent_{key}"
    usable = {k: r for k, r in results.items() if r[cost] > 0 and (bounds and k in TRAINED
                                                                   or not r[COSTS[key]]["lower_bound"])}
    classical = {k: r[cost] for k, r in usable.items() if k not in TRAINED}
    trained = {k: r[cost] for k, r in usable.items() if k in TRAINED}
    if not classical or not trained:
        return None
    best_c, best_t = min(classical, key=classical.get), min(trained, key=trained.get)
    c_c, c_t, t = classical[best_c], trained[best_t], results[best_t]["training_seconds"]
    return {"best_classical": best_c, "best_trained": best_t, "generation_ratio": c_t / c_c,
            "ratio_with_training": (t + INDEPENDENT * c_t) / (INDEPENDENT * c_c),
            "break_even": t / (c_c - c_t) if c_c > c_t else None}


def verdict(results: dict) -> dict:
    """:func:`compare` per cost observable, measured costs only (what a run's JSON keeps)."""
    return {key: compare(results, key) for key in ("Q", "condensate")}


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
        lines.append(f"| {SAMPLERS[label][2]} | {r['n']} | {r['acceptance']:.3f} | {jump} | {1e3 * r['seconds_per_config']:.0f} | "
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
    a.set_xticks(xs + 0.2, [SAMPLERS[k][2] for k in labels], rotation=30, ha="right", fontsize=8)
    a.set(yscale="log", ylabel="ms (generation, one thread)",
          title=f"L = {data['L']}, β = {data['beta']:g}, κ = {data['kappa']}")
    a.legend(fontsize=8)
    for label in ("hmc-pf", "jump-pf"):
        p = res[label].get("pion")
        if p:
            t = np.arange(1, len(p["m_eff"]) + 1)
            b.errorbar(t, p["m_eff"], p["m_eff_error"], fmt="o-", capsize=3, label=SAMPLERS[label][2])
    b.set(xlabel="t", ylabel="m_eff(t)", title="pion effective mass (cosh)")
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


#: the independence flow probed at each β: the Schwinger weights where they exist, else the
#: pure-gauge weights of that β (no Schwinger flow is trained at β = 4, 6)
PROBE = {2.0: MODELS / "schwinger_L8_b2_k0.26.toml", 4.0: MODELS / "u1_L8_b4.toml", 6.0: MODELS / "u1_L8_b6.toml"}


def probe(proposals: int = 4096, sizes=(8, 12, 16), seed: int = 11) -> dict:
    """The independence flow where no chain reaches: the Metropolis independence acceptance and
    ESS of ``proposals`` flow samples against the exact S_eff at each β's κ, at L = ``sizes``
    (the weights unchanged, the network does not depend on L), and the seconds per proposal."""
    import time

    from latticeflow.analysis import ess
    from latticeflow.config import parse_config
    from latticeflow.mcmc.independence import independence_acceptance, log_weight
    from latticeflow.theories.schwinger import Schwinger
    from latticeflow.training import load_flow

    out = {}
    for beta, model in PROBE.items():
        kappa, rows = POINTS[beta]["kappa"], {}
        for size in sizes:
            cfg = parse_config(model.read_text().replace("L = 8", f"L = {size}"), model)
            flow, theory = load_flow(model.with_suffix(".pt"), cfg), Schwinger((size, size), beta, kappa)
            g, log_w = torch.Generator().manual_seed(seed), []
            t0 = time.perf_counter()
            with torch.no_grad():
                for _ in range(proposals // 256):
                    x, log_q = flow.sample(256, generator=g)
                    log_w.append(log_weight(theory.action(x.double()), log_q))
            seconds = (time.perf_counter() - t0) / proposals
            lw = torch.cat(log_w).numpy()
            rows[size] = {"acceptance": independence_acceptance(lw, rng=seed), "ess": ess(lw),
                          "seconds_per_proposal": seconds}
            print(f"probe beta = {beta:g}, L = {size}: {rows[size]}", flush=True)
        out[beta] = {"kappa": kappa, "weights": model.with_suffix(".pt").name, "proposals": proposals, "L": rows}
    return out


def probe_table(data: dict) -> str:
    """Acceptance against L per β, and the fit acceptance ∝ e^{−aV} through L = 8 … 16."""
    lines = ["| β | κ | weights | L = 8 | L = 12 | L = 16 | fitted a (per site) | ms per proposal (L = 16) "
             "| ≥ ms per accepted proposal (L = 16) |", "|---|---|---|---|---|---|---|---|---|"]
    for beta, row in sorted(data.items(), key=lambda kv: float(kv[0])):
        sizes = sorted(row["L"], key=int)
        acc = [row["L"][s]["acceptance"] for s in sizes]
        slope = -np.polyfit([int(s) ** 2 for s in sizes], np.log(np.maximum(acc, 1e-12)), 1)[0]
        last = row["L"][sizes[-1]]
        lines.append(f"| {float(beta):g} | {row['kappa']} | `{row['weights']}` | "
                     + " | ".join(f"{a:.3g}" for a in acc)
                     + f" | {slope:.2g} | {1e3 * last['seconds_per_proposal']:.1f} | "
                     f"{1e3 * last['seconds_per_proposal'] / max(last['acceptance'], 1e-12):.3g} |")
    return "\n".join(lines)


def m_pi_l(data: dict) -> float | None:
    """m_π L from the last effective mass of jump-pf's pion correlator (t = L/2 − 1): an upper
    bound, since m_eff(t) falls toward the pion mass from above."""
    p = data["results"].get("jump-pf", {}).get("pion")
    return p["m_eff"][-1] * data["L"] if p else None


def summary(points: dict[float, dict]) -> str:
    """One line per β and observable: the cheapest classical and flow-based samplers per
    independent sample and their ratio, in generation and with the training counted for
    ``INDEPENDENT`` independent samples (≥: the flow-based cost is a lower bound, its chains
    shorter than 20 τ_int; the classical ones compared are measured, not bounds)."""
    lines = ["| β | κ | m_π L ≤ | per | best classical | s | best flow-based | s | × (generation) "
             "| × (10⁴ indep., training counted) | break-even (indep.) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for beta, data in sorted(points.items()):
        res = data["results"]
        for key in ("Q", "condensate"):
            cost = f"seconds_per_independent_{key}"
            v = compare(res, key, bounds=True)
            c, f = v["best_classical"], v["best_trained"]
            ge = "≥ " if res[f][COSTS[key]]["lower_bound"] else ""
            even = f"{ge}{v['break_even']:.2g}" if v["break_even"] is not None else "never"
            lines.append(f"| {beta:g} | {data['kappa']} | {m_pi_l(data):.1f} | {key} | {SAMPLERS[c][2]} | "
                         f"{res[c][cost]:.2f} | {SAMPLERS[f][2]} | {ge}{res[f][cost]:.2f} | {ge}{v['generation_ratio']:.2f} | "
                         f"{ge}{v['ratio_with_training']:.2f} | {even} |")
    return "\n".join(lines)


def plot_study(points: dict[float, dict], path: Path, probed: dict | None = None) -> None:
    """Seconds per independent Q and condensate of every sampler at every β (hatched: lower
    bounds; ``probed``: the independence flow's probe where no chain of it ran, seconds per
    accepted proposal, a lower bound), and the seconds for N independent Q with the training
    counted, best classical against best flow-based at each β (where they cross: break-even)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = sorted(points)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    width = 0.8 / len(SAMPLERS)
    for ax, key in zip(axes, ("Q", "condensate")):
        for j, label in enumerate(SAMPLERS):
            xs, ys, bound = [], [], []
            for i, beta in enumerate(betas):
                r = points[beta]["results"].get(label)
                x = i + (j - len(SAMPLERS) / 2 + 0.5) * width
                if r and r[f"seconds_per_independent_{key}"] > 0:
                    xs.append(x)
                    ys.append(r[f"seconds_per_independent_{key}"])
                    bound.append(r[COSTS[key]]["lower_bound"])
                elif label == "flow-mcmc" and probed and str(beta) in probed:
                    last = probed[str(beta)]["L"]["16"]
                    xs.append(x)
                    ys.append(last["seconds_per_proposal"] / max(last["acceptance"], 1e-12))
                    bound.append(True)
            bars = ax.bar(xs, ys, width, label=SAMPLERS[label][2], color=f"C{j}")
            for bar, b in zip(bars, bound):
                if b:
                    bar.set_hatch("//")
        ax.set_xticks(range(len(betas)), [f"β = {b:g}, κ = {points[b]['kappa']}\nm_π L ≤ {m_pi_l(points[b]):.1f}"
                                          for b in betas])
        ax.set(yscale="log", title=f"s per independent {key} (generation; hatched: ≥)")
    axes[0].set_ylabel("s, L = 16, one thread (flow-MCMC at β = 4, 6: probe, s per accepted proposal)", fontsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    n = np.logspace(2, 6, 60)
    ax = axes[2]
    for i, beta in enumerate(betas):
        res = points[beta]["results"]
        v = compare(res, "Q", bounds=True)
        c, f = v["best_classical"], v["best_trained"]
        c_c, c_f = res[c]["seconds_per_independent_Q"], res[f]["seconds_per_independent_Q"]
        ax.plot(n, n * c_c, color=f"C{i}", label=f"β = {beta:g}: {SAMPLERS[c][2]}")
        ax.plot(n, res[f]["training_seconds"] + n * c_f, "--", color=f"C{i}",
                label=f"β = {beta:g}: {SAMPLERS[f][2]} + training")
    ax.set(xscale="log", yscale="log", xlabel="independent Q", ylabel="s (one thread)",
           title="cost of N independent Q, training counted")
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def study_points(folder: Path) -> dict[float, dict]:
    """The study's committed results: β -> the data of ``folder / POINTS[β]["json"]``."""
    return {beta: json.loads((folder / point["json"]).read_text()) for beta, point in POINTS.items()
            if (folder / point["json"]).exists()}


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
    p.add_argument("--kappa", type=float, help="default: the study's κ at --beta (POINTS), else 0.24")
    p.add_argument("--figure", type=Path, default=FIGURE)
    p.add_argument("--only", help="comma-separated samplers to run (default: all with weights at --beta)")
    p.add_argument("--probe", type=Path, metavar="JSON",
                   help="probe the independence flow at L = 8, 12, 16 for every β and write the results here")
    p.add_argument("--study", type=Path, metavar="DIR",
                   help="print the study's summary and draw its figure from the results of every β in DIR "
                        "(docs/: the committed ones); measure nothing")
    p.add_argument("--all", type=Path, metavar="DIR",
                   help="the whole study: every β of POINTS with its budget (about 2 hours on one thread; the "
                        "ensembles in runs/schwinger_l16_b<β>/, which must not exist yet), their results and "
                        "figures into DIR (docs: the committed ones), the probe, then the summary")
    a = p.parse_args()
    if a.kappa is None:
        a.kappa = POINTS.get(a.beta, {"kappa": KAPPA})["kappa"]
    if a.probe:
        torch.set_num_threads(1)
        a.probe.write_text(json.dumps(probe(), indent=1) + "\n")
        print(probe_table(json.loads(a.probe.read_text())))
        return
    if a.study:
        return main_study(a.study, STUDY_FIGURE if a.figure == FIGURE else a.figure)
    if a.all:
        a.all.mkdir(parents=True, exist_ok=True)
        for beta, point in POINTS.items():  # every point, then the probe and the summary
            budget, rounds = point["budget"]
            data = measure_point(beta, point["kappa"], ROOT / "runs" / f"schwinger_l16_b{beta:g}", budget, rounds,
                                 a.chains, a.seed)
            report(data, a.all / point["json"], a.all / "images" / point["figure"])
        (a.all / PROBE_JSON).write_text(json.dumps(probe(), indent=1) + "\n")
        return main_study(a.all, a.all / "images" / STUDY_FIGURE.name)
    if a.replot:
        data = json.loads(a.replot.read_text())
    else:
        data = measure_point(a.beta, a.kappa, a.out, a.budget, a.rounds, a.chains, a.seed,
                             a.only and a.only.split(","), a.measure)
    report(data, None if a.replot else a.json, a.figure)


def measure_point(beta: float, kappa: float, out: Path, budget: float, rounds: int, chains: int, seed: int,
                  only: list[str] | None = None, measured: bool = False) -> dict:
    """One point of the study run (or, ``measured``, the ensembles a run left in ``out`` measured)."""
    torch.set_num_threads(1)
    data = {"command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/schwinger_l16.py", *sys.argv[1:]]),
            "L": L, "beta": beta, "kappa": kappa, "load_average_start": os.getloadavg()[1],
            "independent": INDEPENDENT,
            "results": (measure_all(out, beta) if measured
                        else run(out, budget, rounds, chains, seed, beta, kappa, only))}
    data["load_average_end"] = os.getloadavg()[1]
    return data


def report(data: dict, path: Path | None, figure: Path) -> None:
    """Pulls and verdict into ``data`` (written to ``path`` if given), its table, and its figure."""
    pulls(data["results"], "jump-pf")
    data["verdict"] = verdict(data["results"])
    if path:
        path.write_text(json.dumps(data, indent=1, default=float) + "\n")
    print(table(data))
    print(json.dumps(data["verdict"], indent=1))
    if "sector_bound" in data["results"].get("jump-pf", {}):
        print(f"sectors' bound on a jump's acceptance (jump-pf's charges): {data['results']['jump-pf']['sector_bound']:.3f}")
    for label in ("hmc-pf", "jump-pf"):
        pi = data["results"].get(label, {}).get("pion")
        if pi:
            print(f"{label}: m_eff(t) = " + ", ".join(f"{m:.3f}({1e3 * e:.0f})" for m, e in zip(pi["m_eff"], pi["m_eff_error"])))
    plot(data, figure)


def main_study(folder: Path, figure: Path) -> None:
    """The study's summary tables and figure from the results of every β in ``folder``."""
    points = study_points(folder)
    print(summary(points))
    probed = json.loads((folder / PROBE_JSON).read_text()) if (folder / PROBE_JSON).exists() else None
    if probed:
        print(probe_table(probed))
    plot_study(points, figure, probed)


if __name__ == "__main__":
    main()
