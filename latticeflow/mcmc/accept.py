"""The one Metropolis test of the package (HMC, Metropolis independence, every kernel)."""

from __future__ import annotations

import torch

__all__ = ["metropolis"]


def metropolis(log_ratio: torch.Tensor, log_u: torch.Tensor) -> torch.Tensor:
    """Accept where ``log_u < log_ratio`` (``log_u`` the log of uniform numbers in (0, 1)):
    min(1, ratio), vectorised; a NaN ratio (an overflowing action, a failed solve) is never
    accepted."""
    return log_u < log_ratio
