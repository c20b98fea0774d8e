"""The Schwinger model (N_f = 2 Wilson fermions) with every baseline in one run: the shipped
flow's point L = 8, β = 2, κ = 0.26, and classical rows at L = 16 (docs/schwinger.md, section
"Every baseline").

Each sampler runs ``latticeflow sample`` / ``hmc`` (``pipeline``) on a model file written to
``OUT/<point>/<label>.toml`` (the ensemble beside it, resumable) for a fixed wall-clock budget
of generation (thermalisation not counted), one thread, the samplers of a point interleaved
in ``--rounds`` slices so that the load of a shared machine falls on all of them alike
(each one's CPU share of its wall time is recorded, ``cpu_fraction``).  Measured per
sampler, τ_int in its own steps (Γ-method, chains as replicas): acceptance, mean and τ_int of Q, χ_Q, the chiral
condensate and the plaquette; seconds per configuration (one step of one chain: the file's
generation seconds / configurations) and per independent Q and condensate (× 2τ_int); the
pull of every mean from exact-determinant HMC's (its error and the sampler's combined), the
exactness check where no exact values exist at κ > 0.

L = 8 (HMC: Omelyan, trajectory length 1, step size tuned to acceptance 0.8 during
thermalisation, then frozen; 8 chains, 4 for flow-MCMC and at L = 16): ``hmc-exact`` (dense
determinant), ``hmc-pf`` (even–odd pseudofermions, last-solution CG guess), ``jump-exact`` /
``jump-pf`` (``instanton-jump``: one trajectory of either, then one jump with the exact
determinant), ``ne-mcmc`` (defect of L/2 plaquettes, 16 exact-determinant HMC updates per
transport), ``flow-mcmc`` and ``mixed`` (one exact-determinant trajectory, then one flow
proposal) with the shipped flow, whose training (:data:`TRAINING`, from the model's record)
is counted beside its generation. L = 16, β = 2 and 4: ``hmc-pf`` and ``jump-pf``, and at
β = 2 ``flow-mcmc`` with the L = 8 weights as they are (the architecture is size-independent;
not retrained). Writes docs/schwinger_baselines.json and
docs/images/schwinger_baselines.png; ``--replot`` redraws both tables and the figure from
the JSON without sampling; ``--probe`` adds what L = 16 would cost a flow and
exact-determinant HMC (:func:`probe_l16`).

    OMP_NUM_THREADS=1 python benchmarks/schwinger_study.py [--budget 60] [--l16-budget 35]
    python benchmarks/schwinger_study.py --replot
    OMP_NUM_THREADS=1 python benchmarks/schwinger_study.py --probe   # adds the L = 16 probe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import torch

from latticeflow import ensemble, pipeline
from latticeflow.analysis import gamma_method
from latticeflow.config import load_config
from latticeflow.schema import render_table
from latticeflow.training import load_flow

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "schwinger_L8_b2_k0.26.toml"
RESULTS = ROOT / "docs" / "schwinger_baselines.json"
FIGURE = ROOT / "docs" / "images" / "schwinger_baselines.png"
OBSERVABLES = ("topological_charge", "chi_Q", "chiral_condensate", "plaquette")
COSTS = {"Q": "topological_charge", "condensate": "chiral_condensate"}  #: seconds per independent …
REFERENCE = "hmc-exact"  #: the sampler every other one is checked against at L = 8
INDEPENDENT = 10_000  #: independent samples at which the training is counted
#: the training behind the shipped weights (models/schwinger_L8_b2_k0.26.toml and models/README.md):
#: 1500 fine-tuning steps on S_eff, 19.2 min, started from the pure-gauge u1_L8_b2.pt, 38 min
TRAINING = {"fine-tune": 19.2 * 60, "pure-gauge start": 38.0 * 60}
FLOWS = ("flow-mcmc", "mixed")

#: label -> (sampler, chains, [hmc] fermions, own [sample] lines, title)
SAMPLERS = {
    "hmc-exact": ("hmc", 8, "exact", "", "HMC, exact det"),
    "hmc-pf": ("hmc", 8, "pseudofermion", "", "HMC, even–odd pseudofermions"),
    "jump-exact": ("instanton-jump", 8, "exact", "", "HMC (exact det) + jumps"),
    "jump-pf": ("instanton-jump", 8, "pseudofermion", 'jump_determinant = "exact"\n',
                "HMC (pseudofermions) + exact-det jumps"),
    "ne-mcmc": ("ne-mcmc", 8, "exact", "protocol_steps = 16\ndefect_length = {half}\n", "NE-MCMC (exact det)"),
    "flow-mcmc": ("flow-mcmc", 4, "exact", "batch_size = {batch}\n", "flow-MCMC"),
    "mixed": ("mixed", 8, "exact", "hmc_per_step = 1\nflow_per_step = 1\nbatch_size = 512\n",
              "mixed (exact-det HMC + flow)"),
}
#: point -> (L, β, κ, labels, budget scale); at L = 16 flow-MCMC runs the L = 8 weights unchanged
POINTS = {"L8_b2": (8, 2.0, 0.26, tuple(SAMPLERS), 1.0),
          "L16_b2": (16, 2.0, 0.26, ("hmc-pf", "jump-pf", "flow-mcmc"), None),
          "L16_b4": (16, 4.0, 0.26, ("hmc-pf", "jump-pf"), None)}


def model_text(label: str, L: int, beta: float, kappa: float, seed: int) -> str:
    """The model file of one sampler at one point ([flow] for the flow samplers)."""
    sampler, chains, fermions, own, _ = SAMPLERS[label]
    chains, warm = (chains, 150) if L <= 8 else (4, 50)  # L = 16: ~10× dearer steps
    text = (f'description = "schwinger_study.py: {label} at L = {L}, beta = {beta}, kappa = {kappa}"\n\n'
            f'[theory]\nname = "schwinger"\nL = {L}\nbeta = {beta}\nkappa = {kappa}\n\n')
    if sampler in FLOWS:
        flow = tomllib.loads(MODEL.read_text())["flow"]
        text += "[flow]\n" + "\n".join(render_table(flow)) + "\n\n"
    text += (f'[hmc]\nfermions = "{fermions}"\nintegrator = "omelyan"\ntrajectory_length = 1.0\nsteps = 6\n'
             f"tune = true\ntarget_acceptance = 0.8\nthermalization = {warm}\nchains = {chains}\nseed = {seed}\n\n")
    if sampler != "hmc":
        text += (f'[sample]\nsampler = "{sampler}"\nchains = {chains}\nthermalization = 100\nseed = {seed}\n'
                 + own.format(half=L // 2, batch=512 if L <= 8 else 128))
    return text


def stepper(sampler: str, model: Path, path: Path, weights: Path | None = None):
    """``step(n)``: grow the ensemble ``path`` of ``model`` to n configurations (``latticeflow
    hmc`` for ``hmc``, else ``sample``; ``weights``: the flow the sampler needs, loaded once)."""
    if sampler == "hmc":
        return lambda n: pipeline.hmc(model, n, out=path, configs=False, progress=False)
    extra = {"flow": load_flow(weights, load_config(model))} if weights is not None else {}
    return lambda n: pipeline.sample(model, n, out=path, configs=False, progress=False, **extra)


class Timed:
    """One sampler's file, grown by ``step(n)`` (n configurations in the file: a resume)."""

    def __init__(self, step, chains: int):
        self.step, self.chains, self.n, self.rate = step, chains, 0, None
        self.cpu = self.wall = 0.0

    def warm(self) -> None:
        """The thermalisation and the first row (not in the file's generation seconds)."""
        self.n = self.chains
        self.step(self.n)

    def run(self, seconds: float) -> None:
        """Rows for ``seconds`` of wall time, in calls sized from the measured rate."""
        t0, c0 = time.perf_counter(), time.process_time()
        rows = 1
        while time.perf_counter() - t0 < seconds:
            if self.rate:
                rows = max(1, int(self.rate * (seconds - (time.perf_counter() - t0))))
            t = time.perf_counter()
            self.n += rows * self.chains
            self.step(self.n)
            self.rate = rows / max(time.perf_counter() - t, 1e-3)
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - c0


