"""Benchmark: train a φ⁴ flow for a time budget, then measure how good it is.

    PYTHONPATH=. python benchmarks/phi4_flow_training.py models/phi4_tutorial.toml \
        --minutes 10 --threads 1 [--set train.lr=3e-3 --set flow.hidden=[16,16] ...]

1. Trains the model file through :func:`latticeflow.train` (its ``[train]`` table, with
   ``minutes`` replaced by ``--minutes`` if given; ``--set section.key=VALUE`` overrides any
   ``[flow]``/``[train]`` key, VALUE in TOML syntax) into ``--out`` (default
   ``runs/bench-<stem>-<timestamp>``).  ``--run DIR`` skips training and measures an
   existing run directory instead.
2. Measures Metropolis-independence acceptance and ESS on ``--eval-n`` (default 8192) fresh
   samples with the flow run in float64 (seed ``--eval-seed``).
3. Prints acceptance / eval ESS against wall time from the run's ``metrics.jsonl``.
4. Times one training step (the config's estimator) at batch 1024 on a fresh flow.
5. Prints a markdown row: settings | minutes | steps | acceptance | ESS | step time (256 and
   1024) and writes everything as JSON to ``RUN/benchmark.json``.

Threads: ``--threads`` sets torch's intra-op threads (and OMP_NUM_THREADS for children).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(data: dict) -> str:
    """A model file as TOML text: top-level scalars, then one table per section."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def apply_overrides(text: str, overrides: list[str], minutes: float | None) -> tuple[str, list[str]]:
    """Model TOML text with ``section.key=VALUE`` overrides (and ``train.minutes``) applied."""
    if not overrides and minutes is None:
        return text, []
    data = tomllib.loads(text)
    changed = []
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not name or not value:
            raise SystemExit(f"--set {item!r}: expected section.key=VALUE")
        data.setdefault(section, {})[name] = tomllib.loads(f"v = {value.strip()}")["v"]
        changed.append(f"{section}.{name}={value.strip()}")
    if minutes is not None:
        data.setdefault("train", {})["minutes"] = float(minutes)
    return dump_toml(data), changed


def step_time(cfg, batch: int, repeats: int = 5, estimator: str | None = None) -> float:
    """Seconds per training update (sample, loss, backward, Adam step) at ``batch`` (median
    of ``repeats``), with the config's estimator unless ``estimator`` is given."""
    import torch

    from latticeflow.flows import build_flow
    from latticeflow.training.loss import frozen_twin, kl_loss

    theory = cfg.theory.build()
    torch.manual_seed(0)
    flow = build_flow(theory, cfg.flow).float()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    estimator = estimator or cfg.train.estimator
    twin = frozen_twin(flow) if estimator == "path" else None
    gen = torch.Generator().manual_seed(0)

    def one():
        opt.zero_grad(set_to_none=True)
        loss, _, _ = kl_loss(flow, theory, batch, gen, estimator, twin)
        loss.backward()
        opt.step()

    one()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])


def measure(run_dir: Path, n: int, seed: int) -> dict:
    """Acceptance and ESS of ``n`` fresh float64 samples of the run's flow."""
    import numpy as np
    import torch

    from latticeflow.analysis.gamma import ess as batch_ess
    from latticeflow.config import load_config
    from latticeflow.mcmc.independence import independence_acceptance
    from latticeflow.training import load_flow

    cfg = load_config(run_dir / "config.toml")
    theory = cfg.theory.build()
    flow = load_flow(run_dir).double()
    gen = torch.Generator().manual_seed(seed)
    log_w = []
    with torch.no_grad():
        for start in range(0, n, 1024):
            x, log_q = flow.sample(min(1024, n - start), generator=gen)
            log_w.append((-theory.action(x) - log_q).numpy())
    log_w = np.concatenate(log_w)
    finite = np.isfinite(log_w)
    return {"n": n, "acceptance": independence_acceptance(log_w, rng=seed),
            "ess": float(batch_ess(log_w[finite])) if finite.all() else None,
            "nonfinite": int((~finite).sum()),
            "log_z_bound": float(np.mean(log_w[finite]))}


