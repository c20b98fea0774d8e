"""Metropolis independence sampling with a flow proposal (docs/design.md §2).

A proposal x′ ~ q replaces the current x with probability min(1, w(x′)/w(x)), where
log w = −S − log q.  The chain is exact for any q that covers the target, trained or not
(arXiv:1904.12072, Sec. III).  This module holds the accept/reject rule,
:func:`independence_chain` (vectorised over chains); the samplers of
:mod:`latticeflow.mcmc.flow_samplers` and the acceptance reported during training use it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LatticeflowError
from .accept import metropolis

__all__ = ["log_weight", "chain_log_weight", "require_some_weight", "independence_chain", "independence_acceptance"]


def log_weight(action: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The importance weight of a flow sample, log w = −S(x) − log q(x), in float64.

    The central equation of flow sampling (docs/design.md §2): the Metropolis independence step
    accepts with min(1, w′/w), reweighting uses w, ESS = (Σw)²/(N Σw²).  Both inputs are
    ``(batch,)`` and are promoted to float64 before the difference, so a float32 flow
    never rounds the weights.
    """
    return -action.to(torch.float64) - log_q.to(torch.float64)


def chain_log_weight(action: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """:func:`log_weight` for accept/reject: a NaN weight (a NaN action or density) becomes
    −inf, so it is never accepted and a chain resting on it accepts the next proposal."""
    return torch.nan_to_num(log_weight(action, log_q), nan=-math.inf)


def require_some_weight(log_w: torch.Tensor) -> None:
    """Refuse a block of proposals none of which has a finite weight (nothing is written)."""
    if not torch.isfinite(log_w).any():
        raise LatticeflowError(f"flow sampling: all {log_w.numel()} proposals of the block had a "
                               "non-finite weight (a diverged flow, or an action that overflows); "
                               "nothing of this block was written")


def independence_chain(log_w_proposals: torch.Tensor, log_w_start: torch.Tensor,
                       log_u: torch.Tensor):
    """Accept/reject scan of Metropolis independence chains.

    Arguments:
        log_w_proposals: ``(T, C)`` log weights of the proposals, float64.
        log_w_start: ``(C,)`` log weight of each chain's current configuration.
        log_u: ``(T, C)`` log of uniform random numbers.

    Returns:
        ``(accepted (T, C) bool, source (T, C) long, log_w (T, C))``: ``source[t, c]`` is the
        index t′ ≤ t of the proposal chain c holds after step t (−1: its start state).
    """
    steps, chains = log_w_proposals.shape
    accepted = torch.zeros(steps, chains, dtype=torch.bool)
    source = torch.empty(steps, chains, dtype=torch.long)
    log_w = torch.empty(steps, chains, dtype=torch.float64)
    current = log_w_start.clone()
    holder = torch.full((chains,), -1, dtype=torch.long)
    for t in range(steps):
        acc = metropolis(log_w_proposals[t] - current, log_u[t])
        current = torch.where(acc, log_w_proposals[t], current)
        holder = torch.where(acc, torch.full_like(holder, t), holder)
        accepted[t], source[t], log_w[t] = acc, holder, current
    return accepted, source, log_w


def independence_acceptance(log_w, rng: np.random.Generator | int | None = None) -> float:
    """Acceptance rate of one Metropolis independence chain run through a batch of proposals.

    The chain starts at the first sample and proposes the others in order; each is accepted
    with probability min(1, exp(log w′ − log w_current)), computed in float64.  NaN weights
    count as w = 0: never accepted (a chain sitting on w = 0 accepts the next w > 0).

    Arguments:
        log_w: log weights −S(x) − log q(x) of i.i.d. flow samples, shape (n,), n ≥ 2
            (numpy array, list or torch tensor).
        rng: numpy Generator or seed for the uniform numbers (default: fresh entropy).

    Returns:
        accepted / (n − 1), in [0, 1].

    Example:
        >>> independence_acceptance([0.0, 0.0, 0.0, 0.0], rng=0)   # perfect flow: all accepted
        1.0
    """
    if hasattr(log_w, "detach"):
        log_w = log_w.detach().cpu().double().numpy()
    logw = np.asarray(log_w, dtype=np.float64).ravel()
    if logw.size < 2:
        raise ValueError(f"need at least 2 samples for an acceptance rate, got {logw.size}")
    logw = np.where(np.isnan(logw), -np.inf, logw)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    log_u = np.log(rng.random(logw.size - 1))
    accepted, _, _ = independence_chain(torch.from_numpy(logw[1:, None]),
                                        torch.from_numpy(logw[:1]),
                                        torch.from_numpy(log_u[:, None]))
    return int(accepted.sum()) / (logw.size - 1)
