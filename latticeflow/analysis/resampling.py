"""Binning and the jackknife: errors of any function of means, without linearisation.

Binning averages consecutive measurements in blocks; once the blocks are much longer than
the autocorrelation time they are nearly independent.  The jackknife then recomputes
F(⟨a_1⟩, …, ⟨a_m⟩) with one block left out at a time.  Chains (rows of a 2-D array) are
binned separately, so no block straddles two chains, and their blocks are pooled.
Measurements that do not fill a whole block (the end of each chain) are dropped.

References:
    B. Efron, "The Jackknife, the Bootstrap and Other Resampling Plans", SIAM (1982).
    U. Wolff, arXiv:hep-lat/0306017, §2 (binning versus the Γ-method).

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=1000)
    >>> value, error = jackknife(lambda m: m, [x], n_bins=20)
"""

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["bin_data", "jackknife"]


def bin_data(x, bin_size: int) -> np.ndarray:
    """Block averages along the last (Monte Carlo time) axis.

    Arguments:
        x: measurements, shape (..., n).
        bin_size: measurements per block, 1 ≤ bin_size ≤ n.

    Returns:
        block means, shape (..., n // bin_size); the last n % bin_size are dropped.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if not 1 <= bin_size <= n:
        raise ValueError(f"bin_size must be in [1, {n}], got {bin_size}")
    n_bins = n // bin_size
    blocks = x[..., :n_bins * bin_size].reshape(*x.shape[:-1], n_bins, bin_size)
    return blocks.mean(axis=-1)


def jackknife(f: Callable[..., float], data_list: Sequence, n_bins: int) -> tuple[float, float]:
    """F of the means of several observables and its jackknife error.

    Arguments:
        f: F, called as ``f(mean_1, …, mean_m)`` with floats, returning a float.
        data_list: m observables measured on the same configurations, each of shape
            (n,) or (n_chains, n).
        n_bins: number of blocks per chain (≥ 2 in all).

    Returns:
        (value, error): F of the means of the binned data, and
        √[(K − 1)/K Σ_k (F_k − F̄)²] over the K leave-one-block-out estimates F_k.
    """
    arrays = [np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in data_list]
    if not arrays or any(a.shape != arrays[0].shape or a.ndim != 2 for a in arrays):
        raise ValueError("data_list needs observables of one common shape (n,) or (n_chains, n)")
    if any(not np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("data contains NaN or inf")
    n = arrays[0].shape[-1]
    if not 1 <= n_bins <= n or n_bins * arrays[0].shape[0] < 2:
        raise ValueError(f"n_bins must be in [1, {n}] with at least 2 blocks in all, got {n_bins}")
    # (K, m): block means of every observable, pooled over chains.
    blocks = np.stack([bin_data(a, n // n_bins).reshape(-1) for a in arrays], axis=-1)
    n_blocks = blocks.shape[0]
    means = blocks.mean(axis=0)
    leave_one_out = (n_blocks * means - blocks) / (n_blocks - 1)
    estimates = np.array([f(*row) for row in leave_one_out], dtype=np.float64)
    error = np.sqrt((n_blocks - 1) / n_blocks * np.sum((estimates - estimates.mean()) ** 2))
    return float(f(*means)), float(error)
