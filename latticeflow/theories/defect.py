"""A defect in 2D U(1) gauge theory: per-plaquette couplings, the protocol that switches the
defect off, exact draws and exact partition functions (pure U(1)).

Conventions
-----------
- Links and plaquettes as in :mod:`~latticeflow.theories.u1`: angles ``(batch, 2, L_0,
  L_1)``, ``θ_P(x) = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x)``, plaquette tensors ``(L_0, L_1)``.
- The defect: a straight segment of ``length`` plaquettes along direction 1 at x_0 = 0,
  the plaquettes ``(0, x_1)`` for x_1 = 0 … length − 1 (1 ≤ length ≤ L_1).
- Defect couplings ``K_c(x)`` = c on the defect, 1 elsewhere; defect action
  ``S_c = −β Σ_x K_c(x) cos θ_P(x)`` (:func:`defect_action`, force :func:`defect_force`).
  The Schwinger model gets the defect in its gauge part only (:class:`DefectSchwinger`):
  ``S_c − log det(D†D)``.  At c = 0 the defect plaquettes are free and the topology is
  not frozen; c = 1 is the theory itself.
- :class:`Protocol`: c_0 = 0 ≤ c_1 ≤ … ≤ c_N = 1, the schedule of a non-equilibrium transport
  (:mod:`latticeflow.mcmc.nemcmc`).
- Exact results for pure U(1) with any couplings β_x ≥ 0 per plaquette on the torus: the V
  plaquette angles are independent with weights e^{β_x cos φ} up to the constraint that
  their principal values sum to 2π × an integer, so (character expansion, normalised Haar
  measure of the links) ``Z = Σ_n Π_x I_n(β_x)`` (:func:`log_partition`), and
  :func:`draw_defect_links` draws them exactly (a free plaquette, β_x = 0, absorbs the
  constraint: no rejection).

References:
    arXiv:2402.06561, arXiv:2412.00200, arXiv:2510.25704 (out-of-equilibrium transport
    from a defect to reduce topological freezing); C. Jarzynski, Phys. Rev. Lett. 78 (1997)
    2690, arXiv:cond-mat/9610209.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..lattice import shift
from .schwinger import Schwinger
from .u1 import U1, plaquette_angles
from .u1_direct import links_from_plaquettes

__all__ = ["defect_mask", "defect_couplings", "defect_action", "defect_force", "defect_energy", "Protocol",
           "DefectU1", "DefectSchwinger", "with_defect", "draw_defect_links", "log_partition",
           "free_energy_difference", "defect_problem"]

_CHUNK = 1 << 22  #: proposals × plaquettes drawn at once by the rejection step


def defect_problem(theory, length: int) -> str | None:
    """Why a defect of ``length`` plaquettes cannot be put into ``theory`` (one line), or None."""
    if not isinstance(theory, U1) or theory.dim != 2:
        return (f"the defect is implemented for 2D U(1) and the Schwinger model, not for the {theory.name} "
                f"theory in {theory.dim}D")
    if not 1 <= int(length) <= theory.shape[1]:
        return f"the defect has 1 … L_1 = {theory.shape[1]} plaquettes (got {length})"
    return None


def defect_mask(shape, length: int) -> torch.Tensor:
    """The plaquettes of the defect, ``(L_0, L_1)`` bool: ``(0, x_1)`` for x_1 < ``length``."""
    l0, l1 = shape
    if not 1 <= int(length) <= l1:
        raise ValueError(f"the defect has 1 … L_1 = {l1} plaquettes (got {length})")
    mask = torch.zeros((l0, l1), dtype=torch.bool)
    mask[0, : int(length)] = True
    return mask


def defect_couplings(shape, c: float, length: int) -> torch.Tensor:
    """K_c ``(L_0, L_1)`` float64: c on the defect, 1 elsewhere."""
    return torch.where(defect_mask(shape, length), float(c), 1.0).to(torch.float64)


def defect_action(theta: torch.Tensor, beta_p: torch.Tensor) -> torch.Tensor:
    """``−Σ_x β_x cos θ_P(x)`` per configuration ``(batch,)``; ``beta_p`` ``(L_0, L_1)``."""
    return -(beta_p * torch.cos(plaquette_angles(theta)[:, 0])).flatten(1).sum(1)


def defect_force(theta: torch.Tensor, beta_p: torch.Tensor) -> torch.Tensor:
    """−∂/∂θ of :func:`defect_action`, shaped like ``theta`` (analytic)."""
    s = beta_p * torch.sin(plaquette_angles(theta)[:, 0])  # ∂S/∂θ_P
    # θ_P(x) holds +θ_0(x), +θ_1(x+0̂), −θ_0(x+1̂), −θ_1(x)
    return torch.stack([shift(s, 1, -1) - s, s - shift(s, 0, -1)], dim=1)


def defect_energy(theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ_{x ∈ defect} cos θ_P(x)`` ``(batch,)`` float64: S_c' − S_c = −β (c' − c) × this."""
    cos = torch.cos(plaquette_angles(theta.to(torch.float64))[:, 0])
    return (cos * mask.to(cos.device)).flatten(1).sum(1)


