"""``latticeflow run``: from a model file to a flow-vs-HMC report, in one command.

Stages, each resumable and each leaving usable files behind (Ctrl-C keeps everything
committed so far; ``--resume DIR`` continues):

1. flow — the weights shipped beside the TOML (``models/NAME.pt``), or a training run in
   ``DIR/train/`` (``--train``, ``--train-minutes``, or when no weights are shipped);
2. ``DIR/flow-mcmc.h5`` — Metropolis independence chains with the flow;
3. ``DIR/hmc.h5`` — the HMC baseline with the model's ``[hmc]`` settings;
4. ``DIR/comparison.{md,json}`` and one PNG per observable;
5. ``DIR/report.md``, which names every file and the commands that reproduce it.

``DIR`` is ``runs/<model>-<timestamp>/`` unless ``--out`` names it; the model file is
copied to ``DIR/config.toml``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from ..errors import LatticeflowError
from .commands import flow_proposal, write_comparison

__all__ = ["cmd_run"]

FLOW_FILE, HMC_FILE, REPORT = "flow-mcmc.h5", "hmc.h5", "report.md"


def _stage(title: str, quiet: bool) -> None:
    if not quiet:
        print(f"\n== {title}", file=sys.stderr)


def _run_dir(cfg, args) -> Path:
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.toml"
        if not saved.is_file():
            raise LatticeflowError(f"--resume {run_dir}: not a run directory (no config.toml)")
        from ..config import load_config

        old = load_config(saved, legacy=True)
        if old.theory != cfg.theory or old.flow != cfg.flow:
            raise LatticeflowError(f"--resume {run_dir}: it was made from a different model "
                                   f"({old.theory.name} {old.theory.couplings()} vs "
                                   f"{cfg.theory.name} {cfg.theory.couplings()})")
        return run_dir
    if args.out:
        run_dir = Path(args.out)
        if (run_dir / "config.toml").exists():
            raise LatticeflowError(f"--out {run_dir}: already holds a run; continue it with "
                                   f"--resume {run_dir}")
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-{stamp}"


def _flow(cfg, run_dir: Path, args, info: dict):
    """The trained flow: shipped weights, or a (resumable) training run in run_dir/train."""
    from ..training import MODEL, load_flow, train

    shipped = cfg.path.with_suffix(".pt") if cfg.path else None
    train_dir = run_dir / "train"
    want_training = args.train or args.train_minutes is not None or not (shipped and shipped.is_file())
    if not want_training and not train_dir.exists():
        info["flow"] = f"shipped weights `{shipped}`"
        shutil.copy(shipped, run_dir / "model.pt")
        return load_flow(run_dir / "model.pt", cfg)
    if (train_dir / MODEL).is_file():
        info["flow"] = f"trained in `{train_dir}`"
        return load_flow(train_dir, cfg)
    train_cfg = cfg
    if args.train_minutes is not None:
        train_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, minutes=args.train_minutes))
    resume = (train_dir / "checkpoint.pt").is_file()
    result = train(train_cfg, out=train_dir, resume=resume, progress=not args.quiet)
    info["flow"] = f"trained in `{train_dir}` ({result.step} steps, stopped by {result.stopped})"
    return result.flow


def _training_facts(run_dir: Path) -> dict:
    from ..training import METRICS, read_metrics

    rows = read_metrics(run_dir / "train" / METRICS)
    if not rows:
        return {}
    last = rows[-1]
    acc = [r["acceptance"] for r in rows if r.get("acceptance") is not None]
    facts = {"training steps": last.get("step"), "training time (s)": f"{last.get('seconds', 0):.0f}"}
    if acc:
        facts["acceptance at the end of training"] = f"{acc[-1]:.3f}"
    facts["training curves"] = "![training](train/training.png)"
    return facts


def cmd_run(args) -> int:
    from .. import ensemble
    from ..analysis.report import consistency, write_report
    from ..config import load_config
    from ..mcmc.driver import run_ensemble
    from ..mcmc.flow_samplers import IndependenceMetropolis
    from ..mcmc.hmc import HMC
    from ..mcmc.hmc_chains import HMCChains

    cfg = load_config(args.model)
    if cfg.flow is None:
        raise LatticeflowError(f"{args.model}: no [flow] table, so there is no flow to run")
    if args.n is not None and args.n < 10:
        raise LatticeflowError(f"-n: must be >= 10 (got {args.n})")
    n = args.n or 20000
    theory = cfg.theory.build()
    run_dir = _run_dir(cfg, args)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.toml").exists():
        (run_dir / "config.toml").write_text(cfg.text)
    quiet = args.quiet
    resume_hint = f"latticeflow run {args.model} --resume {run_dir}"
    info: dict = {}
    try:
        _stage(f"1/4 flow for {cfg.name}", quiet)
        flow = _flow(cfg, run_dir, args, info)
        n_params = sum(p.numel() for p in flow.parameters())
        f = cfg.flow
        info["architecture"] = (f"{f.layers} {f.bijection} coupling layers, conditioner CNN "
                                f"hidden {list(f.hidden)}, kernel {f.kernel_size}; {n_params} parameters")
        info.update(_training_facts(run_dir))

        _stage("2/4 flow-MCMC ensemble", quiet)
        s = cfg.sample
        sampler = IndependenceMetropolis(theory, flow_proposal(flow, s.dtype), n_chains=s.chains,
                                         batch_size=s.batch_size, seed=s.seed,
                                         store_configs=s.configs)
        run_ensemble(sampler, theory=theory, path=run_dir / FLOW_FILE, n=n, config_text=cfg.text,
                     seed=s.seed, block=s.block, store_configs=s.configs, progress=not quiet,
                     desc="flow-mcmc")

        _stage("3/4 HMC baseline", quiet)
        h = cfg.hmc
        hmc = HMCChains(theory, HMC.from_config(theory, h), h.chains, h.thermalization, h.tune,
                        h.start, h.seed, store_configs=False, progress=not quiet)
        run_ensemble(hmc, theory=theory, path=run_dir / HMC_FILE, n=n, config_text=cfg.text,
                     seed=h.seed, block=h.block, store_configs=False, progress=not quiet,
                     desc="hmc")
    except KeyboardInterrupt:
        print(f"\ninterrupted: everything written so far is kept; continue with\n  {resume_hint}",
              file=sys.stderr)
        raise

    _stage("4/4 comparison and report", quiet)
    exact = theory.exact()
    with ensemble.open(run_dir / FLOW_FILE) as fe, ensemble.open(run_dir / HMC_FILE) as he:
        table, markdown, figures = write_comparison([fe, he], ["flow-mcmc", "hmc"], exact, run_dir)
    drawn = [Path(f).stem for f in figures]
    first = [n for n in theory.headline_observables if n in drawn]
    order = first + [n for n in drawn if n not in first]
    commands = [f"latticeflow run {args.model} -n {n}" + (" --train" if args.train else ""),
                "# or stage by stage:",
                f"latticeflow sample {args.model} -n {n} --out {run_dir / FLOW_FILE}",
                f"latticeflow hmc {args.model} -n {n} --out {run_dir / HMC_FILE} --no-configs",
                f"latticeflow compare {run_dir / FLOW_FILE} {run_dir / HMC_FILE} --out {run_dir}"]
    report = write_report(run_dir / REPORT, title=f"{cfg.name}: flow-MCMC vs HMC",
                          theory=theory.params(), description=cfg.description, table=table,
                          figures=[f"{name}.png" for name in order], flow_info=info,
                          commands=commands, seed=cfg.sample.seed)
    (run_dir / "run.json").write_text(json.dumps({"model": str(args.model), "n": n, **info,
                                                  "consistency": consistency(table)}, indent=2) + "\n")
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "report": str(report), "comparison": table},
                         indent=2))
        return 0
    print(markdown)
    for label, c in consistency(table).items():
        if c["n_compared"]:
            verdict = "consistent" if c["consistent"] else "NOT consistent"
            print(f"{label}: {verdict} with exact values (largest deviation "
                  f"{c['max_abs_deviation']:.1f}σ)")
    print(f"\nreport: {report}  ({len(figures)} plots in {run_dir})")
    return 0
