"""Wolff's Γ-method: errors of Monte Carlo means with autocorrelation.

Conventions (shared with the whole project, see docs/design.md §2):

- Chains are *replicas* (Wolff §3.3): the mean is over all data, every fluctuation is
  taken from that common mean, and Γ(t) = Σ_r Σ_i δ_i^r δ_{i+t}^r / Σ_r (N_r − t).
- τ_int(W) = ½ + Σ_{t=1}^{W} ρ(t), so an uncorrelated chain has τ_int = ½ and
  N_eff = N / (2 τ_int).
- The window W is the first W ≥ 1 with g(W) = exp(−W/τ) − τ/√(W N) < 0, where
  τ = S / ln[(2τ_int(W) + 1) / (2τ_int(W) − 1)] (Wolff eq. 51–52), S = 1.5 by default.
- Bias correction (Wolff eq. 49): Γ(t) → Γ(t) (1 + (2W + 1)/N).  It rescales every Γ(t)
  alike, so ρ(t) and τ_int are unchanged and the correction shows up in the error
  σ = √(2 τ_int Γ(0) / N) of the mean.  (pyerrors instead folds the factor
  (1 + (2W + 1)/N) / (1 + 1/N) into its τ_int; the errors of the mean agree.)
- δτ_int = 2 τ_int √((W + ½ − τ_int) / N) (Wolff eq. 42, the Madras–Sokal formula);
  δρ(t) from Wolff eq. E.11 summed up to k = t + W.
- Derived quantities F(ā_1, …, ā_m) are linearised (Wolff §3.2): the fluctuations of the
  primaries are projected on ∂F/∂ā_α and analysed like one primary.

References:
    U. Wolff, "Monte Carlo errors with less errors", Comput. Phys. Commun. 156 (2004) 143,
    arXiv:hep-lat/0306017.
    N. Madras and A. D. Sokal, J. Stat. Phys. 50 (1988) 109.

Example:
    >>> import numpy as np
    >>> result = gamma_method(np.random.default_rng(0).normal(size=1000))
    >>> round(result.tau_int, 1)
    0.5
"""

from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass
import warnings

import numpy as np
from scipy import fft as sfft

from .format import format_value_error

__all__ = ["GammaResult", "gamma_method", "gamma_method_derived", "reweighted_mean", "ess",
           "ShortChainWarning"]

MIN_SAMPLES = 10  # fewer than this and no error estimate means anything
MAX_LAG = 1000  # longest ρ(t) kept in a result (ρ beyond 2W is noise anyway)
MIN_TAUS = 20  # a replica shorter than this many τ_int: τ_int and the error are unreliable


class ShortChainWarning(RuntimeWarning):
    """The chains are too short for their autocorrelation time: τ_int and the error are
    then likely underestimated (:attr:`GammaResult.too_short`)."""


@dataclass(frozen=True, eq=False)  # eq=False: fields hold arrays, compare by identity
class GammaResult:
    """A Monte Carlo estimate with its Γ-method error analysis.

    Attributes:
        mean: the estimate (the mean, or F of the means for derived quantities).
        error: its standard error, bias-corrected (Wolff eq. 49).
        tau_int: integrated autocorrelation time at the window, ½ + Σ_{t=1}^{W} ρ(t).
        tau_int_error: its statistical error (Wolff eq. 42).
        window: the automatic summation window W (0 for constant data).
        n: total number of measurements over all replicas.
        n_eff: effective number of independent measurements, n / (2 tau_int)
            (:func:`reweighted_mean`: Var_p(O) / error², the loss to the weights included).
        rho: normalised autocorrelation ρ(t), shape (t_max + 1,), ρ(0) = 1,
            t_max = min(2W, longest replica // 2 − 1, 1000).
        rho_error: error of ρ(t) (Wolff eq. E.11), shape (t_max + 1,).
        tau_int_of_w: τ_int(W') for W' = 0 … t_max, shape (t_max + 1,).
        too_short: the longest replica is shorter than ``MIN_TAUS`` = 20 τ_int, or no
            window was found before half of it, or its 2–3 measurements allow no lag at
            all: τ_int and the error are then likely underestimated.  (The last two cases
            also issue a :class:`ShortChainWarning`.)  Replicas of one measurement each
            are independent and never too short.
    """

    mean: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int
    n: int
    n_eff: float
    rho: np.ndarray
    rho_error: np.ndarray
    tau_int_of_w: np.ndarray
    too_short: bool = False

    def __post_init__(self):
        for name in ("rho", "rho_error", "tau_int_of_w"):
            array = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    def as_dict(self) -> dict[str, float]:
        """The numbers of the ``analyze --json`` output: mean, error, tau_int, tau_int_error."""
        return {"mean": self.mean, "error": self.error, "tau_int": self.tau_int,
                "tau_int_error": self.tau_int_error, "too_short": self.too_short}

    def __str__(self) -> str:
        value = format_value_error(self.mean, self.error)
        tau = format_value_error(self.tau_int, self.tau_int_error, digits=1)
        return f"{value}  tau_int={tau}"