class Protocol:
    """The schedule c_0 = 0 ≤ c_1 ≤ … ≤ c_N = 1 of a transport, N ≥ 1 (``values``, a tuple
    of N + 1 floats); :meth:`linear` gives c_n = n/N.  Anything else is a ValueError."""

    def __init__(self, values):
        values = tuple(float(c) for c in values)
        if len(values) < 2:
            raise ValueError(f"a protocol needs at least c_0 = 0 and c_N = 1 (got {list(values)})")
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in values):
            raise ValueError("every c of a protocol must be in [0, 1]")
        if values[0] != 0.0 or values[-1] != 1.0:
            raise ValueError(f"a protocol starts at c = 0 and ends at c = 1 (got {values[0]:g} … {values[-1]:g})")
        if any(b < a for a, b in zip(values, values[1:])):
            raise ValueError("the c of a protocol must not decrease")
        self.values = values

    @classmethod
    def linear(cls, steps: int) -> "Protocol":
        """c_n = n/N, n = 0 … N (``steps`` = N ≥ 1)."""
        if int(steps) != steps or steps < 1:
            raise ValueError(f"a protocol needs N >= 1 steps (got {steps})")
        return cls([n / steps for n in range(int(steps) + 1)])

    @property
    def steps(self) -> int:
        """N, the number of updates of a transport."""
        return len(self.values) - 1

    def __repr__(self) -> str:
        return f"Protocol(N={self.steps}, c={list(self.values)})"