def gamma(data: np.ndarray) -> dict:
    """Γ-method of ``(C, n)`` data: mean, error, τ_int (± error), and whether the chains are
    shorter than 20 τ_int (then τ_int and the cost are lower bounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = gamma_method(data)
    return {"mean": r.mean, "error": r.error, "tau_int": r.tau_int, "tau_int_error": r.tau_int_error,
            "lower_bound": bool(r.too_short or not r.error)}


def measure(path: Path) -> dict:
    with ensemble.open(path) as ens:
        out = {"n": ens.n, "chains": ens.n_chains, "seconds": ens.generation_seconds,
               "acceptance": float(ens.accepted.mean())}
        for name in OBSERVABLES:
            out[name] = gamma(ens.observable(name).T)
        for column in ("jump_acceptance", "cg_iterations"):
            if column in ens.mcmc:
                out[f"{column}_mean"] = float(ens.mcmc[column].mean())
        hmc = ens.extra.get("hmc") or {}
        out["md_steps"] = hmc.get("steps")
    out["seconds_per_config"] = out["seconds"] / out["n"]
    for key, name in COSTS.items():
        out[f"seconds_per_independent_{key}"] = 2 * out[name]["tau_int"] * out["seconds_per_config"]
    return out


def run_point(point: str, out: Path, budget: float, seed: int, rounds: int) -> dict:
    """Every sampler of ``point`` for ``budget`` seconds, interleaved in ``rounds`` slices (so
    that the load of a shared machine falls on all of them alike)."""
    L, beta, kappa, names, _ = POINTS[point]
    folder = out / point
    folder.mkdir(parents=True, exist_ok=True)
    timed = {}
    for label in names:
        sampler, chains = SAMPLERS[label][0], SAMPLERS[label][1] if L <= 8 else 4
        model, path = folder / f"{label}.toml", folder / f"{label}.h5"
        model.write_text(model_text(label, L, beta, kappa, seed))
        timed[label] = Timed(stepper(sampler, model, path, MODEL.with_suffix(".pt") if sampler in FLOWS else None),
                             chains)
        timed[label].warm()
    for _ in range(rounds):
        for t in timed.values():
            t.run(budget / rounds)
    results = {}
    for label, t in timed.items():
        results[label] = measure(folder / f"{label}.h5") | {
            "wall_seconds": t.wall, "cpu_fraction": t.cpu / t.wall, "L": L, "beta": beta, "kappa": kappa}
        r = results[label]
        print(json.dumps({"point": point, "sampler": label, "n": r["n"], "acc": round(r["acceptance"], 3),
                          "tau_Q": round(r["topological_charge"]["tau_int"], 2),
                          "tau_cond": round(r["chiral_condensate"]["tau_int"], 2),
                          "s_per_Q": r["seconds_per_independent_Q"],
                          "s_per_cond": r["seconds_per_independent_condensate"],
                          "cpu_fraction": round(r["cpu_fraction"], 2)}), flush=True)
    return results


def probe_l16(flow_path: Path, beta: float = 2.0, kappa: float = 0.26, proposals: int = 512,
              seed: int = 3) -> dict:
    """L = 16 without a study: the shipped L = 8 flow as it is on L = 16 (Metropolis acceptance,
    ESS, seconds per proposal: the flow and the exact action apart), the exact log det(D†D)
    per configuration (the 2V × 2V LU of D and the V × V one of D̂), and the seconds of one
    exact-determinant HMC trajectory per chain (4 chains)."""
    from latticeflow.analysis import ess
    from latticeflow.config import parse_config
    from latticeflow.mcmc.hmc import HMC
    from latticeflow.mcmc.independence import independence_acceptance, log_weight

    cfg = parse_config(MODEL.read_text().replace("L = 8", "L = 16").replace("beta = 2.0", f"beta = {beta}"), MODEL)
    theory, flow = cfg.theory.build(), load_flow(flow_path, cfg)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        parts = [flow.sample(128, generator=g) for _ in range(proposals // 128)]
    t1 = time.perf_counter()
    x, log_q = torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts]).double()
    action = theory.action(x)
    t2 = time.perf_counter()
    theory.dense_log_det(x[:64])
    t3 = time.perf_counter()
    log_w = log_weight(action, log_q).numpy()
    hmc = HMC(theory, steps=6, fermions="exact")
    start = theory.random_field(4, g)
    t4 = time.perf_counter()
    hmc.trajectory(start, g)
    t5 = time.perf_counter()
    return {"L": 16, "beta": beta, "kappa": kappa, "proposals": proposals,
            "flow_acceptance": independence_acceptance(log_w, rng=seed),
            "flow_ess": ess(log_w),
            "seconds_per_proposal_flow": (t1 - t0) / proposals, "seconds_per_config_action": (t2 - t1) / proposals,
            "seconds_per_config_dense_log_det": (t3 - t2) / 64,
            "seconds_per_exact_hmc_trajectory_6_steps": (t5 - t4) / 4}


def pulls(results: dict, reference: str) -> None:
    """Each sampler's pull from ``reference`` on every observable, into its results."""
    ref = results.get(reference)
    for label, r in results.items():
        if ref is None or label == reference:
            continue
        r["pull"] = {name: (r[name]["mean"] - ref[name]["mean"]) / math.hypot(r[name]["error"], ref[name]["error"])
                     for name in OBSERVABLES}