def gamma_method(data, S: float = 1.5) -> GammaResult:
    """Mean of one observable with its Γ-method error.

    Arguments:
        data: measurements, shape (n,) for one chain or (n_chains, n) for replicas;
            a list of 1-D arrays of different lengths is also accepted.
        S: Wolff's S parameter of the automatic window (τ_exp/τ_int guess), > 0.
    """
    replicas = _as_replicas(data)
    mean = _mean(replicas)
    deltas = [x - mean for x in replicas]
    return _analyse(deltas, mean, S)


def gamma_method_derived(f: Callable[..., float], data_list: Sequence, S: float = 1.5,
                         grad: Sequence[float] | None = None) -> GammaResult:
    """F(⟨a_1⟩, …, ⟨a_m⟩) of several primary observables, with its Γ-method error.

    Arguments:
        f: F, called as ``f(mean_1, …, mean_m)`` with floats, returning a float.
        data_list: m primaries, each shaped like ``data`` of :func:`gamma_method`
            (all with the same chains and lengths: measured on the same configurations).
        S: Wolff's S parameter.
        grad: ∂F/∂ā_α, shape (m,); by default central finite differences.

    Example (susceptibility of a magnetisation ``M`` on a volume of 16 sites):
        >>> M = np.random.default_rng(1).normal(scale=4.0, size=(2, 1000))
        >>> chi = gamma_method_derived(lambda m, m2: (m2 - m**2) / 16, [M, M**2])
    """
    primaries = [_as_replicas(data) for data in data_list]
    if not primaries:
        raise ValueError("data_list is empty")
    lengths = [len(x) for x in primaries[0]]
    if any([len(x) for x in replicas] != lengths for replicas in primaries):
        raise ValueError("all primaries must have the same chains and chain lengths")
    means = np.array([_mean(replicas) for replicas in primaries])
    value = float(f(*means))
    if grad is None:
        spreads = [np.std(np.concatenate(replicas)) for replicas in primaries]
        grad = _numerical_gradient(f, means, np.array(spreads))
    grad = np.asarray(grad, dtype=np.float64)
    if grad.shape != means.shape:
        raise ValueError(f"grad must have shape {means.shape}, got {grad.shape}")
    # Wolff eq. (31): project the fluctuations of the primaries on the gradient of F.
    deltas = [sum(g * (x - m) for g, x, m in zip(grad, chain, means))
              for chain in zip(*primaries)]
    return _analyse(deltas, value, S)


def reweighted_mean(obs, log_weight, S: float = 1.5) -> GammaResult:
    """Reweighted ⟨O⟩ = Σ w O / Σ w with w = exp(log_weight), and its Γ-method error.

    The error treats ⟨wO⟩/⟨w⟩ as a derived quantity, so autocorrelation of Markov chains
    is accounted for; i.i.d. samples simply give τ_int ≈ ½.  ``n_eff`` is Var_p(O)/error²
    (the number of independent samples of p giving the same error), so it includes the
    loss to uneven weights, not N/(2τ_int).  The weights are shifted by
    max(log_weight) before exponentiating, so any overall scale (even ~1e3) is harmless.

    Arguments:
        obs: measurements O, shaped like ``data`` of :func:`gamma_method`.
        log_weight: log w on the same samples, same shape (e.g. −S(x) − log q(x)).
        S: Wolff's S parameter.
    """
    obs_replicas = _as_replicas(obs)
    logw_replicas = _as_replicas(log_weight)
    if [len(x) for x in obs_replicas] != [len(x) for x in logw_replicas]:
        raise ValueError("obs and log_weight must have the same shape")
    shift = max(x.max() for x in logw_replicas)
    weights = [np.exp(x - shift) for x in logw_replicas]
    weighted = [w * o for w, o in zip(weights, obs_replicas)]
    mean_w, mean_wo = _mean(weights), _mean(weighted)
    result = gamma_method_derived(lambda wo, w: wo / w, [weighted, weights], S=S,
                                  grad=[1.0 / mean_w, -mean_wo / mean_w**2])
    if result.error > 0:  # N_eff = Var_p(O) / error²: the samples of p the estimate is worth
        w, o = np.concatenate(weights), np.concatenate(obs_replicas)
        variance = float(np.sum(w * (o - result.mean) ** 2) / np.sum(w))
        result = dataclasses.replace(result, n_eff=variance / result.error**2)
    return result


