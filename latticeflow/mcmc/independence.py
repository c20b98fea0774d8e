"""Metropolis independence sampling with a flow proposal (DESIGN §2).

A proposal x′ ~ q replaces the current x with probability min(1, w(x′)/w(x)), where
log w = −S − log q.  The chain is exact for any q that covers the target, trained or not
(arXiv:1904.12072, Sec. III).  This module holds the accept/reject rule; the full sampler
(chains, ensembles, resume) builds on it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["independence_acceptance"]


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
    current, accepted = logw[0], 0
    for proposal, lu in zip(logw[1:], log_u):
        if proposal == -np.inf:
            continue
        if current == -np.inf or lu < proposal - current:
            current = proposal
            accepted += 1
    return accepted / (logw.size - 1)