class _Defect:
    """The defect of :func:`with_defect`: the gauge action S_c (:meth:`set_c` moves c)."""

    def _init_defect(self, length: int, c: float) -> None:
        self.defect = defect_mask(self.shape, length)
        self.defect_length = int(length)
        self._on_device: dict = {}
        self.set_c(c)

    def set_c(self, c: float) -> None:
        """Put the defect at coupling ``c`` ∈ [0, 1] (actions and forces from then on)."""
        self.c = float(c)
        self.plaquette_beta = self.beta * defect_couplings(self.shape, self.c, self.defect_length)
        self._on_device = {}

    def _beta_p(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._on_device:
            self._on_device[x.device] = self.plaquette_beta.to(x.device)
        return self._on_device[x.device]

    def gauge_action(self, x: torch.Tensor) -> torch.Tensor:
        """S_c ``(batch,)``."""
        return defect_action(x, self._beta_p(x))

    def gauge_force(self, x: torch.Tensor) -> torch.Tensor:
        """−∂S_c/∂θ."""
        return defect_force(x, self._beta_p(x))


class DefectU1(_Defect, U1):
    """Pure 2D U(1) with the defect action S_c (``action``, ``force``), c settable."""

    def __init__(self, shape, beta: float, length: int, c: float = 1.0):
        U1.__init__(self, shape, beta)
        self._init_defect(length, c)

    def action(self, x):
        return self.gauge_action(x)

    def force(self, x):
        return self.gauge_force(x)


class DefectSchwinger(_Defect, Schwinger):
    """The Schwinger model with the defect in its gauge action, S_c − log det(D†D); its
    HMC (exact determinant or pseudofermions) integrates that."""

    def __init__(self, shape, beta: float, kappa: float, length: int, c: float = 1.0):
        Schwinger.__init__(self, shape, beta, kappa)
        self._init_defect(length, c)


def with_defect(theory, length: int, c: float = 1.0):
    """``theory`` (2D U(1) or Schwinger) with a defect of ``length`` plaquettes at coupling c."""
    problem = defect_problem(theory, length)
    if problem:
        raise ValueError(problem)
    if isinstance(theory, Schwinger):
        return DefectSchwinger(theory.shape, theory.beta, theory.kappa, length, c)
    return DefectU1(theory.shape, theory.beta, length, c)


# --- exact results for pure U(1) ---------------------------------------------------------------
def _wrap(a: np.ndarray) -> np.ndarray:
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def draw_plaquettes(beta_p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sets of plaquette angles ``(n, V)`` in (−π, π], independent von Mises(β_x) up to
    the torus constraint, exactly: all but the plaquette of smallest β_x drawn, that one fixed
    by the constraint and the set accepted with probability e^{β_min (cos φ − 1)} (always,
    where β_min = 0: a free plaquette is uniform, so the constrained one is too)."""
    beta = np.asarray(beta_p, dtype=np.float64).ravel()
    last = int(np.argmin(beta))
    others = np.delete(beta, last)
    rate = min(1.0, 1.0 / math.sqrt(2 * math.pi * max(beta[last], 1e-300)))  # about the acceptance
    out, accepted = [], 0
    while accepted < n:
        wanted = n - accepted if beta[last] == 0 else math.ceil(1.25 * (n - accepted) / rate) + 4
        k = min(max(1, _CHUNK // beta.size), wanted)
        free = rng.vonmises(0.0, np.broadcast_to(others, (k, others.size)))
        fixed = _wrap(-free.sum(1))
        keep = rng.random(k) < np.exp(beta[last] * (np.cos(fixed) - 1.0)) if beta[last] > 0 else np.ones(k, bool)
        index = np.flatnonzero(keep)[: n - accepted]
        out.append(np.insert(free[index], last, fixed[index], axis=1))
        accepted += len(index)
    return np.concatenate(out)


def draw_defect_links(beta_p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` exact configurations ``(n, 2, L_0, L_1)`` in [0, 2π) of pure 2D U(1) with the
    couplings ``beta_p`` ``(L_0, L_1)`` (e.g. β K_0): plaquettes by :func:`draw_plaquettes`,
    links in a maximal-tree gauge with uniform holonomies, then a uniform random gauge
    transformation (as :mod:`~latticeflow.theories.u1_direct` does for uniform β)."""
    l0, l1 = np.shape(beta_p)
    p = draw_plaquettes(beta_p, n, rng).reshape(n, l0, l1)
    links = links_from_plaquettes(p, 2 * math.pi * rng.random((n, 2)))
    alpha = 2 * math.pi * rng.random((n, l0, l1))  # gauge: θ_μ(x) + α(x) − α(x+μ)
    links[:, 0] += alpha - np.roll(alpha, -1, axis=1)
    links[:, 1] += alpha - np.roll(alpha, -1, axis=2)
    return np.mod(links, 2 * math.pi)


def log_partition(beta_p) -> float:
    """log Z of pure 2D U(1) on the torus with couplings ``beta_p`` ``(L_0, L_1)`` (≥ 0):
    ``Z = ∫ Π dθ/2π e^{Σ_x β_x cos θ_P(x)} = Σ_n Π_x I_n(β_x)`` (module docstring), from
    exponentially scaled Bessel functions and a log-sum-exp."""
    from scipy.special import ive, logsumexp

    beta = np.asarray(beta_p, dtype=np.float64).ravel()
    if beta.size == 0 or not np.all(np.isfinite(beta) & (beta >= 0)):
        raise ValueError("the couplings must be finite and >= 0")
    values, counts = np.unique(beta, return_counts=True)
    # I_n(β)/I_0(β) ≈ e^{−n²/2β}: this cut-off leaves out less than e^{−40} of every term
    nmax = max(60, math.ceil(math.sqrt(80.0 * values.max())) + 10)
    n = np.arange(-nmax, nmax + 1)
    with np.errstate(divide="ignore"):
        terms = sum(k * np.log(ive(n, b)) for b, k in zip(values, counts))  # I_n(0) = δ_n0
    return float(beta.sum() + logsumexp(terms))


def free_energy_difference(shape, beta: float, length: int, c0: float = 0.0, c1: float = 1.0) -> float:
    """ΔF = −log(Z_{c1}/Z_{c0}) of pure 2D U(1) with the defect (Jarzynski: ⟨e^{−W}⟩ =
    e^{−ΔF} over transports c0 → c1 from equilibrium at c0)."""
    z0 = log_partition(beta * defect_couplings(shape, c0, length).numpy())
    z1 = log_partition(beta * defect_couplings(shape, c1, length).numpy())
    return z0 - z1
