"""Critical slowing down of Q: HMC vs flow-MCMC, the mixed kernel and flow HMC (2D U(1)), and
with ``--baselines`` every classical sampler beside them (``csd_baselines.py``).

Reads a scan file (``sampling/u1_L16_scan.toml``): for every β it runs each sampler for a
fixed wall-clock budget into an HDF5 ensemble (resumable; ``runs/csd/b<β>/<sampler>.h5``),
then measures τ_int(Q) and τ_int(plaquette) by the Γ-method, the acceptance, the cost per
step and the cost per independent Q, with and without the training behind the flow, and
checks the plaquette and χ_Q against the exact torus values.  HMC is first tuned for cost
per independent Q (trajectory length × target acceptance scanned at one β).  The scan's
``[targets]`` (the issue's ratios at one β) are drawn into the figure and tabulated beside
each flow sampler's measured ratios to HMC, with the ensemble size at which its training
would pay for itself.  Writes ``results.json``, ``table.md`` and
``critical_slowing_down.png`` into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/critical_slowing_down.py sampling/u1_L16_scan.toml --out runs/csd
    # the table and figure of the committed run, without rerunning it
    python benchmarks/critical_slowing_down.py sampling/u1_L16_scan.toml --out runs/csd \
        --replot --results docs/critical_slowing_down_L16.json
    # every baseline (direct, heat bath, jumps on heat bath and on HMC, NE-MCMC, HMC, flow-MCMC)
    OMP_NUM_THREADS=1 python benchmarks/critical_slowing_down.py sampling/u1_L16_scan.toml --baselines \
        --out runs/csd_baselines --points 16:2 16:4 16:6 16:8 32:8
    python benchmarks/critical_slowing_down.py sampling/u1_L16_scan.toml --baselines --replot \
        --out runs/csd_baselines --results docs/critical_slowing_down_baselines.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import tomllib
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from csd_plots import figure

import latticeflow
from latticeflow import ensemble, pipeline
from latticeflow.analysis import gamma_method
from latticeflow.config import load_config
from latticeflow.training import load_flow


def tau(data: np.ndarray) -> dict:
    """τ_int of (C, n) data, flagged as a lower bound when the chains are < 20 τ_int long
    or frozen (no change at all)."""
    n = data.shape[1]
    if np.ptp(data) == 0:
        return {"tau": float(n), "error": None, "lower_bound": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = gamma_method(data)
    return {"tau": r.tau_int, "error": r.tau_int_error, "lower_bound": bool(n < 20 * r.tau_int)}


def run_for(seconds: float, step, chunk: int) -> None:
    """Call ``step(n)`` with growing n until the generation time reaches ``seconds``."""
    n, t0 = chunk, time.perf_counter()
    while True:
        result = step(n)
        if result["n"] < n or time.perf_counter() - t0 >= seconds:
            return
        n += chunk


def measure(path: Path, theory, training_seconds: float, independent_q: int) -> dict:
    with ensemble.open(path) as ens:
        q = ens.observable("topological_charge").T
        plaq = ens.observable("plaquette").T
        summary = pipeline.analyze(path)
        seconds = ens.generation_seconds
        n = ens.n
        extra = ens.extra
    exact = theory.exact()
    t_q, t_p = tau(q), tau(plaq)
    cost_step = seconds / n  # seconds per configuration (one chain-step)
    cost_q = cost_step * 2 * t_q["tau"]
    obs = summary["observables"]
    dev = {k: (obs[k]["mean"] - exact[k]) / obs[k]["error"] if obs[k]["error"] else None
           for k in ("plaquette", "chi_Q")}
    total = training_seconds + cost_q * independent_q
    return {"n": n, "seconds": seconds, "acceptance": summary["acceptance"],
            "tau_Q": t_q, "tau_plaquette": t_p, "seconds_per_step": cost_step,
            "seconds_per_independent_Q": cost_q, "training_seconds": training_seconds,
            f"seconds_for_{independent_q}_independent_Q": total,
            "plaquette": [obs["plaquette"]["mean"], obs["plaquette"]["error"], exact["plaquette"]],
            "chi_Q": [obs["chi_Q"]["mean"], obs["chi_Q"]["error"], exact["chi_Q"]],
            "deviation_sigma": dev, "extra": extra}


def tune_hmc(scan: dict, out: Path, seed: int) -> dict:
    """The (trajectory length, MD steps) with the least cost per independent Q at one β.

    Fixed step counts (no acceptance target): the dual-averaging tuner rounds the step count
    up and lands near acceptance 0.97, which is not where the cost per independent Q is least.
    """
    t = scan["hmc_tuning"]
    cfg = load_config(f"models/u1_L{scan['scan']['L']}_b{t['beta']}.toml")
    theory = cfg.theory.build()
    rows = []
    for length, step_counts in t["steps"].items():
        for steps in step_counts:
            c = pipeline.override(cfg, "hmc", trajectory_length=float(length), steps=steps, tune=False,
                                  chains=scan["chains"]["hmc"], seed=seed,
                                  thermalization=t["thermalization"])
            path = out / "hmc_tuning" / f"tau{length}_steps{steps}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            run_for(t["tune_seconds"], lambda n: pipeline.hmc(c, n, out=path, configs=False,
                                                             progress=False), 400 * c.hmc.chains)
            m = measure(path, theory, 0.0, 1)
            rows.append({"trajectory_length": float(length), "steps": steps,
                         "acceptance": m["acceptance"], "tau_Q": m["tau_Q"],
                         "seconds_per_step": m["seconds_per_step"],
                         "seconds_per_independent_Q": m["seconds_per_independent_Q"]})
            print(json.dumps(rows[-1]), flush=True)
    resolved = [r for r in rows if not r["tau_Q"]["lower_bound"]] or rows
    best = min(resolved, key=lambda r: r["seconds_per_independent_Q"])
    return {"beta": t["beta"], "scan": rows, "best": best}


def training_seconds(scan: dict, chain_key: str = "chain", base_key: str = "base_seconds") -> dict[int, float]:
    """Seconds of training behind each β's flow: the base model's plus every fine-tune
    along the β chain up to it (``[training] chain``; ``ncp_chain`` for flow HMC's flows)."""
    tr = scan["training"]
    if chain_key not in tr:
        return {}
    # the chain as trained here, or else the record of the training behind the shipped weights
    record = tr.get(f"{chain_key}_record")
    found = [Path(f) for f in (tr[chain_key], record) if f and Path(f).is_file()]
    if not found:
        raise SystemExit(f"[training] {chain_key}: neither {tr[chain_key]} nor a {chain_key}_record "
                         f"exists: the training time behind the flows is unknown")
    print(f"training seconds ({chain_key}) from {found[0]}", flush=True)
    chain = json.loads(found[0].read_text())
    total = float(tr.get(base_key, 0.0))
    out = {int(tr["base_beta"]): total} if "base_beta" in tr else {}  # the base model itself
    for row in chain:
        total += row["seconds"]
        out[int(row["beta"])] = total
    return out


def smooth_flow(scan: dict, beta: int, cfg):
    """``(config, flow)`` for flow HMC at this β: the model ``[flow_hmc] model`` names (a
    smooth NCP flow; ``{beta}`` is filled in) on this scan's lattice — its convolutions
    run unchanged at another L — or the scan's own model and flow without that key."""
    name = scan["flow_hmc"].get("model")
    if name is None:
        return None
    model = Path(name.format(beta=beta))
    if not model.with_suffix(".pt").is_file():
        return None
    fcfg = dataclasses.replace(load_config(model), theory=cfg.theory, hmc=cfg.hmc)
    return fcfg, load_flow(model.with_suffix(".pt"), fcfg)


def run_beta(beta: int, scan: dict, hmc_best: dict, out: Path, trained: dict,
             samplers: list[str] | None = None, trained_smooth: dict | None = None) -> dict:
    seed = scan["scan"]["seed"]
    model = Path(f"models/u1_L{scan['scan']['L']}_b{beta}.toml")
    cfg = load_config(model)
    theory = cfg.theory.build()
    flow = load_flow(model.with_suffix(".pt"), cfg) if model.with_suffix(".pt").is_file() else None
    smooth = smooth_flow(scan, beta, cfg) if "flow_hmc" in scan else None
    results = {}
    for kind in samplers or scan["scan"]["samplers"]:
        chains, seconds = scan["chains"][kind], scan["scan"]["seconds"][kind]
        path = out / f"b{beta}" / f"{kind}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "hmc":
            c = pipeline.override(cfg, "hmc", trajectory_length=hmc_best["trajectory_length"],
                                  steps=hmc_best["steps"], tune=False, chains=chains, seed=seed)
            step = lambda n, c=c, path=path: pipeline.hmc(c, n, out=path, configs=False, progress=False)
            chunk = 500 * chains
            cost_training = 0.0
        else:
            base, use, cost_training = cfg, flow, trained.get(beta, math.nan)
            if kind == "flow-hmc" and smooth is not None:
                (base, use), cost_training = smooth, (trained_smooth or {}).get(beta, math.nan)
            if use is None:
                continue
            c = pipeline.override(base, "sample", sampler=kind, chains=chains, seed=seed,
                                  block={"flow-mcmc": 256, "mixed": 50, "flow-hmc": 5}[kind])
            if kind == "mixed":  # its HMC trajectories: the tuned HMC's
                c = pipeline.override(c, "hmc", trajectory_length=hmc_best["trajectory_length"],
                                      steps=hmc_best["steps"], tune=False)
            if kind == "flow-hmc":
                fh = scan["flow_hmc"]
                c = pipeline.override(c, "sample", thermalization=fh["thermalization"])
                c = pipeline.override(c, "hmc", integrator=fh["integrator"], tune=fh.get("tune", False),
                                      target_acceptance=fh.get("target_acceptance"),
                                      trajectory_length=fh["trajectory_length"], steps=fh["steps"])
            step = lambda n, c=c, path=path, use=use: pipeline.sample(c, n, out=path, flow=use,
                                                                      configs=False, progress=False)
            chunk = {"flow-mcmc": 512, "mixed": 100, "flow-hmc": 5}[kind] * chains
        t0 = time.perf_counter()
        run_for(seconds, step, chunk)
        results[kind] = measure(path, theory, cost_training, scan["scan"]["independent_q"])
        results[kind]["wall_seconds"] = time.perf_counter() - t0
        results[kind]["L"] = scan["scan"]["L"]
        r = results[kind]
        print(json.dumps({"beta": beta, "sampler": kind, "n": r["n"], "acc": r["acceptance"],
                          "tau_Q": r["tau_Q"], "tau_plaq": r["tau_plaquette"]["tau"],
                          "s_per_indep_Q": r["seconds_per_independent_Q"],
                          "dev": r["deviation_sigma"]}), flush=True)
    return results


def table(results: dict, iq: int) -> str:
    def fmt_tau(t):
        if t["lower_bound"]:
            return f"> {t['tau']:.3g}"
        return f"{t['tau']:.3g}({t['error']:.2g})" if t["error"] else f"{t['tau']:.3g}"

    lines = ["| β | sampler | N | acceptance | τ_int(Q) | τ_int(plaq) | ms/step | s per indep. Q | "
             f"training (s) | total s for {iq} indep. Q | plaquette dev | χ_Q dev |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for beta, per in results.items():
        for kind, r in per.items():
            dev = r["deviation_sigma"]
            bound = "> " if r["tau_Q"]["lower_bound"] else ""
            # chains shorter than 20 τ_int: their errors are not trustworthy, the deviation is
            # shown in parentheses (not converged: no test of exactness either way)
            converged = not (r["tau_Q"]["lower_bound"] or r["tau_plaquette"]["lower_bound"])
            d = lambda v: "—" if v is None else (f"{v:+.1f}σ" if converged else f"({v:+.1f}σ)")
            lines.append(
                f"| {beta} | {kind} | {r['n']} | {r['acceptance']:.3g} | {fmt_tau(r['tau_Q'])} | "
                f"{fmt_tau(r['tau_plaquette'])} | {1e3 * r['seconds_per_step']:.3g} | "
                f"{bound}{r['seconds_per_independent_Q']:.3g} | {r['training_seconds']:.0f} | "
                f"{bound}{r[f'seconds_for_{iq}_independent_Q']:.3g} | {d(dev['plaquette'])} | "
                f"{d(dev['chi_Q'])} |")
    return "\n".join(lines)


def target_ratios(results: dict, targets: dict, iq: int) -> list[dict]:
    """Each flow sampler against HMC at the target β (``[targets] beta``): the ratios of
    τ_int(Q) and of the cost per independent Q (generation only, and with the training for
    an ensemble of ``iq`` independent Q), whether each bound is met, and the break-even
    ensemble size N* = training / (HMC's cost − the sampler's generation cost) per
    independent Q, beyond which the training pays for itself ("never" where the sampler's
    generation alone is dearer; None where a lower bound of its cost is cheaper than HMC's,
    which decides nothing).  A ratio built on a lower bound of τ_int is a lower bound."""
    per = results.get(int(targets["beta"]), {})
    if "hmc" not in per or per["hmc"]["tau_Q"]["lower_bound"]:
        return []  # no HMC row, or one too short to divide by
    hmc = per["hmc"]
    rows = []
    for kind, r in per.items():
        if kind == "hmc":
            continue
        bound = r["tau_Q"]["lower_bound"]
        tau = r["tau_Q"]["tau"] / hmc["tau_Q"]["tau"]
        gen = r["seconds_per_independent_Q"] / hmc["seconds_per_independent_Q"]
        total = r[f"seconds_for_{iq}_independent_Q"] / hmc[f"seconds_for_{iq}_independent_Q"]
        saving = hmc["seconds_per_independent_Q"] - r["seconds_per_independent_Q"]
        rows.append({"beta": int(targets["beta"]), "sampler": kind, "lower_bound": bound,
                     "tau_ratio": tau, "tau_target": targets["tau_ratio"],
                     "tau_met": (not bound) and tau <= targets["tau_ratio"],
                     "generation_cost_ratio": gen, "cost_ratio": total,
                     "cost_target": targets["cost_ratio"],
                     "cost_met": (not bound) and total <= targets["cost_ratio"],
                     "break_even_independent_Q": ("never" if saving <= 0 else None if bound
                                                  else r["training_seconds"] / saving)})
    return rows


def target_table(rows: list[dict], iq: int) -> str:
    """Markdown: the measured ratios to HMC against the targets (≥: a lower bound)."""
    def ratio(v, bound, target, met):
        if met:
            return f"{v:.3g} (target ≤ {target:.3g}: met)"
        if bound and v <= target:  # a lower bound under the target decides nothing
            return f"≥ {v:.3g} (target ≤ {target:.3g}: not decided, the chains are too short)"
        return f"{'≥ ' if bound else ''}{v:.3g} (target ≤ {target:.3g}: missed by {'≥ ' if bound else ''}{v / target:.3g}×)"

    lines = ["| β | flow sampler | τ_int(Q) flow / HMC | cost per indep. Q, generation only | "
             f"cost for {iq} indep. Q incl. training | training pays off beyond |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        b = r["lower_bound"]
        n = r["break_even_independent_Q"]
        lines.append(f"| {r['beta']} | {r['sampler']} | "
                     f"{ratio(r['tau_ratio'], b, r['tau_target'], r['tau_met'])} | "
                     f"{'≥ ' if b else ''}{r['generation_cost_ratio']:.3g} | "
                     f"{ratio(r['cost_ratio'], b, r['cost_target'], r['cost_met'])} | "
                     f"{'—' if n is None else n if n == 'never' else f'{n:.3g} indep. Q'} |")
    return "\n".join(lines)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2 (bad input, as the CLI does)."""
    print(f"critical_slowing_down.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_inputs(args) -> tuple[dict, Path]:
    """The scan file and the results file to write or redraw, checked before anything is
    written: a results file of another L, or one that is not this script's, is refused."""
    try:
        scan = tomllib.loads(Path(args.scan).read_text())
        L, iq = int(scan["scan"]["L"]), int(scan["scan"]["independent_q"])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        fail(f"{args.scan}: not a scan file ({type(exc).__name__}: {exc})")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        fail(f"--out {args.out}: not a directory")
    if args.results and not args.replot:
        fail("--results names a run to redraw (with --replot); a new run writes OUT/results.json")
    store = args.results or Path(args.out) / "results.json"
    if args.replot and not store.is_file():
        fail(f"--replot: there is no {store} to redraw from")
    if not store.is_file():
        return scan, store
    try:
        data = json.loads(store.read_text())
        rows = [row for per_beta in data["results"].values() for row in per_beta.values()]
        held = {row.get("L", 16) for row in rows}  # runs before L was recorded were L = 16
        for row in rows:
            row["deviation_sigma"], row["tau_Q"], row["seconds_for_%d_independent_Q" % iq]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        fail(f"{store}: not a results file of this script ({type(exc).__name__}: {exc})")
    if not rows and args.replot:
        fail(f"{store}: holds no results to redraw")
    if held - {L}:
        fail(f"{store} holds L = {sorted(held)}, the scan {args.scan} is L = {L}: give the scan "
             "file of that run")
    return scan, store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scan", help="scan file, e.g. sampling/u1_L16_scan.toml")
    p.add_argument("--out", default="runs/csd")
    p.add_argument("--betas", type=int, nargs="*", help="a subset of the scan's betas")
    p.add_argument("--samplers", nargs="*", help="(re)run only these samplers")
    p.add_argument("--replot", action="store_true", help="only redraw from the results file")
    p.add_argument("--results", type=Path, help="the results file (default OUT/results.json; "
                   "the committed runs: docs/critical_slowing_down_L16.json, _L8.json)")
    p.add_argument("--baselines", action="store_true", help="every classical baseline at --points "
                   "(csd_baselines.py; OUT/baselines.json, .md, .png)")
    p.add_argument("--points", nargs="*", default=["16:2", "16:4", "16:6", "16:8", "32:8"], help="L:beta")
    p.add_argument("--scale", type=float, default=1.0, help="--baselines: times each sampler's budget")
    p.add_argument("--flow-results", default="docs/critical_slowing_down_L16.json",
                   help="--baselines: the flow study whose tuned HMC, mixed and flow-hmc rows are used")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.baselines:
        import csd_baselines

        try:
            scan = tomllib.loads(Path(args.scan).read_text())
            scan["scan"]["L"], scan["scan"]["seed"]
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            fail(f"{args.scan}: not a scan file ({type(exc).__name__}: {exc})")
        return csd_baselines.main(args, scan)
    scan, store = read_inputs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    iq = scan["scan"]["independent_q"]
    data = json.loads(store.read_text()) if store.is_file() else {"results": {}}
    if not args.replot:
        if "hmc_tuning" not in data:
            data["hmc_tuning"] = tune_hmc(scan, out, scan["scan"]["seed"])
            store.write_text(json.dumps(data, indent=2))
        trained = training_seconds(scan)
        trained_smooth = training_seconds(scan, "ncp_chain", "ncp_base_seconds")
        for beta in args.betas or scan["scan"]["betas"]:
            new = run_beta(beta, scan, data["hmc_tuning"]["best"], out, trained, args.samplers,
                           trained_smooth)
            data["results"][str(beta)] = data["results"].get(str(beta), {}) | new
            data["latticeflow_version"] = latticeflow.__version__
            store.write_text(json.dumps(data, indent=2))
    results = {int(b): r for b, r in sorted(data["results"].items(), key=lambda kv: int(kv[0]))}
    targets = scan.get("targets")
    text = table(results, iq)
    if targets:
        data["targets"] = target_ratios(results, targets, iq)
        if not args.replot:
            store.write_text(json.dumps(data, indent=2))
        text += "\n\nAgainst the targets (the flow samplers vs HMC at the same β, in this run):\n\n"
        text += target_table(data["targets"], iq)
    (out / "table.md").write_text(text + "\n")
    figure(results, iq, out / "critical_slowing_down.png", targets)
    print(text)


if __name__ == "__main__":
    main()