def ess(log_weight) -> float:
    """Normalised effective sample size (Σw)² / (N Σw²) ∈ (0, 1], from log weights.

    Arguments:
        log_weight: log w, any shape (all entries are pooled); −inf (w = 0) is allowed.
    """
    logw = np.asarray(log_weight, dtype=np.float64).ravel()
    if logw.size == 0 or np.any(np.isnan(logw) | (logw == np.inf)) or np.all(logw == -np.inf):
        raise ValueError("log_weight must be non-empty, not NaN or +inf, with some w > 0")
    w = np.exp(logw - logw.max())  # the largest weight is 1: no overflow, Σw ≥ 1
    return float(np.sum(w) ** 2 / (logw.size * np.sum(w**2)))


# --- internals -------------------------------------------------------------------------

def _as_replicas(data) -> list[np.ndarray]:
    """Data as a list of 1-D float64 replicas, validated."""
    if isinstance(data, (list, tuple)) and data and all(np.ndim(x) == 1 for x in data):
        replicas = [np.asarray(x, dtype=np.float64) for x in data]
    else:
        array = np.asarray(data, dtype=np.float64)
        if array.ndim not in (1, 2):
            raise ValueError(f"data must be 1-D (n,) or 2-D (n_chains, n), got shape {array.shape}")
        replicas = list(np.atleast_2d(array))
    if any(x.size == 0 for x in replicas):
        raise ValueError("every chain needs at least one measurement")
    n = sum(x.size for x in replicas)
    if n < MIN_SAMPLES:
        raise ValueError(f"too few measurements for an error estimate: {n} < {MIN_SAMPLES}")
    if not all(np.all(np.isfinite(x)) for x in replicas):
        raise ValueError("data contains NaN or inf")
    return replicas


def _mean(replicas: list[np.ndarray]) -> float:
    first = replicas[0][0]
    if all(np.all(x == first) for x in replicas):
        return float(first)  # exact for constant data: no rounding noise in Γ(0)
    return float(sum(x.sum() for x in replicas) / sum(x.size for x in replicas))


def _gamma_sums(deltas: list[np.ndarray], n_lags: int) -> np.ndarray:
    """Σ_r Σ_i δ_i^r δ_{i+t}^r for t = 0 … n_lags − 1, by FFT of all replicas at once."""
    longest = max(x.size for x in deltas)
    padded = np.zeros((len(deltas), longest))
    for row, x in zip(padded, deltas):
        row[:x.size] = x  # trailing zeros add nothing to any lagged product
    size = sfft.next_fast_len(2 * longest, real=True)  # ≥ 2n: no circular wrap-around
    spectrum = sfft.rfft(padded, n=size, axis=-1)
    return sfft.irfft(np.abs(spectrum) ** 2, n=size, axis=-1)[:, :n_lags].sum(axis=0)


