"""Autocorrelation of Metropolis independence chains from their accept/reject history.

In an independence sampler a configuration is repeated exactly while proposals are
rejected, so the probability of t consecutive rejections estimates the autocorrelation
of any observable (arXiv:1904.12072, Eqs. 15–16):

    ρ_acc(t) = 1/(N − t) Σ_i Π_{s=1}^{t} [proposal i + s rejected],
    τ_int^acc = ½ + Σ_{t≥1} ρ_acc(t).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rejection_autocorrelation", "tau_int_from_acceptance"]


def rejection_autocorrelation(accepted, t_max: int = 200) -> np.ndarray:
    """ρ_acc(t) for t = 0..t_max from accept flags ``(n,)`` or ``(n_chains, n)``."""
    acc = np.atleast_2d(np.asarray(accepted, dtype=bool))
    n = acc.shape[1]
    t_max = min(t_max, n - 1)
    rho = np.ones(t_max + 1)
    run = np.ones((acc.shape[0], n), dtype=bool)  # run[i]: proposals i+1..i+t all rejected
    for t in range(1, t_max + 1):
        run = run[:, :-1] & ~acc[:, t:]
        rho[t] = run.mean() if run.size else 0.0
        if rho[t] == 0.0:
            rho[t + 1:] = 0.0
            break
    return rho


def tau_int_from_acceptance(accepted, t_max: int = 200) -> float:
    """τ_int^acc = ½ + Σ_{t≥1} ρ_acc(t)."""
    return float(0.5 + rejection_autocorrelation(accepted, t_max)[1:].sum())
