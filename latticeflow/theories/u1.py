"""Compact U(1) lattice gauge theory (Wilson action) in d ≥ 2 dimensions.

Conventions
-----------
- Links are angles θ_μ(x), tensor ``(batch, d, *lattice)``; any real value, taken mod 2π.
- Plaquette angle ``θ_μν(x) = θ_μ(x) + θ_ν(x+μ) − θ_μ(x+ν) − θ_ν(x)`` for μ < ν
  (counter-clockwise in the (μ, ν) plane).
- Action ``S = −β Σ_x Σ_{μ<ν} cos θ_μν(x)``.
- Gauge transformation with angles α(x): ``θ_μ(x) → θ_μ(x) + α(x) − α(x+μ)``
  (``U_μ(x) → g(x) U_μ(x) g(x+μ)†``).
- 2D topological charge ``Q = (1/2π) Σ_x arg e^{iθ_01(x)}``, arg ∈ (−π, π]; an integer
  on the torus.  ``chi_Q`` per configuration is Q²/V, so its mean is χ_Q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..groups import principal_angle
from ..lattice import planes, rectangular_loop, shift
from ..schema import key, positive
from .base import MAX_EXACT_VOLUME, Theory, register_theory
from .field_space import AngleField

__all__ = [
    "U1",
    "plaquette_angles",
    "mean_plaquette",
    "u1_action",
    "topological_charge",
    "wilson_loop",
    "gauge_transform",
    "random_gauge_transform",
]

_AXIS0 = 2  # lattice axes of a link tensor (batch, d, *lattice) start here


def plaquette_angles(theta: torch.Tensor) -> torch.Tensor:
    """θ_μν(x) for all planes μ < ν: ``(batch, n_planes, *lattice)`` (not wrapped)."""
    d = theta.shape[1]
    out = []
    for mu, nu in planes(d):
        t_mu, t_nu = theta[:, mu], theta[:, nu]
        out.append(t_mu + shift(t_nu, mu) - shift(t_mu, nu) - t_nu)
    return torch.stack(out, dim=1)


def u1_action(theta: torch.Tensor, beta: float) -> torch.Tensor:
    """Wilson action ``−β Σ cos θ_P`` per configuration, ``(batch,)``."""
    return -beta * torch.cos(plaquette_angles(theta)).flatten(1).sum(1)


def topological_charge(theta: torch.Tensor) -> torch.Tensor:
    """Geometric charge of 2D configurations ``(batch, 2, L_0, L_1)``: ``(batch,)``, integer-valued."""
    if theta.shape[1] != 2:
        raise ValueError("the U(1) topological charge is defined here in 2D only")
    p = plaquette_angles(theta)[:, 0]
    return principal_angle(p).flatten(1).sum(1) / (2 * math.pi)


def mean_plaquette(theta: torch.Tensor) -> torch.Tensor:
    """Volume and plane average of ``cos θ_P``, ``(batch,)``."""
    return torch.cos(plaquette_angles(theta)).flatten(1).mean(1)


def wilson_loop(theta: torch.Tensor, a: int, b: int, mu: int = 0, nu: int = 1) -> torch.Tensor:
    """Volume-averaged ``cos`` of the a×b rectangular loop in the (μ, ν) plane, ``(batch,)``."""
    angle = rectangular_loop(theta[:, mu], theta[:, nu], a, b, mu, nu, torch.add, torch.neg)
    return torch.cos(angle).flatten(1).mean(1)


def gauge_transform(theta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Apply ``θ_μ(x) → θ_μ(x) + α(x) − α(x+μ)``; ``alpha`` is ``(batch, *lattice)``."""
    d = theta.shape[1]
    return torch.stack([theta[:, mu] + alpha - shift(alpha, mu) for mu in range(d)], dim=1)


def random_gauge_transform(theta: torch.Tensor, generator=None) -> torch.Tensor:
    """A uniformly random gauge transformation of ``theta``."""
    shape = (theta.shape[0], *theta.shape[2:])
    alpha = 2 * math.pi * torch.rand(shape, dtype=theta.dtype, generator=generator)
    return gauge_transform(theta, alpha)


