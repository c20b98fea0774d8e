"""Stochastic normalizing flows on the defect (the ``snf`` sampler) against plain NE-MCMC with
the same protocol (docs/nonequilibrium.md, "Stochastic normalizing flows").

Three parts, each optional:

- ``--train``: train the maps of a model file by ``latticeflow train`` (``[train] objective =
  "work"``) into ``--out``, with ``[train] minutes`` as its budget; the training seconds are
  recorded (``train_seconds`` in the JSON) and counted in the cost per configuration.
- ``--transports N``: N transports with the trained maps and N without (the same protocol,
  starts and seeds), and for each the acceptance estimated by running independence chains over
  random orders of their works (pure U(1): the sampler's acceptance, its starts being exact
  and independent), the ESS of e^{−W}, ⟨W⟩ − ΔF (the dissipation) and ΔF against the exact value.
- ``--chains ROWS``: both samplers as chains into ensemble files (``latticeflow.sample``),
  analysed by the package: acceptance, τ_int, ESS per second of an observable with and without
  the training time, for ``--configs`` configurations (default 10⁴), and the exactness checks.

    OMP_NUM_THREADS=1 python benchmarks/snf.py models/snf_u1_L32_b8.toml --transports 512
    OMP_NUM_THREADS=1 python benchmarks/snf.py models/snf_schwinger_L8_b4.toml --train --chains 40
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latticeflow
from latticeflow.analysis.gamma import ess
from latticeflow.config import load_config
from latticeflow.theories.defect import free_energy_difference
from latticeflow.training import load_flow
from latticeflow.mcmc.nemcmc import transport_parts
from latticeflow.training.work import snf_transport

sys.path.insert(0, str(Path(__file__).parent))
from nonequilibrium import independence_acceptance  # noqa: E402


def model_weights(model: Path, out: Path | None) -> Path:
    """The trained weights: the run directory's ``model.pt`` if ``out`` holds one, else the
    ``.pt`` beside the model file."""
    if out is not None and (out / "model.pt").is_file():
        return out / "model.pt"
    return model.with_suffix(".pt")


def train(model: Path, out: Path, minutes: float | None) -> dict:
    cfg = load_config(model)
    if minutes is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, minutes=minutes))
    t0 = time.perf_counter()
    result = latticeflow.train(cfg, out=out, progress=False)
    return {"train_seconds": time.perf_counter() - t0, "train_steps": result.step, "stopped": result.stopped,
            "last_metrics": result.metrics}


def transports(model: Path, weights: Path, n: int, batch: int, seed: int) -> dict:
    """N transports with and without the maps (module docstring)."""
    cfg = load_config(model)
    theory, s = cfg.theory.build(), cfg.sample
    flow = load_flow(weights, cfg).requires_grad_(False)
    parts = transport_parts(theory, s, cfg.hmc)
    out = {"L": theory.shape[0], "beta": theory.beta, "defect_length": s.defect_length,
           "protocol_steps": parts.protocol.steps, "maps": s.maps, "patch": s.patch, "transports": n}
    exact = None if theory.has_fermions else free_energy_difference(theory.shape, theory.beta, s.defect_length)
    for label, with_maps in (("plain", False), ("snf", True)):
        transport = snf_transport(flow, parts, s.maps, s.patch)
        if not with_maps:
            transport.maps = None
        g, works, seconds = torch.Generator().manual_seed(seed), [], 0.0
        if parts.hmc is not None:  # the Schwinger model: a chain of c = 0 starts, thermalised
            parts.defect.set_c(0.0)
            parts.starts.current = parts.hmc.thermalize(theory.random_field(batch, g), s.thermalization, g,
                                                        tune=False)
        for _ in range(math.ceil(n / batch)):
            x = parts.starts.propose(batch, g)[0]
            if parts.hmc is not None:
                parts.starts.commit(torch.ones(batch, dtype=torch.bool))
            t0 = time.perf_counter()
            with torch.no_grad():
                works.append(transport(x, g)[1])
            seconds += time.perf_counter() - t0
        w = torch.cat(works)[:n].numpy()
        shift = w.min()
        delta_f = float(shift - np.log(np.mean(np.exp(-(w - shift)))))
        out[label] = {"acceptance_estimate": independence_acceptance(w), "ess": ess(-w), "mean_work": float(w.mean()),
                      "work_std": float(w.std()), "delta_f": delta_f, "delta_f_exact": exact,
                      "dissipation": float(w.mean()) - (exact if exact is not None else delta_f),
                      "seconds_per_transport": seconds / len(w)}
    return out


def chains(model: Path, weights: Path, rows: int, configs: int, train_seconds: float, folder: Path,
           observables: list[str]) -> dict:
    """Both samplers as chains (module docstring)."""
    cfg = load_config(model)
    out = {}
    for label, sampler in (("plain", "ne-mcmc"), ("snf", "snf")):
        path = folder / f"{label}.h5"
        run = weights.parent if weights.name == "model.pt" else model
        cpu, call = time.process_time(), time.perf_counter()  # a shared machine: count CPU seconds
        latticeflow.sample(run if sampler == "snf" else model, n=rows * cfg.sample.chains, out=path,
                           sampler=sampler, configs=False, progress=False)
        cpu, call = time.process_time() - cpu, time.perf_counter() - call
        s = latticeflow.analyze(path)
        with latticeflow.ensemble.open(path) as ens:
            updates = {k: float(np.mean(ens.mcmc[k])) for k in ("update_acceptance", "prior_acceptance")
                       if k in ens.mcmc}
        wall = s["generation_seconds"]
        seconds = cpu * wall / call  # the generation's share of the call's CPU time (not thermalisation)
        extra = train_seconds if label == "snf" else 0.0
        q = out[label] = {"acceptance": s["acceptance"], "ess": s["ess"], "n": s["n"], "cpu_seconds": seconds,
                          "wall_seconds": wall, "delta_f": s.get("delta_f"), "observables": {}, **updates}
        for name in observables:
            r = s["observables"][name]
            n_eff = s["n"] / (2 * r["tau_int"])
            q["observables"][name] = {
                "mean": r["mean"], "error": r["error"], "exact": s.get("exact", {}).get(name), "tau_int": r["tau_int"],
                "tau_int_error": r["tau_int_error"], "too_short": r["too_short"], "ess_per_second": n_eff / seconds,
                # configs configurations at this sampler's seconds per configuration, plus its training
                "ess_per_second_with_training": configs / (2 * r["tau_int"]) / (configs * seconds / s["n"] + extra)}
    out["ratios"] = {name: {k: out["snf"]["observables"][name][k] / out["plain"]["observables"][name][k]
                            for k in ("ess_per_second", "ess_per_second_with_training")} for name in observables}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a model TOML with [sample] sampler = \"snf\" (weights beside it)")
    p.add_argument("--train", action="store_true", help="train the maps first (into --out)")
    p.add_argument("--minutes", type=float, help="the training's time budget (default: [train] minutes)")
    p.add_argument("--out", type=Path, help="training run directory (default: runs/<model>-snf-bench)")
    p.add_argument("--transports", type=int, default=0, help="transports with and without the maps")
    p.add_argument("--batch", type=int, default=64, help="transports at once")
    p.add_argument("--chains", type=int, default=0, help="rows of both samplers' chains ([sample] chains each)")
    p.add_argument("--configs", type=int, default=10_000, help="configurations the ESS per second counts for")
    p.add_argument("--observables", nargs="+", default=["topological_charge", "plaquette"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-seconds", type=float, default=0.0, help="training seconds counted without --train "
                   "(e.g. those of the shipped weights)")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args()
    out_dir = a.out or Path("runs") / f"{a.model.stem}-snf-bench"
    results = {"command": " ".join(["benchmarks/snf.py", *sys.argv[1:]]), "model": str(a.model)}
    if a.train:
        results["training"] = train(a.model, out_dir, a.minutes)
        print(f"trained {results['training']['train_steps']} steps in {results['training']['train_seconds']:.0f} s",
              flush=True)
    weights = model_weights(a.model, out_dir if a.train or a.out else None)
    if a.transports:
        r = results["transports"] = transports(a.model, weights, a.transports, a.batch, a.seed)
        for label in ("plain", "snf"):
            q = r[label]
            print(f"{label:5s}: acceptance ≈ {q['acceptance_estimate']:.3f}, ESS {q['ess']:.3f}, ⟨W⟩ − ΔF "
                  f"{q['dissipation']:.2f}, std W {q['work_std']:.2f}, ΔF {q['delta_f']:.2f} (exact "
                  f"{q['delta_f_exact']}), {q['seconds_per_transport']:.3f} s per transport", flush=True)
    if a.chains:
        train_seconds = results.get("training", {}).get("train_seconds", a.train_seconds)
        with tempfile.TemporaryDirectory() as folder:
            r = results["chains"] = chains(a.model, weights, a.chains, a.configs, train_seconds, Path(folder),
                                           a.observables)
        for label in ("plain", "snf"):
            q = r[label]
            print(f"{label:5s}: acceptance {q['acceptance']:.3f}, ESS {q['ess']:.3f}, {q['n']} configurations in "
                  f"{q['cpu_seconds']:.0f} CPU s ({q['wall_seconds']:.0f} s wall)", flush=True)
            for name, v in q["observables"].items():
                print(f"       {name}: {v['mean']:.5f}({v['error']:.5f}) exact {v['exact']}, τ_int {v['tau_int']:.2f}"
                      f"({v['tau_int_error']:.2f}){'*' if v['too_short'] else ''}, ESS/s {v['ess_per_second']:.3f}, "
                      f"with training for {a.configs} configurations {v['ess_per_second_with_training']:.3f}")
        for name, v in r["ratios"].items():
            print(f"SNF / plain ESS per second, {name}: {v['ess_per_second']:.2f}, with training for {a.configs} "
                  f"configurations: {v['ess_per_second_with_training']:.2f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
