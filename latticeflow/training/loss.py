"""The reverse-KL loss and its gradient estimators, and the learning-rate schedule.

Loss (docs/design.md §2): L = E_{x~q}[log q(x) + S(x)] = KL(q‖p) − log Z ≥ −log Z, so −L is a lower
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

The action is evaluated in the theory's own precision (float64, or complex128 for SU(N)
links: ``field_space.to_action_dtype``), whatever dtype the flow's parameters have.
"""

from __future__ import annotations

import copy
import math

import torch

from ..errors import LatticeflowError

__all__ = ["kl_loss", "learning_rate", "frozen_twin"]


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
        theory: a theory, or anything with ``action(x) -> (batch,)``.
        estimator: ``"reparam"`` or ``"path"`` (module docstring).
        twin: for ``"path"``, a parameter-frozen copy of ``flow`` (made here if None).

    Returns:
        ``(loss, log_q, action)``: the scalar to differentiate (its value is the batch mean
        of log q + S in both cases) and detached float64 ``(batch,)`` tensors.
    """
    if estimator == "reparam":
        x, log_q = flow.sample(batch, generator=generator)
    elif estimator == "path":
        twin = twin if twin is not None else frozen_twin(flow)
        _refresh_twin(twin, flow)
        z = flow.prior.sample(batch, generator=generator).to(flow.device, flow.field_dtype)
        x, _ = flow(z)
        log_q = twin.log_prob(x)  # parameters frozen: gradient flows through x only
    else:
        raise LatticeflowError(f"train.estimator: unknown estimator {estimator!r}")
    space = getattr(theory, "field_space", None)  # a bare action(x) object computes in float64
    if space is None:  # a bare action(x): float64, or complex128 for complex links
        x = x.to(torch.complex128 if x.is_complex() else torch.float64)
    action = theory.action(space.to_action_dtype(x) if space else x).to(torch.float64)
    loss = (log_q.double() + action).mean()
    return loss, log_q.detach().double(), action.detach()


def frozen_twin(flow):
    twin = copy.deepcopy(flow)
    twin.requires_grad_(False)
    return twin


@torch.no_grad()
def _refresh_twin(twin, flow):
    for p_twin, p in zip(twin.parameters(), flow.parameters()):
        p_twin.copy_(p)
