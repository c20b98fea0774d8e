"""Every classical baseline of 2D U(1) beside the flows, in one run (``critical_slowing_down.py
--baselines``; docs/critical_slowing_down.md, section "Every baseline").

At each point ``L:β`` every sampler below runs for a fixed wall-clock budget of generation
(``latticeflow sample`` / ``hmc`` on a model file written to ``OUT/L<L>_b<β>/<label>.toml``,
the ensemble beside it, resumable), then τ_int(Q), τ_int(plaquette), seconds per independent
Q and the plaquette and χ_Q against the exact torus values are measured as in the flow study
(``critical_slowing_down.measure``).  Classical samplers (each with the setting its own
write-up found best):

- ``hmc``: the study's tuned HMC (Omelyan, trajectory length 8, 32 steps, from
  ``hmc_tuning`` of the committed L = 16 results) at the β it was tuned for (≤ 6); beyond,
  where its acceptance collapses (0.14 at L = 16, 0 at L = 32, β = 8), trajectory length 8
  with the step size tuned to acceptance 0.8 during thermalisation;
- ``direct``: exact i.i.d. draws (no chain);
- ``heatbath``: one heat-bath + one overrelaxation sweep per step;
- ``jump-heatbath`` / ``jump-hmc``: ``instanton-jump`` with a heat-bath (+ 1 overrelaxation)
  sweep or an HMC trajectory (τ = 1, Omelyan, step size tuned to acceptance 0.8), then one
  jump Q → Q ± 1;
- ``ne-mcmc``: defect NE-MCMC, a defect of L/2 plaquettes, N = 4L heat-bath (+ 1 OR) steps.

Flows: ``flow-mcmc`` reruns in the same run with the shipped weights where they exist
(``models/u1_L16_b<β>.pt``); the ``mixed`` and ``flow-hmc`` rows (too slow to rerun here)
come from the committed flow study (``--flow-results``), and their costs are carried over
to this run through HMC, the sampler both runs share: c_flow × (c_HMC now / c_HMC then).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import critical_slowing_down as csd

from latticeflow import pipeline
from latticeflow.theories import U1

IQ = 10_000  # independent Q at which the training is counted

#: label -> (sampler, chains, budget in seconds at L = 16, [sample]/[hmc] TOML lines)
SAMPLERS = {
    "hmc": ("hmc", 16, 20, ""),
    "direct": ("direct", 16, 6, ""),
    "heatbath": ("heatbath", 16, 20, "overrelaxation = 1\n"),
    "jump-heatbath": ("instanton-jump", 16, 20, 'jump_base = "heatbath"\noverrelaxation = 1\n'),
    "jump-hmc": ("instanton-jump", 16, 20, 'jump_base = "hmc"\n'),
    "ne-mcmc": ("ne-mcmc", 16, 25, 'protocol_steps = {N}\ndefect_length = {half}\noverrelaxation = 1\n'),
}
CLASSICAL = tuple(SAMPLERS)
HMC_TUNED_UP_TO = 6  # the study tuned HMC's steps for β = 2 … 6 (sampling/u1_L16_scan.toml)
FLOW_SECONDS = 15  # flow-mcmc rerun at each L = 16 point with shipped weights
ORDER = ("hmc", "direct", "heatbath", "jump-heatbath", "jump-hmc", "ne-mcmc", "flow-mcmc", "mixed", "flow-hmc")


def model_text(label: str, L: int, beta: float, hmc_best: dict, seed: int) -> str:
    """The model file of one sampler at one point (no [flow]: classical)."""
    sampler, chains, _, own = SAMPLERS[label]
    if label == "jump-hmc":
        hmc = 'integrator = "omelyan"\ntrajectory_length = 1.0\ntune = true\ntarget_acceptance = 0.8\n'
    elif beta > HMC_TUNED_UP_TO:
        hmc = (f'integrator = "omelyan"\ntrajectory_length = {hmc_best["trajectory_length"]}\n'
               'tune = true\ntarget_acceptance = 0.8\n')
    else:
        hmc = (f'integrator = "omelyan"\ntrajectory_length = {hmc_best["trajectory_length"]}\n'
               f'steps = {hmc_best["steps"]}\ntune = false\n')
    text = (f'description = "critical_slowing_down.py --baselines: {label} at L = {L}, beta = {beta}"\n\n'
            f'[theory]\nname = "u1"\nL = {L}\nbeta = {float(beta)}\n\n'
            f"[hmc]\n{hmc}chains = {chains}\nthermalization = 200\nseed = {seed}\n\n")
    if sampler != "hmc":
        text += (f'[sample]\nsampler = "{sampler}"\nchains = {chains}\nthermalization = 100\nseed = {seed}\n'
                 + own.format(N=4 * L, half=L // 2))
    return text


def run_timed(seconds: float, step, chains: int) -> None:
    """Call ``step(n)`` (n configurations in the file) with chunks sized from the measured
    rate to take ~1/4 of the budget each, until ``seconds`` of wall time have passed after
    the first row (which follows the thermalisation, not counted in the files' seconds)."""
    step(chains)
    n, t0, rows = 2 * chains, time.perf_counter(), 1
    while True:
        t = time.perf_counter()
        step(n)
        took = max(time.perf_counter() - t, 1e-3)
        left = seconds - (time.perf_counter() - t0)
        if left <= 0:
            return
        rows = max(1, int(rows * min(seconds / 4, left) / took))
        n += rows * chains


def run_point(L: int, beta: float, out: Path, hmc_best: dict, seed: int, scale: float,
              labels, scan: dict, trained: dict) -> dict:
    theory = U1((L, L), beta=float(beta))
    folder = out / f"L{L}_b{beta:g}"
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for label in labels:
        if label == "flow-mcmc":
            if L != scan["scan"]["L"] or not Path(f"models/u1_L{L}_b{beta:g}.pt").is_file():
                continue
            flow_scan = dict(scan, scan=dict(scan["scan"], seconds={"flow-mcmc": FLOW_SECONDS * scale}))
            t0 = time.perf_counter()
            results[label] = csd.run_beta(int(beta), flow_scan, hmc_best, folder, trained, ["flow-mcmc"])[label]
            results[label]["wall_seconds"] = time.perf_counter() - t0
            continue
        sampler, chains, budget, _ = SAMPLERS[label]
        model, path = folder / f"{label}.toml", folder / f"{label}.h5"
        model.write_text(model_text(label, L, beta, hmc_best, seed))
        if sampler == "hmc":
            step = lambda n, m=model, p=path: pipeline.hmc(m, n, out=p, configs=False, progress=False)
        else:
            step = lambda n, m=model, p=path: pipeline.sample(m, n, out=p, configs=False, progress=False)
        t0 = time.perf_counter()
        run_timed(budget * scale, step, chains)
        results[label] = csd.measure(path, theory, 0.0, IQ) | {"wall_seconds": time.perf_counter() - t0, "L": L}
        r = results[label]
        print(json.dumps({"L": L, "beta": beta, "sampler": label, "n": r["n"], "tau_Q": r["tau_Q"]["tau"],
                          "s_per_indep_Q": r["seconds_per_independent_Q"], "dev": r["deviation_sigma"]}),
              flush=True)
    return results


def committed_flows(path: Path, L: int, beta: float, hmc_now: dict | None) -> dict:
    """The mixed and flow-hmc rows of the committed flow study at (L, β), their costs carried
    over to this run through HMC (``from_committed_run`` records the factor)."""
    if not path or not path.is_file():
        return {}
    data = json.loads(path.read_text())["results"].get(str(int(beta)), {})
    hmc_then = data.get("hmc")
    if not data or hmc_then is None or any(r.get("L", 16) != L for r in data.values()):
        return {}
    factor = (hmc_now["seconds_per_step"] / hmc_then["seconds_per_step"]) if hmc_now else 1.0
    rows = {}
    for label in ("mixed", "flow-hmc"):
        if label in data:
            r = json.loads(json.dumps(data[label]))
            for key in ("seconds_per_step", "seconds_per_independent_Q"):
                r[key] *= factor
            r[f"seconds_for_{IQ}_independent_Q"] = r["training_seconds"] + IQ * r["seconds_per_independent_Q"]
            r["from_committed_run"] = {"file": str(path), "time_factor": factor}
            rows[label] = r
    return rows


def verdicts(points: dict) -> list[dict]:
    """Per point: the best classical sampler and the best flow, with the flow's ratios."""
    out = []
    for key, p in points.items():
        res = p["results"]
        measured = lambda labels: [k for k in labels if k in res]
        classical = measured(CLASSICAL)
        flows = measured(("flow-mcmc", "mixed", "flow-hmc"))
        if not classical:
            continue
        # a lower bound of a cost cannot be the best: rank the resolved ones first
        rank = lambda k: (res[k]["tau_Q"]["lower_bound"], res[k]["seconds_per_independent_Q"])
        best = min(classical, key=rank)
        chain = min([k for k in classical if k != "direct"], key=rank)  # where no exact sampler exists
        row = {"point": key, "L": p["L"], "beta": p["beta"], "best_classical": best,
               "best_seconds": res[best]["seconds_per_independent_Q"],
               "best_lower_bound": res[best]["tau_Q"]["lower_bound"], "best_chain": chain,
               "chain_seconds": res[chain]["seconds_per_independent_Q"],
               "chain_lower_bound": res[chain]["tau_Q"]["lower_bound"]}
        if flows:
            flow = min(flows, key=rank)
            f = res[flow]
            gen = f["seconds_per_independent_Q"] / row["best_seconds"]
            saving = row["best_seconds"] - f["seconds_per_independent_Q"]
            t = f.get("training_seconds", math.nan)
            row |= {"best_flow": flow, "flow_seconds": f["seconds_per_independent_Q"],
                    "flow_lower_bound": f["tau_Q"]["lower_bound"], "generation_ratio": gen,
                    "ratio_with_training": (t + IQ * f["seconds_per_independent_Q"]) / (IQ * row["best_seconds"]),
                    "chain_generation_ratio": f["seconds_per_independent_Q"] / row["chain_seconds"],
                    "training_seconds": t, "break_even_independent_Q": t / saving if saving > 0 else "never",
                    "flow_from_committed_run": "from_committed_run" in f}
        out.append(row)
    return out


def _tau(t) -> str:
    if t["lower_bound"]:
        return f"> {t['tau']:.3g}"
    return f"{t['tau']:.3g}({t['error']:.2g})" if t["error"] else f"{t['tau']:.3g}"


def table(points: dict) -> str:
    """Markdown: one row per (point, sampler); the cost relative to the point's best classical
    sampler; deviations in parentheses where the chains are too short to test exactness."""
    best = {v["point"]: v["best_seconds"] for v in verdicts(points)}
    lines = ["| L | β | sampler | N | acceptance | τ_int(Q) | τ_int(plaq) | ms/step | s per indep. Q | "
             "× best classical | training (s) | plaquette dev | χ_Q dev |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, p in points.items():
        res = p["results"]
        for label in [k for k in ORDER if k in res]:
            r = res[label]
            bound = "> " if r["tau_Q"]["lower_bound"] else ""
            converged = not (r["tau_Q"]["lower_bound"] or r["tau_plaquette"]["lower_bound"])
            d = lambda v: "—" if v is None else (f"{v:+.1f}σ" if converged else f"({v:+.1f}σ)")
            name = label + (" †" if "from_committed_run" in r else "")
            rel = r["seconds_per_independent_Q"] / best[key] if key in best else math.nan
            acc = "—" if r["acceptance"] is None else f"{r['acceptance']:.3g}"
            train = f"{r['training_seconds']:.0f}" if r["training_seconds"] else "—"
            lines.append(f"| {p['L']} | {p['beta']:g} | {name} | {r['n']} | {acc} | {_tau(r['tau_Q'])} | "
                         f"{_tau(r['tau_plaquette'])} | {1e3 * r['seconds_per_step']:.3g} | "
                         f"{bound}{r['seconds_per_independent_Q']:.3g} | {bound}{rel:.3g} | "
                         f"{train} | {d(r['deviation_sigma']['plaquette'])} | "
                         f"{d(r['deviation_sigma']['chi_Q'])} |")
    return "\n".join(lines)


def verdict_table(rows: list[dict]) -> str:
    """Markdown: per point the best classical sampler against the best flow."""
    lines = ["| L | β | best classical | s per indep. Q | best Markov chain | s per indep. Q | best flow | "
             "s per indep. Q (generation) | flow / best classical, generation | "
             f"incl. training, {IQ} indep. Q | flow / best Markov chain, generation | training pays off beyond |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        b = "> " if v["best_lower_bound"] else ""
        c = "> " if v["chain_lower_bound"] else ""
        head = (f"| {v['L']} | {v['beta']:g} | {v['best_classical']} | {b}{v['best_seconds']:.3g} | "
                f"{v['best_chain']} | {c}{v['chain_seconds']:.3g} |")
        if "best_flow" not in v:
            lines.append(head + " — (no flow) | | | | | |")
            continue
        fb = "> " if v["flow_lower_bound"] else ""
        n = v["break_even_independent_Q"]
        lines.append(head + f" {v['best_flow']}{' †' if v['flow_from_committed_run'] else ''} | "
                     f"{fb}{v['flow_seconds']:.3g} | {v['generation_ratio']:.3g} | {v['ratio_with_training']:.3g} | "
                     f"{v['chain_generation_ratio']:.3g} | "
                     f"{n if n == 'never' else f'{n:.3g} indep. Q'} |")
    return "\n".join(lines)


def read_store(args) -> tuple[Path, dict]:
    """The results file to extend or redraw (``--results`` with ``--replot``; else
    OUT/baselines.json), refused in one line when it is not one of this mode's."""
    store = args.results or Path(args.out) / "baselines.json"
    if args.results and not args.replot:
        csd.fail("--results names a run to redraw (with --replot); a new run writes OUT/baselines.json")
    if not store.is_file():
        if args.replot:
            csd.fail(f"--replot: there is no {store} to redraw from")
        return store, {"points": {}}
    try:
        data = json.loads(store.read_text())
        for p in data["points"].values():
            p["L"], p["beta"], [r["tau_Q"]["tau"] for r in p["results"].values()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        csd.fail(f"{store}: not a results file of --baselines ({type(exc).__name__}: {exc})")
    return store, data


def main(args, scan: dict) -> None:
    """``--baselines``: run (or with ``--replot`` redraw) every point of ``--points``."""
    out = Path(args.out)
    store, data = read_store(args)
    flows_file = Path(args.flow_results)
    if not args.replot:
        try:
            points = [(int(a), float(b)) for a, b in (p.split(":") for p in args.points)]
        except ValueError:
            csd.fail(f"--points: expected L:beta pairs such as 16:6 (got {' '.join(args.points)})")
        labels = args.samplers or [*CLASSICAL, "flow-mcmc"]
        unknown = [k for k in labels if k not in (*CLASSICAL, "flow-mcmc")]
        if unknown:
            csd.fail(f"--samplers: {unknown[0]} is not one of {', '.join((*CLASSICAL, 'flow-mcmc'))}")
        hmc_best = json.loads(flows_file.read_text())["hmc_tuning"]["best"]
        trained = csd.training_seconds(scan) if "flow-mcmc" in labels else {}
        out.mkdir(parents=True, exist_ok=True)
        for L, beta in points:
            key = f"L{L}_b{beta:g}"
            new = run_point(L, beta, out, hmc_best, scan["scan"]["seed"], args.scale, labels, scan, trained)
            old = data["points"].get(key, {"L": L, "beta": beta, "results": {}})
            old["results"] |= new
            old["results"] |= committed_flows(flows_file, L, beta, old["results"].get("hmc"))
            data["points"][key] = old
            data["hmc"], data["flow_results"] = hmc_best, str(flows_file)
            store.write_text(json.dumps(data, indent=2))
    data["verdicts"] = verdicts(data["points"])
    if not args.replot:
        store.write_text(json.dumps(data, indent=2))
    text = (table(data["points"]) + "\n\n† carried over from the committed flow study through HMC's cost\n\n"
            + verdict_table(data["verdicts"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.md").write_text(text + "\n")
    from csd_plots import baseline_figure

    baseline_figure(data["points"], out / "baselines.png", ORDER, IQ)
    print(text)