def verdict(results: dict) -> dict:
    """Per cost observable: the cheapest classical sampler, and each flow's generation ratio
    to it, its ratio with the training counted for :data:`INDEPENDENT` independent samples,
    and the break-even size N* = T / (c_best − c_flow) (None where the flow's generation
    alone is dearer), for the whole training and for the fine-tune alone; the generation ratio
    also in CPU seconds (each wall-clock cost × its CPU share)."""
    out = {}
    for key in COSTS:
        cost = f"seconds_per_independent_{key}"
        classical = {k: r[cost] for k, r in results.items() if k not in FLOWS}
        best = min(classical, key=classical.get)
        row = {"best_classical": best, "best_seconds": classical[best]}
        for flow in FLOWS:
            if flow not in results:
                continue
            c_f, c_b = results[flow][cost], classical[best]
            share = results[flow]["cpu_fraction"] / results[best]["cpu_fraction"]
            item = {"generation_ratio": c_f / c_b, "generation_ratio_cpu": share * c_f / c_b}
            for what, t in (("all", sum(TRAINING.values())), ("fine-tune", TRAINING["fine-tune"])):
                item[f"ratio_with_training_{what}"] = (t + INDEPENDENT * c_f) / (INDEPENDENT * c_b)
                item[f"break_even_{what}"] = t / (c_b - c_f) if c_b > c_f else None
            row[flow] = item
        out[key] = row
    return out


