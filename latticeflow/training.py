"""Reverse-KL training of a flow, with run directories, checkpoints and exact resume.

Loss (DESIGN §2): L = E_{x~q}[log q(x) + S(x)] = KL(q‖p) − log Z ≥ −log Z, so −L is a lower
bound on log Z; both are logged.  Two gradient estimators (``[train] estimator``):

- ``"reparam"``: x = f_θ(z), z ~ r, and the gradient of the batch mean of
  log q_θ(x) + S(x) through everything (arXiv:1904.12072).
- ``"path"``: the path gradient of Vaitl et al., arXiv:2207.08219.  Writing
  log q_θ(f_θ(z)), the total derivative is the *path* term ∂_x[log q_θ(x) + S(x)] · ∂_θ f_θ(z)
  plus the *score* term ∂_θ log q_θ(x)|_x fixed, whose expectation under q vanishes; the
  path estimator drops it, which cuts the variance (to zero at q = p).  Implemented by
  pushing z through the flow with gradients (x depends on θ) and evaluating log q(x) with
  a *parameter-frozen twin* of the flow (a copy whose parameters are refreshed from the
  flow each step and never require grad), through its inverse: the twin passes gradients
  only through x, i.e. exactly the path term.  Costs one extra inverse pass.

``[train] path_after = N`` gives a two-phase schedule: ``estimator`` (normally ``"reparam"``,
the cheaper step) for the first N updates, ``"path"`` from update N on, where its lower
variance near convergence pays for its cost (:meth:`Trainer.estimator_at`).

The run directory (``runs/<config name>-<timestamp>/`` or ``out``) holds ``config.toml``
(the model file, echoed), ``metrics.jsonl`` (one JSON object per logged step),
``training.png``, ``checkpoint.pt`` (everything a resume needs, written atomically) and,
at the end, ``model.pt`` (weights + the physics/architecture they belong to; load with
:func:`load_flow`).  A non-finite loss or gradient skips the update; ``MAX_BAD_STEPS`` in a
row roll the model back to the last checkpoint (kept in memory).  Training runs in float32;
weights, ESS and acceptance are computed in float64 from the float32 samples.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .analysis.gamma import ess as batch_ess
from .config import Config, load_config, parse_config
from .errors import ConfigError, LatticeflowError
from .flows.build import build_flow
from .mcmc.independence import independence_acceptance, log_weight

__all__ = ["train", "TrainResult", "load_flow", "Trainer", "kl_loss", "learning_rate", "MAX_BAD_STEPS"]

#: consecutive non-finite steps after which the model is rolled back to the last checkpoint
MAX_BAD_STEPS = 5
CHECKPOINT, MODEL, METRICS, PLOT, CONFIG = "checkpoint.pt", "model.pt", "metrics.jsonl", "training.png", "config.toml"


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the last logged metrics, the flow."""

    run_dir: Path
    metrics: dict
    flow: torch.nn.Module
    step: int
    stopped: str  # "steps" (plan finished) or "time" (the minutes budget ran out)


