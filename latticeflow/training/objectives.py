"""What a training run minimises (``[train] objective``): the registry of objectives the
trainer asks for its loss, its evaluation weights and the state a checkpoint must keep.

- ``kl``: the reverse KL of the flow's own samples (:func:`~latticeflow.training.loss.kl_loss`,
  docs/design.md §2), log w = −S − log q.
- ``work``: the mean work ⟨W⟩ of the transports of a stochastic normalizing flow, log w = −W
  (:class:`~latticeflow.training.work.WorkObjective`).
- ``jump-work``: the mean forward work of the flow-assisted instanton jumps of the
  ``flow-jump`` sampler, log w = −W (:class:`~latticeflow.training.jump_work.JumpWorkObjective`).

An objective is made from the :class:`~latticeflow.training.trainer.Trainer` (its config,
theory, flow, device, batch and generator) and has

- ``loss(target, estimator) -> (loss, log_w)``: the scalar the update differentiates and the
  batch's log weights (float64, detached);
- ``eval_log_weights(n, generator)``: log weights of n fresh samples, without gradients;
- ``start()``: what a fresh run prepares (e.g. a thermalised chain), drawing from the
  trainer's generator; ``state_dict()`` / ``load_state_dict()``: tensors a checkpoint keeps
  (one set per rank);
- optionally ``acceptance(log_w)``: its sampler's acceptance for these log weights; without
  it, that of an independence Metropolis chain over them (flows, NE-MCMC, SNF).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..mcmc.independence import log_weight
from .loss import kl_loss

__all__ = ["KLObjective", "OBJECTIVES", "objective", "check_work_objective"]


class KLObjective:
    """Reverse KL (``[train] estimator``: reparameterised or path gradients)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def loss(self, target, estimator: str):
        t = self.trainer
        loss, log_q, action = kl_loss(t.flow, target, t.rank_batch, t.generator, estimator, t.twin)
        return loss, log_weight(action, log_q)

    @torch.no_grad()
    def eval_log_weights(self, n: int, generator) -> torch.Tensor:
        t, out = self.trainer, []
        for start in range(0, n, t.tc.batch_size):
            x, log_q = t.flow.sample(min(t.tc.batch_size, n - start), generator=generator)
            out.append(log_weight(t.theory.action(t.theory.field_space.to_action_dtype(x)), log_q))
        return torch.cat(out)

    def start(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def check_work_objective(trainer, objective: str, sampler: str) -> None:
    """The one-line refusals of an objective that trains the maps of ``sampler`` on its work:
    another sampler in ``[sample]``, path gradients, an annealed start."""
    tc, s = trainer.tc, trainer.cfg.sample
    if s.sampler != sampler:
        raise ConfigError(f"train.objective: \"{objective}\" trains the maps of the {sampler} sampler; [sample] "
                          f"sampler is {s.sampler!r} (set sampler = \"{sampler}\" and its keys)")
    if tc.estimator != "reparam" or tc.path_after is not None:
        raise ConfigError(f"train.estimator: the {objective} objective has its own gradient (through the maps "
                          "along the path); path gradients are for objective = \"kl\"")
    if tc.anneal_from is not None:
        raise ConfigError(f"train.anneal_from: the {objective} objective trains at the model's couplings")


def _work(trainer):
    from .work import WorkObjective

    return WorkObjective(trainer)


def _jump_work(trainer):
    from .jump_work import JumpWorkObjective

    return JumpWorkObjective(trainer)


#: ``[train] objective`` → a factory ``(trainer) -> objective``
OBJECTIVES = {"kl": KLObjective, "work": _work, "jump-work": _jump_work}


def objective(trainer):
    """The objective of ``trainer.cfg.train.objective``."""
    return OBJECTIVES[trainer.tc.objective](trainer)
