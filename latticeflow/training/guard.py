"""The guard rails of one optimiser update, kept apart from the reverse-KL step they guard.

:meth:`UpdateGuard.update` is a context manager around the step's physics: the body
computes the loss of a batch and hands it over (``u.loss = …``); on leaving the block the
guard back-propagates it, averages the gradients over the ranks of a ``torchrun`` run,
skips the update on every rank when the loss or a gradient is not finite, clips the
gradient norm, steps the optimiser and flags weights that the update made non-finite.  So
:meth:`~latticeflow.training.trainer.Trainer.train_step` reads like the paper::

    with self.guard.update(self._count) as u:
        u.loss, log_q, action = kl_loss(flow, theory, batch, generator, estimator, twin)

``updating`` is true from the optimiser step until ``count(u)`` (the caller's step counter
and bad-step bookkeeping) has run: an interrupt in between must not checkpoint a half-made
update.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

__all__ = ["Update", "UpdateGuard", "finite"]


@dataclass
class Update:
    """One update: the loss the body computed (all-reduced mean afterwards), the gradient
    norm before clipping, and whether the update was skipped (non-finite loss or gradient)
    or made the weights non-finite (``diverged``)."""

    loss: torch.Tensor | None = None
    grad_norm: float = math.nan
    skipped: bool = False
    diverged: bool = False


def finite(module) -> bool:
    """Whether every parameter of ``module`` is finite."""
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class UpdateGuard:
    """See the module docstring.

    Arguments:
        flow: the module being trained.
        optimizer: its optimiser.
        group: the ranks (:class:`~latticeflow.training.distributed.Group`).
        grad_clip: gradient-norm clipping (0 disables).
    """

    def __init__(self, flow, optimizer, group, grad_clip: float):
        self.flow, self.optimizer, self.group, self.grad_clip = flow, optimizer, group, float(grad_clip)
        self.updating = False

    @contextlib.contextmanager
    def update(self, count):
        self.optimizer.zero_grad(set_to_none=True)
        u = Update()
        yield u
        if torch.isfinite(u.loss):
            u.loss.backward()
        elif self.group.active:  # every rank must join the all-reduce: a NaN skips the step on all
            for p in self.flow.parameters():
                p.grad = torch.full_like(p, float("nan"))
        self.group.average_gradients(self.flow.parameters())
        u.loss = self.group.all_mean(u.loss.detach())
        if torch.isfinite(u.loss):
            grads = [p.grad.flatten() for p in self.flow.parameters() if p.grad is not None]
            u.grad_norm = float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0
        u.skipped = not (math.isfinite(u.grad_norm) and torch.isfinite(u.loss))
        if not u.skipped:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.grad_clip)
            self.updating = True
            self.optimizer.step()
            u.diverged = not finite(self.flow)  # the update itself diverged: never keep such weights
        count(u)
        self.updating = False
        self.optimizer.zero_grad(set_to_none=True)