def _analyse(deltas: list[np.ndarray], value: float, S: float) -> GammaResult:
    """The Γ-method proper, on fluctuations around the estimate ``value``."""
    if not S > 0:
        raise ValueError(f"S must be positive, got {S}")
    lengths = np.array([x.size for x in deltas])
    n = int(lengths.sum())
    w_max = max(int(lengths.max()) // 2, 1)  # longest lag: half the longest replica
    t = np.arange(w_max)
    pairs = np.clip(lengths[:, None] - t, 0, None).sum(axis=0)
    gamma = _gamma_sums(deltas, w_max) / pairs

    if gamma[0] <= 0:  # constant data (exact zeros, see _mean): no fluctuations at all
        one = np.ones(1)
        return GammaResult(value, 0.0, 0.5, 0.0, 0, n, n / 1.0, one, 0 * one, 0.5 * one)

    rho = gamma / gamma[0]
    tau_of_w = 0.5 + np.concatenate([[0.0], np.cumsum(rho[1:])])
    longest = int(lengths.max())
    window, too_short = _automatic_window(tau_of_w, n, S, longest)
    tau_int = float(tau_of_w[window])
    too_short = too_short or 1 < longest < MIN_TAUS * tau_int

    # Wolff eq. (49): C_F(W) -> C_F(W) (1 + (2W + 1)/N), i.e. every Γ(t) rescaled alike.
    variance = 2 * tau_int * gamma[0] * (1 + (2 * window + 1) / n) / n
    if variance <= 0:
        raise ValueError(f"estimated variance is not positive (tau_int = {tau_int:.3g}):"
                         " strongly anticorrelated data?")
    tau_error = 2 * tau_int * np.sqrt(max(window + 0.5 - tau_int, 0.0) / n)  # eq. (42)

    t_max = min(2 * window, w_max - 1, MAX_LAG)
    return GammaResult(
        mean=float(value), error=float(np.sqrt(variance)), tau_int=tau_int,
        tau_int_error=float(tau_error), window=window, n=n, n_eff=n / (2 * tau_int),
        rho=rho[:t_max + 1], rho_error=_rho_error(rho, t_max, window, n),
        tau_int_of_w=tau_of_w[:t_max + 1], too_short=too_short)


def _automatic_window(tau_of_w: np.ndarray, n: int, S: float, longest: int) -> tuple[int, bool]:
    """``(W, too_short)``: the first W ≥ 1 with g(W) < 0 (Wolff eq. 52; τ_int(W) ≤ ½ stops
    at once), flagged when none is found before half the ``longest`` replica."""
    w = np.arange(1, tau_of_w.size)
    if w.size == 0:
        if longest < 2:  # replicas of one measurement each: independent by construction
            return 0, False
        warnings.warn(f"Γ-method: replicas of {longest} measurements allow no lag: the "
                      "autocorrelation cannot be measured; the error assumes independent "
                      "measurements", ShortChainWarning, stacklevel=4)
        return 0, True
    tau_w = tau_of_w[1:]
    positive = tau_w > 0.5
    tau_safe = np.where(positive, tau_w, 1.0)
    tau = S / np.log((2 * tau_safe + 1) / (2 * tau_safe - 1))
    g = np.where(positive, np.exp(-w / tau) - tau / np.sqrt(w * n), -1.0)
    below = np.flatnonzero(g < 0)
    if below.size == 0:
        warnings.warn("Γ-method: no window found before half the chain length; "
                      "the chain is too short for its autocorrelation time",
                      ShortChainWarning, stacklevel=4)
        return int(w[-1]), True
    return int(w[below[0]]), False


def _rho_error(rho: np.ndarray, t_max: int, window: int, n: int) -> np.ndarray:
    """δρ(t)² = (1/N) Σ_{k=1}^{t+W} [ρ(k+t) + ρ(|k−t|) − 2ρ(k)ρ(t)]²  (Wolff eq. E.11)."""
    t = np.arange(t_max + 1)[:, None]
    k = np.arange(1, t_max + window + 1)[None, :]
    padded = np.concatenate([rho, np.zeros(max(2 * t_max + window + 1 - rho.size, 0))])
    terms = padded[k + t] + padded[np.abs(k - t)] - 2 * padded[k] * padded[t]
    terms = np.where(k <= t + window, terms, 0.0)
    return np.sqrt(np.sum(terms**2, axis=1) / n)


def _numerical_gradient(f: Callable[..., float], x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Central differences, step ~ ε^(1/3) times the natural scale of each argument."""
    steps = np.cbrt(np.finfo(np.float64).eps) * np.maximum.reduce(
        [np.abs(x), scales, np.full_like(x, np.finfo(np.float64).tiny ** 0.25)])
    grad = np.empty_like(x)
    for alpha, h in enumerate(steps):
        up, down = x.copy(), x.copy()
        up[alpha] += h
        down[alpha] -= h
        grad[alpha] = (f(*up) - f(*down)) / (2 * h)
    return grad
