"""``train()``: a model file to a trained flow in a run directory, in one process or on
every rank of a ``torchrun`` run (:mod:`~latticeflow.training.distributed`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..config import Config, load_config
from ..errors import LatticeflowError
from ..files import RunLock
from .distributed import current, rank_device
from .run_files import INIT, METRICS, PLOT, init_weights, prepare_run_dir, record_init, write_configs
from .trainer import Trainer, TrainResult

__all__ = ["train"]


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
    group = current(rank_device(cfg.train.device))
    try:
        return _train(cfg, out, steps, resume, progress, group)
    finally:
        group.close()


def _train(cfg, out, steps, resume, progress, group):
    group.share(cfg.train.batch_size)  # every rank refuses a batch that does not split, before any collective
    if not group.is_main:  # rank 0 prepares the run directory and holds its lock
        run_dir = group.broadcast_object(None)
        if run_dir is None:
            raise LatticeflowError("rank 0 could not prepare the run directory (see its message)")
        trainer = Trainer(cfg, Path(run_dir), steps, resume, group=group)
        return trainer.run(progress=False)
    with contextlib.ExitStack() as stack:
        # every failure before the hand-over tells the other ranks (None), so they stop too;
        # after it, a rank that fails exits with code 2 and torchrun stops the others
        try:
            run_dir = prepare_run_dir(cfg, out, resume)
            init = None if resume else init_weights(cfg)  # bad weights: refused before any file
            run_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(RunLock(run_dir / ".lock", f"training run {run_dir}"))
            run_dir = prepare_run_dir(cfg, run_dir, resume)  # again, now that no one else is in it
            if not resume:  # a run killed before its first checkpoint left only these behind
                for stale in (METRICS, PLOT, INIT):
                    (run_dir / stale).unlink(missing_ok=True)
            if init is not None:
                record_init(run_dir, init[1])
        except BaseException:
            group.broadcast_object(None)
            raise
        group.broadcast_object(str(run_dir))
        trainer = Trainer(cfg, run_dir, steps, resume, init=init[0] if init else None, group=group)
        write_configs(run_dir, cfg, trainer.step)
        return trainer.run(progress)