def learning_rate(step: int, lr: float, total: int, schedule: str, warmup: int) -> float:
    """lr for update number ``step`` (0-based): linear warmup over ``warmup`` steps, then
    constant or cosine decay to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def kl_loss(flow, theory, batch: int, generator=None, estimator: str = "reparam", twin=None):
    """Surrogate reverse-KL loss for ``backward()``, and the batch's (log q, S) in float64.

    Arguments:
        flow: a :class:`~latticeflow.flows.flow.Flow`.
        theory: anything with ``action(x) -> (batch,)``.
        estimator: ``"reparam"`` or ``"path"`` (module docstring).
        twin: for ``"path"``, a parameter-frozen copy of ``flow`` (made here if None).

    Returns:
        ``(loss, log_q, action)``: the scalar to differentiate (its value is the batch mean
        of log q + S in both cases) and detached float64 ``(batch,)`` tensors.
    """
    if estimator == "reparam":
        x, log_q = flow.sample(batch, generator=generator)
    elif estimator == "path":
        twin = twin if twin is not None else _frozen_twin(flow)
        _refresh_twin(twin, flow)
        z = flow.prior.sample(batch, generator=generator).to(flow.dtype)
        x, _ = flow(z)
        log_q = twin.log_prob(x)  # parameters frozen: gradient flows through x only
    else:
        raise LatticeflowError(f"train.estimator: unknown estimator {estimator!r}")
    action = theory.action(x.double())
    loss = (log_q.double() + action).mean()
    return loss, log_q.detach().double(), action.detach()


def _frozen_twin(flow):
    twin = copy.deepcopy(flow)
    twin.requires_grad_(False)
    return twin


@torch.no_grad()
def _refresh_twin(twin, flow):
    for p_twin, p in zip(twin.parameters(), flow.parameters()):
        p_twin.copy_(p)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _model_file(flow, cfg: Config) -> dict:
    return {"format": "latticeflow-model", "version": 1, "latticeflow_version": __version__,
            "theory": cfg.theory.build().params(), "flow": asdict(cfg.flow), "config": cfg.text,
            "state_dict": flow.state_dict()}


def _mismatch(old: Config, new: Config) -> list[str]:
    out = []
    for section in ("theory", "flow"):
        a, b = asdict(getattr(old, section)), asdict(getattr(new, section))
        out += [f"{section}.{k}: {a[k]!r} in the checkpoint, {b[k]!r} now" for k in a if a[k] != b[k]]
    return out


class Trainer:
    """One training run in a run directory; :func:`train` is the usual entry point.

    Arguments:
        cfg: a :class:`~latticeflow.config.Config` with a ``[flow]`` table.
        run_dir: the run directory (created if missing).
        steps: planned total number of steps (default ``cfg.train.steps``, or on resume the
            checkpoint's plan); the cosine schedule decays to zero there.
        resume: continue from ``run_dir/checkpoint.pt``.
        init: a state dict to start from instead of fresh weights (fine-tuning, or moving a
            flow to another β or L).
    """

    def __init__(self, cfg: Config, run_dir: Path, steps: int | None = None, resume: bool = False,
                 init: dict | None = None):
        if cfg.flow is None:
            where = cfg.path or "the model file"
            raise LatticeflowError(f"{where}: no [flow] table, so there is no flow to train")
        self.cfg, self.tc, self.run_dir = cfg, cfg.train, Path(run_dir)
        self.theory = cfg.theory.build()
        with torch.random.fork_rng():  # initial weights from the config's seed, user RNG untouched
            torch.manual_seed(self.tc.seed)
            self.flow = build_flow(self.theory, cfg.flow).float()
        if init is not None:
            self.flow.load_state_dict(init)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.tc.lr)
        self.generator = torch.Generator().manual_seed(self.tc.seed)
        uses_path = self.tc.estimator == "path" or self.tc.path_after is not None
        self.twin = _frozen_twin(self.flow) if uses_path else None
        self.step, self.elapsed, self.bad_steps, self.rollbacks, self.consecutive_bad = 0, 0.0, 0, 0, 0
        self.total = steps or self.tc.steps
        if resume:
            self._load_checkpoint(steps)
        self.snapshot = self._snapshot()
        self.last: dict = {}
        self._updating = False  # inside optimizer.step(): an interrupt there must not be saved

    # --- state ------------------------------------------------------------------------------
    def _snapshot(self):
        return (self.step, copy.deepcopy(self.flow.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

    def _rollback(self):
        step, model, optimizer = self.snapshot
        self.flow.load_state_dict(model)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer))
        self.rollbacks += 1
        return step

    def save_checkpoint(self, generator_state=None) -> None:
        state = {
            "format": "latticeflow-checkpoint", "version": 1, "latticeflow_version": __version__,
            "step": self.step, "total_steps": self.total, "elapsed": self.elapsed,
            "bad_steps": self.bad_steps, "rollbacks": self.rollbacks,
            "model": self.flow.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": {"schedule": self.tc.schedule, "warmup": self.tc.warmup, "lr": self.tc.lr,
                          "total_steps": self.total},
            "generator": generator_state if generator_state is not None else self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "config": self.cfg.text,
        }
        _atomic_save(state, self.run_dir / CHECKPOINT)
        self.snapshot = self._snapshot()

    def _load_checkpoint(self, steps):
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise LatticeflowError(f"{self.run_dir}: no {CHECKPOINT} to resume from")
        try:
            state = torch.load(path, weights_only=True)
        except Exception:
            state = None
        if not isinstance(state, dict) or state.get("format") != "latticeflow-checkpoint":
            raise LatticeflowError(f"{path}: not a readable latticeflow checkpoint")
        try:
            old = parse_config(state["config"])
        except ConfigError as exc:
            raise LatticeflowError(f"{path}: its config no longer validates ({exc})") from None
        problems = _mismatch(old, self.cfg)
        if problems:
            raise LatticeflowError(f"{path}: cannot resume with a different theory or architecture: "
                                   + "; ".join(problems))
        self.flow.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.bad_steps, self.rollbacks = state["bad_steps"], state["rollbacks"]
        self.total = steps or state["total_steps"]
        _truncate_metrics(self.run_dir / METRICS, self.step)

    # --- one step -----------------------------------------------------------------------------
    def estimator_at(self, step: int) -> str:
        """The gradient estimator of update number ``step`` (0-based): ``"path"`` from
        ``path_after`` on, ``estimator`` before (and always, without ``path_after``)."""
        if self.tc.path_after is not None and step >= self.tc.path_after:
            return "path"
        return self.tc.estimator

    def train_step(self) -> dict:
        """One optimizer update (or a skipped one); returns this step's metrics."""
        lr = learning_rate(self.step, self.tc.lr, self.total, self.tc.schedule, self.tc.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, log_q, action = kl_loss(self.flow, self.theory, self.tc.batch_size, self.generator,
                                      self.estimator_at(self.step), self.twin)
        grad_norm = float("nan")
        if torch.isfinite(loss):
            loss.backward()
            grads = [p.grad.flatten() for p in self.flow.parameters() if p.grad is not None]
            grad_norm = float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0
        skipped = not (math.isfinite(grad_norm) and torch.isfinite(loss))
        if skipped:
            self.bad_steps += 1
            self.consecutive_bad += 1
        else:
            if self.tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.tc.grad_clip)
            self._updating = True
            self.optimizer.step()
            self.consecutive_bad = 0
        self.step += 1
        self._updating = False
        self.optimizer.zero_grad(set_to_none=True)
        log_w = log_weight(action, log_q).numpy()
        finite = bool(np.all(np.isfinite(log_w)))
        record = {"step": self.step, "loss": _num(loss), "log_z_bound": _num(-loss),
                  "ess": batch_ess(log_w) if finite else None, "lr": lr, "grad_norm": _num(grad_norm),
                  "skipped": skipped}
        if self.consecutive_bad >= MAX_BAD_STEPS:
            record["rolled_back_to"] = self._rollback()
            self.consecutive_bad = 0
        return record

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Acceptance and ESS of ``eval_batch`` fresh samples (seeded by seed and step)."""
        gen = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + self.step)
        log_w = []
        for start in range(0, self.tc.eval_batch, self.tc.batch_size):
            x, log_q = self.flow.sample(min(self.tc.batch_size, self.tc.eval_batch - start), generator=gen)
            log_w.append(log_weight(self.theory.action(x.double()), log_q))
        log_w = torch.cat(log_w).numpy()
        if not np.all(np.isfinite(log_w)) or log_w.size < 2:
            return {"acceptance": None, "eval_ess": None}
        return {"acceptance": independence_acceptance(log_w, rng=[self.tc.seed, self.step]),
                "eval_ess": batch_ess(log_w)}

    # --- the loop -------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> TrainResult:
        from tqdm.auto import tqdm

        start, stopped = time.perf_counter(), "steps"
        elapsed0, tc = self.elapsed, self.tc
        bar = tqdm(total=self.total, initial=self.step, disable=not progress, desc=self.cfg.name,
                   dynamic_ncols=True, leave=True)
        generator_state, step_before = self.generator.get_state(), self.step
        try:
            while self.step < self.total:
                generator_state, step_before = self.generator.get_state(), self.step
                record = self.train_step()
                self.elapsed = elapsed0 + time.perf_counter() - start
                last = self.step >= self.total
                over_time = tc.minutes is not None and time.perf_counter() - start > 60 * tc.minutes
                if self.step % tc.eval_every == 0 or last or over_time:
                    record |= self.evaluate()
                if "rolled_back_to" in record:
                    bar.write(f"latticeflow: {MAX_BAD_STEPS} non-finite steps in a row at step "
                              f"{self.step}: rolled back to the weights of step {record['rolled_back_to']}")
                if (self.step % tc.log_every == 0 or self.step == 1 or last or over_time
                        or record["skipped"] or "acceptance" in record):
                    self._log(record)
                    bar.set_postfix(_postfix(self.last), refresh=False)
                bar.update(1)
                if self.step % tc.checkpoint_every == 0:
                    self.save_checkpoint()
                    self.plot()
                if over_time:
                    stopped = "time"
                    break
        except KeyboardInterrupt:
            self.elapsed = elapsed0 + time.perf_counter() - start
            self._interrupted(generator_state, step_before, bar)
            raise
        finally:
            bar.close()
        self.save_checkpoint()
        self._finish()
        return TrainResult(self.run_dir, self.last or _last_metrics(self.run_dir / METRICS),
                           self.flow, self.step, stopped)

    def _interrupted(self, generator_state, step_before, bar) -> None:
        """Ctrl-C: checkpoint the last whole step, so that a resume continues exactly."""
        if self._updating:
            bar.write("latticeflow: interrupted inside an update; the last checkpoint stays valid")
            return
        if self.step == step_before:  # the step was cut short before its update: undo its sampling
            self.generator.set_state(generator_state)
        self.save_checkpoint()
        self._finish()

    def _log(self, record: dict) -> None:
        full = {"step": record["step"], "loss": record["loss"], "log_z_bound": record["log_z_bound"],
                "ess": record["ess"], "acceptance": record.get("acceptance"), "lr": record["lr"],
                "seconds": round(self.elapsed, 3), "grad_norm": record["grad_norm"],
                "skipped": record["skipped"], "bad_steps": self.bad_steps, "rollbacks": self.rollbacks}
        full |= {k: v for k, v in record.items() if k not in full}
        with open(self.run_dir / METRICS, "a") as fh:
            fh.write(json.dumps(full) + "\n")
        self.last = full

    def _finish(self) -> None:
        _atomic_save(_model_file(self.flow, self.cfg), self.run_dir / MODEL)
        self.plot()

    def plot(self) -> None:
        plot_training(self.run_dir / METRICS, self.run_dir / PLOT)


def _num(v) -> float | None:
    v = float(v.detach()) if torch.is_tensor(v) else float(v)
    return v if math.isfinite(v) else None


def _postfix(m: dict) -> dict:
    out = {"loss": m.get("loss"), "ess": m.get("ess"), "acc": m.get("acceptance")}
    return {k: f"{v:.4g}" for k, v in out.items() if v is not None}


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_metrics(path: Path) -> dict:
    records = _read_metrics(path)
    return records[-1] if records else {}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint (a killed run), so a resume never duplicates."""
    records = _read_metrics(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != len(records):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)


def plot_training(metrics: Path, out: Path) -> None:
    """Loss (with the log Z bound), batch ESS and acceptance against step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    records = _read_metrics(Path(metrics))
    fig = Figure(figsize=(7, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, key, label in zip(axes, ("loss", "ess", "acceptance"),
                              ("loss = KL − log Z", "batch ESS", "Metropolis acceptance")):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="." if key == "acceptance" else None, lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("symlog", linthresh=10)  # the first steps are orders of magnitude above the rest
    axes[1].set_ylim(0, 1.02)
    axes[2].set_ylim(0, 1.02)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    tmp = Path(out).with_name(Path(out).name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, out)


def _run_dir(cfg: Config, out, resume: bool) -> Path:
    if out is None:
        if resume:
            raise LatticeflowError("resume: give the run directory to continue (--out DIR)")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir, n = Path("runs") / f"{cfg.name}-{stamp}", 1
        while run_dir.exists():
            n += 1
            run_dir = Path("runs") / f"{cfg.name}-{stamp}-{n}"
    else:
        run_dir = Path(out)
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise LatticeflowError(f"{run_dir}: no {CHECKPOINT} here to resume from")
    elif (run_dir / CHECKPOINT).exists():
        raise LatticeflowError(f"{run_dir}: already holds a training run; resume it (--resume) "
                               "or choose another output directory")
    elif run_dir.exists() and not run_dir.is_dir():
        raise LatticeflowError(f"{run_dir}: exists and is not a directory")
    return run_dir


def train(config_or_path, out=None, steps: int | None = None, resume: bool = False,
          progress: bool = True) -> TrainResult:
    """Train the flow of a model file by reverse KL; see the module docstring.

    Arguments:
        config_or_path: a :class:`~latticeflow.config.Config` or the path of a model TOML.
        out: the run directory (default ``runs/<name>-<timestamp>/``; required to resume).
        steps: planned total steps, overriding ``[train] steps`` (on resume: the
            checkpoint's plan unless given).
        resume: continue the run in ``out`` exactly where its checkpoint left off.
        progress: show a tqdm progress bar (stderr).

    Example:
        >>> result = latticeflow.train("models/phi4_tutorial.toml", steps=100)  # doctest: +SKIP
        >>> result.metrics["acceptance"], result.run_dir                         # doctest: +SKIP
    """
    cfg = config_or_path if isinstance(config_or_path, Config) else load_config(config_or_path)
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path or 'the model file'}: no [flow] table, so there is no flow to train")
    run_dir = _run_dir(cfg, out, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, steps, resume)
    config_file = run_dir / CONFIG
    if config_file.is_file() and config_file.read_text() != cfg.text:
        os.replace(config_file, run_dir / f"config-until-step{trainer.step}.toml")
    config_file.write_text(cfg.text)
    return trainer.run(progress)


def load_flow(source, config=None):
    """A trained flow (float32, eval mode) from a run directory or a ``.pt`` weights file.

    Arguments:
        source: a run directory (uses ``model.pt``, else the ``checkpoint.pt`` weights) or a
            weights file such as ``models/phi4_tutorial.pt``.
        config: the model's :class:`Config` or TOML path; default: the run directory's
            ``config.toml``, or the TOML beside a weights file with the same stem.

    The weights must match the config's architecture and theory; the lattice size and the
    couplings may differ (a flow trained on L = 8 runs on L = 12; the Metropolis step or the
    reweighting keeps sampling exact).
    """
    source = Path(source)
    if source.is_dir():
        weights = source / MODEL if (source / MODEL).is_file() else source / CHECKPOINT
        default_config = source / CONFIG
    else:
        weights, default_config = source, source.with_suffix(".toml")
    if not weights.is_file():
        raise LatticeflowError(f"{source}: no {MODEL} or {CHECKPOINT} to load")
    if config is None:
        if not default_config.is_file():
            raise LatticeflowError(f"{weights}: no config given and no {default_config.name} beside it")
        config = default_config
    cfg = config if isinstance(config, Config) else load_config(config)
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path or 'the model file'}: no [flow] table to build the flow from")
    try:
        state = torch.load(weights, weights_only=True)
        state_dict = state["state_dict"] if "state_dict" in state else state["model"]
    except Exception:
        raise LatticeflowError(f"{weights}: not a readable latticeflow model or checkpoint") from None
    saved_config = parse_config(state["config"]) if "config" in state else None
    if saved_config is not None:
        wrong = [p for p in _mismatch(saved_config, cfg) if p.startswith("flow.") or p.startswith("theory.name")]
        if wrong:
            raise LatticeflowError(f"{weights}: weights of a different architecture: " + "; ".join(wrong))
    flow = build_flow(cfg.theory.build(), cfg.flow).float()
    try:
        flow.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise LatticeflowError(f"{weights}: weights do not fit the architecture of the config "
                               f"({str(exc).splitlines()[0]})") from None
    return flow.eval()