def history(run_dir: Path) -> list[dict]:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [{"step": r["step"], "seconds": r["seconds"], "acceptance": r["acceptance"],
             "eval_ess": r.get("eval_ess")} for r in rows if r.get("acceptance") is not None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model TOML (with [flow] and [train])")
    ap.add_argument("--minutes", type=float, default=None, help="training budget (overrides [train] minutes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="override a [flow]/[train] key (TOML value)")
    ap.add_argument("--out", type=Path, default=None, help="run directory to train into")
    ap.add_argument("--run", type=Path, default=None, help="measure this existing run; no training")
    ap.add_argument("--eval-n", type=int, default=8192)
    ap.add_argument("--eval-seed", type=int, default=123)
    ap.add_argument("--label", default=None, help="first column of the markdown row")
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from latticeflow.config import parse_config
    from latticeflow.training import train

    model = Path(args.model)
    text, changed = apply_overrides(model.read_text(), args.overrides, args.minutes)
    cfg = parse_config(text, model)
    t_train = None
    if args.run is None:
        run_dir = args.out or Path("runs") / f"bench-{model.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        t0 = time.perf_counter()
        result = train(cfg, out=run_dir, progress=False)
        t_train = time.perf_counter() - t0
        steps, stopped = result.step, result.stopped
    else:
        run_dir = args.run
        steps, stopped = None, "n/a"
    m = measure(run_dir, args.eval_n, args.eval_seed)
    hist = history(run_dir)
    if steps is None and hist:
        steps = hist[-1]["step"]
    train_seconds = hist[-1]["seconds"] if hist else t_train
    t256, t1024 = step_time(cfg, cfg.train.batch_size), step_time(cfg, 1024)
    t1024_path = step_time(cfg, 1024, estimator="path") if cfg.train.path_after is not None else None
    out = {"model": str(model), "overrides": changed, "threads": args.threads, "run_dir": str(run_dir),
           "train_seconds": train_seconds, "steps": steps, "stopped": stopped, **m,
           "step_time_train_batch": t256, "train_batch": cfg.train.batch_size,
           "step_time_1024": t1024, "step_time_1024_path": t1024_path, "history": hist}
    (Path(run_dir) / "benchmark.json").write_text(json.dumps(out, indent=1))
    print("acceptance / eval ESS vs training time:")
    for h in hist:
        print(f"  step {h['step']:5d}  {h['seconds']:7.1f} s  acc {h['acceptance']:.3f}  "
              f"ess {h['eval_ess'] if h['eval_ess'] is None else round(h['eval_ess'], 3)}")
    f = cfg.flow
    tc = cfg.train
    settings = (("momentum scaling + " if f.momentum_scaling else "")
                + f"{f.layers}×{f.bijection}{'(' + str(f.bins) + ')' if f.bijection == 'spline' else ''}"
                + (f" bound {f.bound:g}" if f.bijection == "spline" and f.bound != 5.0 else "")
                + f" h{list(f.hidden)} k{f.kernel_size} {f.activation}; bs {tc.batch_size} lr {tc.lr:g} "
                f"{tc.schedule} warmup {tc.warmup}, {tc.steps} steps planned, {tc.estimator}"
                + (f"→path after {tc.path_after}" if tc.path_after is not None else ""))
    label = args.label or (", ".join(changed) if changed else model.stem)
    ess = "—" if m["ess"] is None else f"{m['ess']:.3f}"
    print("\n| experiment | settings | threads | minutes | steps | acceptance | ESS | s/step (bs "
          f"{cfg.train.batch_size}) | s/step (bs 1024) |")
    t1024_text = f"{t1024:.3f}" + (f" ({t1024_path:.3f} path)" if t1024_path is not None else "")
    print(f"| {label} | {settings} | {args.threads} | {train_seconds / 60:.1f} | {steps} | "
          f"{m['acceptance']:.3f} | {ess} | {t256:.3f} | {t1024_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