def _v(r: dict, name: str) -> str:
    from latticeflow.analysis import format_value_error

    return format_value_error(r[name]["mean"], r[name]["error"])


def _tau(r: dict, name: str) -> str:
    bound = "≥ " if r[name]["lower_bound"] else ""
    return f"{bound}{r[name]['tau_int']:.2f}({round(100 * r[name]['tau_int_error']):d})"


def _s(x: float) -> str:
    return f"{x * 1e3:.3g}"


def tables(data: dict) -> str:
    """The Markdown tables of docs/schwinger.md ("Every baseline") from the results file."""
    lines = []
    for point, results in data["results"].items():
        L, beta, kappa = (results[next(iter(results))][k] for k in ("L", "beta", "kappa"))
        lines += [f"**L = {L}, β = {beta:g}, κ = {kappa}**", "",
                  "| sampler | configs | acc. | jump acc. | ms / config | CPU share | τ_int(Q) | τ_int(cond.) "
                  "| ms / indep. Q | ms / indep. cond. | Q | χ_Q | condensate | plaquette | largest pull |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in results.items():
            jump = f"{r['jump_acceptance_mean']:.3f}" if "jump_acceptance_mean" in r else "–"
            pull = max(r["pull"].items(), key=lambda kv: abs(kv[1])) if "pull" in r else None
            pull = f"{pull[1]:+.1f}σ ({pull[0]})" if pull else "–"
            lines.append(f"| {SAMPLERS[label][4]} | {r['n']} | {r['acceptance']:.3f} | {jump} | "
                         f"{_s(r['seconds_per_config'])} | {r['cpu_fraction']:.2f} | {_tau(r, 'topological_charge')} | "
                         f"{_tau(r, 'chiral_condensate')} | {_s(r['seconds_per_independent_Q'])} | "
                         f"{_s(r['seconds_per_independent_condensate'])} | "
                         + " | ".join(_v(r, n) for n in OBSERVABLES) + f" | {pull} |")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(data["results"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(SAMPLERS)
    width = 0.8 / len(points)
    xs = np.arange(len(labels))
    for ax, key in zip(axes, COSTS):
        for i, point in enumerate(points):
            res = data["results"][point]
            ys = [res[k][f"seconds_per_independent_{key}"] * 1e3 if k in res else np.nan for k in labels]
            ax.bar(xs + i * width, ys, width, label=point.replace("_", ", ").replace("b", "β = ").replace("L", "L = "))
        ax.set_xticks(xs + width * (len(points) - 1) / 2, [SAMPLERS[k][4] for k in labels], rotation=30,
                      ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"ms per independent {key} (generation only, one thread)")
        ax.legend(fontsize=8)
    fig.suptitle("Schwinger model N_f = 2, κ = 0.26: every sampler")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60, help="seconds of generation per sampler at L = 8")
    ap.add_argument("--l16-budget", type=float, default=35, help="seconds per sampler at L = 16 (0: none)")
    ap.add_argument("--points", default=",".join(POINTS), help="comma-separated points (default: all)")
    ap.add_argument("--rounds", type=int, default=5, help="slices each budget is run in, samplers interleaved")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "runs" / "schwinger_study"), help="model files and ensembles")
    ap.add_argument("--results", default=str(RESULTS), help="the results file (written, or read by --replot)")
    ap.add_argument("--replot", action="store_true", help="redraw tables and figure from --results (and "
                                                            "recompute the verdict there)")
    ap.add_argument("--probe", action="store_true", help="only the L = 16 probe (probe_l16), added to --results")
    args = ap.parse_args()
    unknown = set(args.points.split(",")) - set(POINTS)
    if unknown:
        ap.error(f"--points: unknown {sorted(unknown)} (known: {', '.join(POINTS)})")
    results_path = Path(args.results)
    if args.replot or args.probe:
        if not results_path.is_file():
            raise SystemExit(f"--replot/--probe: there is no {results_path} to redraw from or add to")
        data = json.loads(results_path.read_text())
        if args.probe:
            torch.set_num_threads(1)
            data["l16_probe"] = [probe_l16(MODEL.with_suffix(".pt"), beta) for beta in (2.0, 4.0)]
        if "L8_b2" in data["results"]:  # derived from the results: recomputed
            data["verdict"] = verdict(data["results"]["L8_b2"])
        results_path.write_text(json.dumps(data, indent=1) + "\n")
    else:
        torch.set_num_threads(1)
        data = {"command": "OMP_NUM_THREADS=1 python benchmarks/schwinger_study.py "
                           f"--budget {args.budget:g} --l16-budget {args.l16_budget:g} --points {args.points}",
                "threads": os.environ.get("OMP_NUM_THREADS"), "training_seconds": TRAINING,
                "independent": INDEPENDENT, "load_average": [["start", os.getloadavg()[1]]], "results": {}}
        for point in args.points.split(","):
            budget = args.budget if POINTS[point][4] else args.l16_budget
            if budget <= 0:
                continue
            data["results"][point] = run_point(point, Path(args.out), budget, args.seed, args.rounds)
            data["load_average"].append([point, os.getloadavg()[1]])
            pulls(data["results"][point], REFERENCE if point == "L8_b2" else "hmc-pf")
            results_path.write_text(json.dumps(data, indent=1) + "\n")
        if "L8_b2" in data["results"]:
            data["verdict"] = verdict(data["results"]["L8_b2"])
        results_path.write_text(json.dumps(data, indent=1) + "\n")
    print(tables(data))
    print(json.dumps({k: data.get(k) for k in ("verdict", "l16_probe")}, indent=1))
    plot(data, FIGURE if results_path == RESULTS else results_path.with_suffix(".png"))


if __name__ == "__main__":
    main()
