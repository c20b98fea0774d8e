"""The training loop: reverse-KL updates, evaluation, checkpoints and exact resume.

The loss is the ``[train] objective``'s (:mod:`latticeflow.training.objectives`: the reverse KL
by default, or the work of a stochastic normalizing flow); the reverse KL and its estimators
are in :mod:`latticeflow.training.loss`, the files of a run
directory in :mod:`latticeflow.training.run_files`.  ``[train] path_after = N`` gives a
two-phase schedule: ``estimator`` (normally ``"reparam"``, the cheaper step) for the first N
updates, ``"path"`` from update N on, where its lower variance near convergence pays for its
cost (:meth:`Trainer.estimator_at`).

A non-finite loss or gradient skips the update; ``MAX_BAD_STEPS`` in a row roll the model
back to the last checkpoint (kept in memory).  Training runs in float32; weights, ESS and
acceptance are computed in float64 from the float32 samples.  A resume continues bit for
bit where the checkpoint left off (generator states, optimizer, schedule).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..analysis.gamma import ess as batch_ess
from ..analysis.plots import load_matplotlib, plot_training
from ..config import Config, parse_config
from ..devices import to_numpy
from ..errors import ConfigError, LatticeflowError
from ..files import atomic_save, atomic_write_text, write_failed
from ..interrupts import check_stop
from ..flows import build_flow
from ..mcmc.independence import independence_acceptance
from .distributed import Group, rank_device, rank_seed
from .guard import UpdateGuard, finite
from .loss import frozen_twin, learning_rate
from .objectives import objective
from .run_files import (CHECKPOINT, INTERRUPTED, METRICS, MODEL, PLOT, inherited_seconds, last_metrics, mismatch, model_file, read_metrics,
                        truncate_metrics)
from .schedule import CouplingSchedule

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "MAX_BAD_STEPS", "MAX_ROLLBACKS",
           "ROLLBACK_WINDOW"]

#: consecutive non-finite steps after which the model is rolled back to the last checkpoint
MAX_BAD_STEPS = 5
#: rollbacks, each within ROLLBACK_WINDOW steps of the previous one, after which training
#: stops as diverged
MAX_ROLLBACKS = 3
ROLLBACK_WINDOW = 100


class TrainingDiverged(LatticeflowError):
    """Training cannot recover: repeated rollbacks to the last good weights did not help."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the last logged metrics, the flow."""

    run_dir: Path
    metrics: dict
    flow: torch.nn.Module
    step: int
    stopped: str  # "steps" (plan finished) or "time" (the minutes budget ran out)


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
        group: the ranks of a ``torchrun`` run (:mod:`~latticeflow.training.distributed`);
            default one process.  Each rank draws ``batch_size / world_size`` samples.

    The flow trains on ``[train] device`` (the group's device under ``torchrun``); the
    generators stay on the CPU, and the checkpoint loads on any device.
    """

    def __init__(self, cfg: Config, run_dir: Path, steps: int | None = None, resume: bool = False,
                 init: dict | None = None, group: Group | None = None):
        if cfg.flow is None:
            where = cfg.path or "the model file"
            raise LatticeflowError(f"{where}: no [flow] table, so there is no flow to train")
        self.cfg, self.tc, self.run_dir = cfg, cfg.train, Path(run_dir)
        self.group = group or Group(device=rank_device(cfg.train.device))
        self.group.resume_hint = (f"the last checkpoint in {self.run_dir} is kept: resume with the same "
                                  f"torchrun command and --out {self.run_dir} --resume")
        self.device = self.group.device
        self.rank_batch = self.group.share(self.tc.batch_size)
        self.theory = cfg.theory.build()
        self.schedule = CouplingSchedule(cfg, self.theory)
        with torch.random.fork_rng():  # initial weights from the config's seed, user RNG untouched
            torch.manual_seed(self.tc.seed)
            self.flow = build_flow(self.theory, cfg.flow).float().to(self.device)
        if init is not None:
            self.flow.load_state_dict(init)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.tc.lr)
        self.generator = torch.Generator().manual_seed(rank_seed(self.tc.seed, self.group.rank))
        uses_path = self.tc.estimator == "path" or self.tc.path_after is not None
        self.twin = frozen_twin(self.flow) if uses_path else None
        self.step, self.elapsed, self.bad_steps, self.rollbacks, self.consecutive_bad = 0, 0.0, 0, 0, 0
        self.recent_rollbacks, self.last_rollback = 0, -ROLLBACK_WINDOW - 1
        self.total = steps or self.tc.steps
        self.objective = objective(self)  # [train] objective: the loss (training/objectives.py)
        if resume:
            self._load_checkpoint(steps)
        else:
            self.objective.start()
        self.group.broadcast_parameters(self.flow)  # every rank starts from rank 0's weights
        self.snapshot = self._snapshot()
        self.last: dict = {}
        self.guard = UpdateGuard(self.flow, self.optimizer, self.group, self.tc.grad_clip)

    # --- state ------------------------------------------------------------------------------
    def _snapshot(self):
        return (self.step, copy.deepcopy(self.flow.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

    def _rollback(self):
        step, model, optimizer = self.snapshot
        self.flow.load_state_dict(model)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer))
        self.rollbacks += 1
        return step

    def save_checkpoint(self, generator_state=None, gather: bool = True) -> None:
        """Rank 0 writes the checkpoint; with ``gather`` (every rank calls it) it holds every
        rank's generator state, otherwise (an interrupt, seen by one rank) rank 0's only."""
        if not finite(self.flow):  # never written: roll back to the last good weights instead
            self._rollback()
            return
        own = generator_state if generator_state is not None else self.generator.get_state()
        streams = self.group.gather(own) if gather else [own]
        objective_states = {k: self.group.gather(v) if gather else [v] for k, v in self.objective.state_dict().items()}
        if not self.group.is_main:
            self.snapshot = self._snapshot()
            return
        state = {
            "format": "latticeflow-checkpoint", "version": 1, "latticeflow_version": __version__,
            "step": self.step, "total_steps": self.total, "elapsed": self.elapsed,
            "bad_steps": self.bad_steps, "rollbacks": self.rollbacks,
            "recent_rollbacks": self.recent_rollbacks, "last_rollback": self.last_rollback,
            "model": self.flow.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": {"schedule": self.tc.schedule, "warmup": self.tc.warmup, "lr": self.tc.lr,
                          "total_steps": self.total},
            "generator": streams[0], "generators": streams, "world_size": self.group.world_size,
            "torch_rng": torch.get_rng_state(), "config": self.cfg.toml, "objective": objective_states,
        }
        atomic_save(state, self.run_dir / CHECKPOINT)
        self.snapshot = self._snapshot()

    def _load_checkpoint(self, steps):
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise LatticeflowError(f"{self.run_dir}: no {CHECKPOINT} to resume from")
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")  # any device wrote it
        except Exception:
            state = None
        if not isinstance(state, dict) or state.get("format") != "latticeflow-checkpoint":
            raise LatticeflowError(f"{path}: not a readable latticeflow checkpoint")
        try:
            old = parse_config(state["config"], legacy=True)
        except ConfigError as exc:
            raise LatticeflowError(f"{path}: its config no longer validates ({exc})") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise LatticeflowError(f"{path}: not a readable latticeflow checkpoint ({exc!r})") from None
        problems = mismatch(old, self.cfg)
        if problems:
            raise LatticeflowError(f"{path}: cannot resume with a different theory or architecture: "
                                   + "; ".join(problems))
        try:
            self.flow.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self._restore_generator(state)
            rank = self.group.rank  # each rank's own objective state (e.g. its chain of starts)
            self.objective.load_state_dict({k: v[rank] for k, v in state.get("objective", {}).items() if rank < len(v)})
            torch.set_rng_state(state["torch_rng"])
            self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
            self.bad_steps, self.rollbacks = int(state["bad_steps"]), int(state["rollbacks"])
            self.recent_rollbacks = int(state.get("recent_rollbacks", 0))
            self.last_rollback = int(state.get("last_rollback", -ROLLBACK_WINDOW - 1))
            self.total = steps or int(state["total_steps"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise LatticeflowError(f"{path}: not a readable latticeflow checkpoint "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if self.step < 0 or self.total < 1 or not finite(self.flow):
            raise LatticeflowError(f"{path}: a damaged checkpoint (step {self.step}, or non-finite "
                                   "weights); it cannot be resumed")
        truncate_metrics(self.run_dir / METRICS, self.step)

    def _restore_generator(self, state: dict) -> None:
        """Rank r continues saved stream r where the checkpoint has one (always with the same
        number of ranks), and otherwise reseeds from (seed, step, rank)."""
        rank = self.group.rank
        streams = state.get("generators") or [state["generator"]]
        if rank < len(streams):
            self.generator.set_state(streams[rank])
        else:
            self.generator.manual_seed(rank_seed(self.tc.seed, rank, int(state["step"])))

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
        target = self.schedule.theory_at(self.step)
        with self.guard.update(self._count) as u:  # the objective's loss (training/objectives.py); the guard: training/guard.py
            u.loss, log_w = self.objective.loss(target, self.estimator_at(self.step))
        log_w = to_numpy(torch.cat(self.group.gather(log_w)))  # the whole batch
        record = {"step": self.step, "loss": _num(u.loss), "log_z_bound": _num(-u.loss),
                  "ess": batch_ess(log_w) if np.all(np.isfinite(log_w)) else None, "lr": lr,
                  "grad_norm": _num(u.grad_norm), "skipped": u.skipped}
        if self.schedule.start is not None:
            record[f"train_{self.schedule.name}"] = self.schedule.value_at(self.step - 1)
        if self.consecutive_bad >= MAX_BAD_STEPS:
            record["rolled_back_to"] = self._rollback()
            self.consecutive_bad = 0
            near = self.step - self.last_rollback <= ROLLBACK_WINDOW
            self.recent_rollbacks = self.recent_rollbacks + 1 if near else 1
            self.last_rollback = self.step
        return record

    def _count(self, u) -> None:
        """After an update (or a skipped one): the step counter and the bad-step bookkeeping."""
        if u.skipped or u.diverged:
            self.bad_steps += 1
        self.consecutive_bad = (self.consecutive_bad + 1 if u.skipped else MAX_BAD_STEPS if u.diverged else 0)
        self.step += 1

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Acceptance and ESS of ``eval_batch`` fresh samples (seeded by seed and step)."""
        gen = torch.Generator().manual_seed((self.tc.seed * 1_000_003 + self.step) % 2**63)
        log_w = to_numpy(self.objective.eval_log_weights(self.tc.eval_batch, gen))
        if not np.all(np.isfinite(log_w)) or log_w.size < 2:
            return {"acceptance": None, "eval_ess": None}
        acceptance = getattr(self.objective, "acceptance", None)  # the sampler's own, where it differs
        return {"acceptance": (acceptance(log_w) if acceptance is not None
                               else independence_acceptance(log_w, rng=[self.tc.seed, self.step])),
                "eval_ess": batch_ess(log_w)}

    # --- the loop -------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> TrainResult:
        from tqdm.auto import tqdm

        load_matplotlib()  # before any signal can land: the training figure is drawn on every exit
        start, stopped = time.perf_counter(), "steps"
        elapsed0, tc = self.elapsed, self.tc
        bar = tqdm(total=self.total, initial=self.step, disable=not progress, desc=self.cfg.name,
                   dynamic_ncols=True, leave=True)
        generator_state, step_before = self.generator.get_state(), self.step
        try:
            while self.step < self.total:
                check_stop()  # an interrupt that Python swallowed (interrupts.py)
                generator_state, step_before = self.generator.get_state(), self.step
                record = self.train_step()
                self.elapsed = elapsed0 + time.perf_counter() - start
                last = self.step >= self.total
                over_time = self.group.any(tc.minutes is not None
                                           and time.perf_counter() - start > 60 * tc.minutes)
                if (self.step % tc.eval_every == 0 or last or over_time) and self.group.is_main:
                    record |= self.evaluate()
                if "rolled_back_to" in record:  # the same on every rank (all-reduced decisions)
                    if self.group.is_main:
                        bar.write(f"latticeflow: {MAX_BAD_STEPS} non-finite steps in a row at step "
                                  f"{self.step}: rolled back to the weights of step {record['rolled_back_to']}")
                    if self.recent_rollbacks >= MAX_ROLLBACKS:
                        if self.group.is_main:
                            self._log(record)
                        raise self._diverged()
                if self.group.is_main and (self.step % tc.log_every == 0 or self.step == 1 or last
                                           or over_time or record["skipped"] or "acceptance" in record):
                    self._log(record)
                    bar.set_postfix(_postfix(self.last), refresh=False)
                bar.update(1)
                if self.step % tc.checkpoint_every == 0:
                    self.save_checkpoint()
                    if self.group.is_main:
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
        if self.group.is_main:
            (self.run_dir / INTERRUPTED).unlink(missing_ok=True)
        return TrainResult(self.run_dir, self.last or last_metrics(self.run_dir / METRICS),
                           self.flow, self.step, stopped)

    def _diverged(self) -> TrainingDiverged:
        kept = (f"the last good checkpoint (step {self.snapshot[0]}) is kept in {self.run_dir}"
                if (self.run_dir / CHECKPOINT).is_file() else "no checkpoint had been written yet")
        return TrainingDiverged(f"training diverged at step {self.step}: {MAX_ROLLBACKS} rollbacks within "
                                f"{ROLLBACK_WINDOW} steps did not help (lower [train] lr, now "
                                f"{self.tc.lr:g}, or grad_clip); {kept}")

    def _interrupted(self, generator_state, step_before, bar) -> None:
        """Ctrl-C: checkpoint the last whole step, so that a resume continues exactly."""
        if self.guard.updating:  # inside an update: an interrupt there must not be saved
            bar.write("latticeflow: interrupted inside an update; the last checkpoint stays valid")
            return
        if self.step == step_before:  # the step was cut short before its update: undo its sampling
            self.generator.set_state(generator_state)
        self.save_checkpoint(gather=False)
        self._finish()
        if self.group.is_main:  # model.pt is a snapshot, not the trained flow (study.trained_flow)
            atomic_write_text(self.run_dir / INTERRUPTED, json.dumps({"step": self.step}) + "\n")

    def _log(self, record: dict) -> None:  # appended line by line: a kill loses at most the last
        full = {"step": record["step"], "loss": record["loss"], "log_z_bound": record["log_z_bound"],
                "ess": record["ess"], "acceptance": record.get("acceptance"), "lr": record["lr"],
                "seconds": round(self.elapsed, 3), "grad_norm": record["grad_norm"],
                "skipped": record["skipped"], "bad_steps": self.bad_steps, "rollbacks": self.rollbacks}
        full |= {k: v for k, v in record.items() if k not in full}
        try:
            with open(self.run_dir / METRICS, "a") as fh:
                fh.write(json.dumps(full) + "\n")
        except OSError as exc:  # a full disk: the checkpoint on disk stays the last good state
            raise write_failed(self.run_dir / METRICS, exc) from None
        self.last = full

    def _finish(self) -> None:
        if not finite(self.flow):
            self._rollback()
        if not self.group.is_main:
            return
        base = inherited_seconds(self.run_dir)  # the training of the weights it started from
        atomic_save(model_file(self.flow, self.cfg, None if base is None else base + self.elapsed), self.run_dir / MODEL)
        self.plot()

    def plot(self) -> None:
        plot_training(read_metrics(self.run_dir / METRICS), self.run_dir / PLOT)


def _num(v) -> float | None:
    v = float(v.detach()) if torch.is_tensor(v) else float(v)
    return v if math.isfinite(v) else None


def _postfix(m: dict) -> dict:
    out = {"loss": m.get("loss"), "ess": m.get("ess"), "acc": m.get("acceptance")}
    return {k: f"{v:.4g}" for k, v in out.items() if v is not None}
