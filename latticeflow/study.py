"""The flow-vs-classical study of one model (``latticeflow run``), as a library function.

Stages, each resumable and each leaving usable files behind (an interrupt keeps everything
committed so far; :func:`prepare` with ``resume`` continues):

1. flow — the weights shipped beside the TOML (``models/NAME.pt``), or a training run in
   ``DIR/train/`` (``retrain``, ``train_minutes``, or when no weights are shipped);
2. ``DIR/<sampler>.h5`` — the flow sampler of ``[sample] sampler`` (``flow-mcmc.h5``:
   Metropolis independence chains, the default; ``mixed.h5``, ``flow-hmc.h5``);
3. ``DIR/hmc.h5`` — the HMC baseline with the model's ``[hmc]`` settings;
4. ``DIR/<baseline>.h5`` — every other classical baseline (``baseline=True`` in the sampler
   registry) that applies to the theory, or those ``baselines`` names, each with its default
   options and the model's common ``[sample]`` keys (chains, seed, thermalization, block)
   and ``[hmc]`` integrator, from its own fresh start, without configurations;
5. ``DIR/comparison.{md,json}`` and one PNG per observable;
6. ``DIR/report.md``, which names every file, the best classical sampler (lowest cost per
   independent sample of the theory's first headline observable, :mod:`.analysis.cost`), the
   flow's cost ratio to it with and without its training, and the commands that reproduce it.

``DIR`` is ``runs/<model>-<timestamp>/`` unless ``out`` names it; the model file and the
effective configuration are written to ``DIR/config.toml`` and ``DIR/effective_config.toml``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from . import ensemble, pipeline
from .analysis.cost import INDEPENDENT, against_best
from .analysis.report import agreement, consistency, write_report
from .config import Config, load_config
from .config.overrides import check_n
from .errors import ConfigError, LatticeflowError
from .files import RunLock, atomic_copy, atomic_write_text, check_input, check_writable, new_run_dir
from .samplers import sampler_kind
from .samplers.registry import baseline_names
from .training import METRICS, load_flow, read_metrics
from .training.run_files import CHECKPOINT, CONFIG, INIT, INTERRUPTED, MODEL, run_config, write_configs
from .training.run_files import training_seconds as recorded_seconds

__all__ = ["prepare", "run", "trained_flow", "resume_command", "choose_baselines", "HMC_FILE", "REPORT",
           "DEFAULT_N"]

HMC_FILE, REPORT = "hmc.h5", "report.md"
DEFAULT_N = 20000


def prepare(model, out=None, resume=None, train_minutes: float | None = None,
            baselines: str | None = None) -> tuple[Config, Path]:
    """The model's config and the run directory (created; refuses a resume of another model,
    and a directory that ``latticeflow train`` wrote: its weights are not the run's to replace).
    ``baselines`` (``--baselines``) is checked (:func:`choose_baselines`) before any directory
    is made.

    ``out`` naming a run of the same model continues it, like ``resume``: running the same
    command again after an interruption picks up where it stopped.  ``train_minutes`` is
    checked here, before any directory is made.
    """
    cfg = load_config(model)
    if cfg.flow is None:
        raise LatticeflowError(f"{model}: no [flow] table, so there is no flow to run")
    if train_minutes is not None:
        pipeline.override(cfg, "train", {"minutes": "--train-minutes"}, minutes=train_minutes)
    choose_baselines(cfg, baselines)
    if out and resume and Path(out).resolve() != Path(resume).resolve():
        raise LatticeflowError(f"--out {out} and --resume {resume} name different run directories; "
                               "give one of them")
    if out and not resume and (Path(out) / CONFIG).exists():
        resume = out
    if resume:
        run_dir = Path(resume)
        flag = "--resume" if resume is not out else "--out"
        if not (run_dir / CONFIG).is_file():
            raise LatticeflowError(f"{flag} {run_dir}: not a run directory (no {CONFIG})")
        written_by_train = [name for name in (CHECKPOINT, METRICS) if (run_dir / name).exists()]
        if written_by_train:
            raise LatticeflowError(f"{flag} {run_dir}: a training run directory (it holds "
                                   f"{written_by_train[0]}), not one of `latticeflow run`; "
                                   "give the run a directory of its own")
        old = run_config(run_dir)
        if old.theory != cfg.theory or old.flow != cfg.flow:
            raise LatticeflowError(f"{run_dir}: it holds a run of a different model "
                                   f"({old.theory.name} {old.theory.couplings()} vs "
                                   f"{cfg.theory.name} {cfg.theory.couplings()})")
    elif out:
        run_dir = Path(out)
        foreign = [p.name for p in (run_dir / MODEL, run_dir / "train") if p.exists()]
        foreign += sorted(p.name for p in run_dir.glob("*.h5")) if run_dir.is_dir() else []
        if foreign:
            raise LatticeflowError(f"--out {run_dir}: it holds {foreign[0]} but is not a run "
                                   f"directory (no {CONFIG}); give the run a directory of its own")
    else:
        run_dir = new_run_dir(cfg.name)
    check_writable(run_dir, directory=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / CONFIG).exists():
        write_configs(run_dir, cfg)
    return cfg, run_dir


def choose_baselines(cfg: Config, spec: str | None = None) -> tuple[str, ...]:
    """The classical baselines a run samples besides HMC: ``spec`` ``"all"`` (or None) — every
    registered baseline that applies to the theory —, ``"none"``, or comma-separated names
    (``--baselines heatbath,instanton-jump``; ``hmc`` is always run).  A name that is not a
    classical baseline, or one that does not apply to the theory, is refused in one line."""
    theory = cfg.theory.build()
    if spec is None or spec.strip() == "all":
        return baseline_names(theory, "sample")
    names = [] if spec.strip() == "none" else [n.strip() for n in spec.split(",")]
    chosen = []
    for name in names:
        kind = sampler_kind(name, "--baselines")
        if not kind.baseline:
            raise ConfigError(f"--baselines: {name} is not a classical baseline (baselines: "
                              f"{', '.join(baseline_names(theory))})")
        problem = kind.problem(theory)
        if problem:
            raise ConfigError(f"--baselines: {name}: {problem}")
        if kind.command == "sample" and name not in chosen:  # HMC (made by `latticeflow hmc`) always runs
            chosen.append(name)
    return tuple(chosen)


def resume_command(model, run_dir: Path, n: int, retrain: bool = False,
                   train_minutes: float | None = None, baselines: str | None = None) -> str:
    """The command that continues an interrupted run exactly as it was started."""
    return (f"latticeflow run {model} -n {n} --resume {run_dir}" + (" --train" if retrain else "")
            + (f" --train-minutes {train_minutes!r}" if train_minutes is not None else "")
            + (f" --baselines {baselines}" if baselines is not None else ""))


def _training_facts(run_dir: Path) -> dict:
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


def run(cfg: Config, run_dir: Path, n: int = DEFAULT_N, retrain: bool = False,
        train_minutes: float | None = None, progress: bool = True, stage=lambda title: None,
        model=None, baselines: tuple[str, ...] | None = None) -> dict:
    """All stages in ``run_dir`` (from :func:`prepare`); ``stage(title)`` is called before each;
    ``baselines``: the classical samplers besides HMC (:func:`choose_baselines`; None: all
    that apply).

    Returns ``{"run_dir", "report", "comparison", "markdown", "figures", "consistency",
    "agreement", "cost"}``.
    """
    check_n(n, 10)
    baselines = choose_baselines(cfg) if baselines is None else tuple(baselines)
    with RunLock(run_dir / ".run.lock", f"run directory {run_dir}"):
        return _stages(cfg, run_dir, n, retrain, train_minutes, progress, stage, model or cfg.path, baselines)


def _stages(cfg, run_dir, n, retrain, train_minutes, progress, stage, model, baselines) -> dict:
    total = 4 + len(baselines)
    stage(f"1/{total} flow for {cfg.name}")
    flow, how = trained_flow(cfg, run_dir, retrain, train_minutes, progress)
    f = cfg.flow
    n_params = sum(p.numel() for p in flow.parameters())
    info = {"flow": how, "architecture": f"{f.layers} {f.bijection} coupling layers, conditioner CNN "
                                         f"hidden {list(f.hidden)}, kernel {f.kernel_size}; {n_params} parameters"}
    info.update(_training_facts(run_dir))
    rows = read_metrics(run_dir / "train" / METRICS)
    # the time the weights record (a trained flow: with that of the weights it started from;
    # None: unknown), else a training run's clock
    training_seconds = recorded_seconds(run_dir / "train" / MODEL if rows else run_dir / MODEL)
    if rows and training_seconds is None and not (run_dir / "train" / INIT).is_file():
        training_seconds = float(rows[-1].get("seconds", 0.0))  # weights written before the record
    if not rows and training_seconds is not None:
        info["training time (s)"] = f"{training_seconds:.0f} (recorded in the shipped weights)"

    kind = cfg.sample.sampler
    flow_file = f"{kind}.h5"
    stage(f"2/{total} {kind} ensemble")
    pipeline.sample(cfg, n, out=run_dir / flow_file, progress=progress, flow=flow)
    stage(f"3/{total} HMC baseline")
    pipeline.hmc(cfg, n, out=run_dir / HMC_FILE, configs=False, progress=progress)
    for i, name in enumerate(baselines):
        stage(f"{4 + i}/{total} {name} baseline")
        # a classical kind ignores the flow; it is passed so that `sample` takes this Config as it is
        pipeline.sample(cfg, n, out=run_dir / f"{name}.h5", progress=progress, flow=flow, sampler=name,
                        start="flow", configs=False)

    stage(f"{total}/{total} comparison and report")
    theory = cfg.theory.build()
    labels = [kind, Path(HMC_FILE).stem, *baselines]
    with contextlib.ExitStack() as files:
        opened = [files.enter_context(ensemble.open(run_dir / f"{label}.h5")) for label in labels]
        table, markdown, figures = pipeline.write_comparison(opened, labels, run_dir)
    drawn = [Path(p).stem for p in figures]
    first = [name for name in theory.headline_observables if name in drawn]
    order = first + [name for name in drawn if name not in first]
    cost = _cost(table, kind, training_seconds)
    source = model if (run_dir / MODEL).is_file() else run_dir / "train"
    commands = [f"latticeflow run {model} -n {n}" + (" --train" if retrain else "")
                + ("" if baselines == choose_baselines(cfg) else f" --baselines {','.join(baselines) or 'none'}"),
                "# or stage by stage:",
                f"latticeflow sample {source} -n {n} --out {run_dir / flow_file}",
                f"latticeflow hmc {model} -n {n} --out {run_dir / HMC_FILE} --no-configs"]
    own_start = "" if cfg.sample.start == "flow" else " --start flow"  # the baselines' own fresh start
    commands += [f"latticeflow sample {model} --sampler {name} -n {n} --out {run_dir / name}.h5 --no-configs"
                 + own_start for name in baselines]
    commands.append("latticeflow compare " + " ".join(str(run_dir / f"{label}.h5") for label in labels)
                    + f" --out {run_dir}")
    others = ", ".join(sampler_kind(name).title for name in baselines)
    report = write_report(run_dir / REPORT, title=f"{cfg.name}: {sampler_kind(kind).title} vs HMC"
                          + (f" and {others}" if others else ""), flow_label=kind,
                          theory=theory.params(), description=cfg.description, table=table,
                          figures=[f"{name}.png" for name in order], flow_info=info,
                          commands=commands, seed=cfg.sample.seed, cost=cost)
    checks = consistency(table)
    pair = agreement(table, kind, "hmc")
    atomic_write_text(run_dir / "run.json", json.dumps({"model": str(model), "n": n, **info,
                                                        "baselines": ["hmc", *baselines],
                                                        "consistency": checks, "agreement": pair,
                                                        "cost": cost}, indent=2) + "\n")
    return {"run_dir": run_dir, "report": report, "comparison": table, "markdown": markdown,
            "figures": figures, "consistency": checks, "agreement": pair, "cost": cost}


def _cost(table: dict, flow_label: str, training_seconds: float | None) -> dict | None:
    """The cost per independent sample of every file (``table["cost"]``) and the flow against
    the best classical sampler (:func:`~latticeflow.analysis.cost.against_best`)."""
    if not table.get("cost"):
        return None
    costs = table["cost"]["ensembles"]
    classical = [e["label"] for e in table["ensembles"] if sampler_kind(e["sampler"]).baseline]
    verdict = against_best(costs, flow_label, classical, training_seconds, INDEPENDENT)
    return {"observable": table["cost"]["observable"], "classical": classical, "ensembles": costs} | verdict


def trained_flow(cfg: Config, run_dir: Path, retrain: bool = False, minutes: float | None = None,
                 progress: bool = True) -> tuple[object, str]:
    """The flow of a model: its shipped weights (copied to ``run_dir/model.pt`` once: a
    resumed run keeps sampling the flow it started with), or a resumable training run in
    ``run_dir/train``.  Returns ``(flow, how)``."""
    shipped = cfg.path.with_suffix(".pt") if cfg.path else None
    copy, train_dir = run_dir / MODEL, run_dir / "train"
    asked = retrain or minutes is not None
    if shipped and os.path.lexists(shipped) and not asked:  # there, but a FIFO, a loop, a directory
        check_input(shipped, "weights file")
    if not copy.is_file() and not asked and shipped and shipped.is_file() and not train_dir.exists():
        load_flow(shipped, cfg)  # unreadable weights are refused naming the shipped file, before any copy
        atomic_copy(shipped, copy)
    if copy.is_file():  # started from the shipped weights: its flow for good
        if asked:
            raise LatticeflowError(f"{run_dir} samples its copy of the shipped weights ({MODEL}); "
                                   "--train/--train-minutes cannot change the flow of a run that "
                                   "has started: give the training run a new --out")
        return load_flow(copy, cfg), f"shipped weights `{shipped}` (the run's copy: `{MODEL}`)"
    if (train_dir / MODEL).is_file() and not (train_dir / INTERRUPTED).is_file():  # finished
        if minutes is not None and run_config(train_dir).train.minutes != minutes:
            raise LatticeflowError(f"{run_dir}: its flow finished training ({train_dir / MODEL}); "
                                   f"--train-minutes {minutes:g} cannot change it: give a new --out")
        return load_flow(train_dir, cfg), f"trained in `{train_dir}`"
    result = pipeline.train(pipeline.override(cfg, "train", {"minutes": "--train-minutes"}, minutes=minutes),
                   out=train_dir, resume=(train_dir / "checkpoint.pt").is_file(), progress=progress)
    return result.flow, f"trained in `{train_dir}` ({result.step} steps, stopped by {result.stopped})"