@register_theory
class U1(Theory):
    """Compact U(1) gauge theory with Wilson action at coupling ``beta``.

    References:
        arXiv:2003.06413 (gauge-equivariant flows), arXiv:2101.08176 (tutorial).

    Arguments:
        shape: lattice extents; ``len(shape) = d >= 2``.
        beta: inverse coupling, > 0.

    Example:
        >>> theory = U1((8, 8), beta=2.0)
        >>> theory.observables(torch.zeros(1, 2, 8, 8))["plaquette"]
        tensor([1.], dtype=torch.float64)
    """

    name = "u1"
    @dataclass(frozen=True)
    class couplings:
        beta: float = key(doc="inverse coupling β", check=positive)

    min_dim = 2
    field_space = AngleField()
    headline_observables = ("topological_charge", "chi_Q", "plaquette")

    def __init__(self, shape, beta: float):
        super().__init__(shape)
        self.beta = float(beta)

    @property
    def observable_names(self):
        names = ["plaquette", "wilson_1x2", "wilson_2x2"]
        if self.dim == 2:
            names += ["topological_charge", "chi_Q"]
        return tuple(names)

    @property
    def field_shape(self):
        return (self.dim, *self.shape)

    def action(self, x):
        return u1_action(x, self.beta)

    def force(self, x):
        """−∂S/∂θ, shape like ``x`` (analytic; used by HMC)."""
        s = torch.sin(plaquette_angles(x))  # dS/dθ_P = β sin θ_P
        f = torch.zeros_like(x)
        for p, (mu, nu) in enumerate(planes(self.dim)):
            sp = self.beta * s[:, p]
            # θ_P(x) contains +θ_μ(x), +θ_ν(x+μ), −θ_μ(x+ν), −θ_ν(x)
            f[:, mu] -= sp - shift(sp, nu, -1)
            f[:, nu] -= shift(sp, mu, -1) - sp
        return f

    def observables(self, x):
        theta = x.to(torch.float64)
        obs = {
            "plaquette": mean_plaquette(theta),
            "wilson_1x2": wilson_loop(theta, 1, 2),
            "wilson_2x2": wilson_loop(theta, 2, 2),
        }
        if self.dim == 2:
            obs |= self.charge_observables(theta)
        return obs

    def charge_observables(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """2D: ``topological_charge`` Q and ``chi_Q`` = Q²/V per configuration."""
        q = topological_charge(theta)
        return {"topological_charge": q, "chi_Q": q**2 / self.volume}

    def exact(self):
        """Exact torus values in 2D (docs/design.md §1); empty in d > 2."""
        if self.dim != 2 or self.volume > MAX_EXACT_VOLUME:
            return {}
        from . import exact

        v = self.volume
        q2 = exact.u1_q_squared(self.beta, v)
        return {
            "plaquette": exact.u1_plaquette(self.beta, v),
            "wilson_1x2": exact.u1_wilson_loop(self.beta, v, 2),
            "wilson_2x2": exact.u1_wilson_loop(self.beta, v, 4),
            "topological_charge": 0.0,
            "chi_Q": q2 / v,
            "Q_squared": q2,
        }

    def exact_distributions(self):
        """P(Q) on the 2D torus."""
        from . import exact

        if self.dim != 2 or self.beta > exact.MAX_BETA_PER_PLAQUETTE * self.volume:
            return {}  # its quadrature does not reach that far (exact.u1_charge_distribution)
        return {"topological_charge": exact.u1_charge_distribution(self.beta, self.volume)}

    def exact_sampling_problem(self):
        if self.dim != 2 or self.has_fermions:
            return (f"exact (direct) sampling is known for pure 2D U(1) only, not for the {self.name} "
                    f"theory in {self.dim}D" + (" with fermions" if self.has_fermions else ""))
        from .u1_direct import MAX_BETA

        if self.beta > MAX_BETA:
            return (f"theory.beta = {self.beta:g}: the direct sampler's rejection step accepts about "
                    f"1/sqrt(2 pi beta) of its proposals, so it is limited to beta <= {MAX_BETA:g}")
        return None

    def draw_exact(self, n, rng):
        """``n`` exact, independent 2D configurations (:mod:`~latticeflow.theories.u1_direct`),
        ``(n, 2, L_0, L_1)`` float64, and the proposals each took."""
        problem = self.exact_sampling_problem()
        if problem:
            raise NotImplementedError(problem)
        from .u1_direct import draw_links

        links, tries = draw_links(self.shape, self.beta, n, rng)
        return torch.from_numpy(links), tries

    def random_field(self, batch, generator=None):
        shape = (batch, *self.field_shape)
        return 2 * math.pi * torch.rand(shape, dtype=torch.float64, generator=generator)

    def gauge_transform(self, x, generator=None):
        return random_gauge_transform(x, generator)
