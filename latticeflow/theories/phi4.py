"""Real scalar φ⁴ theory on a periodic lattice of any dimension.

Convention (arXiv:1904.12072, 2101.08176; no factors ½)::

    S(φ) = Σ_x [ Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴ ]

Observables per configuration (``⟨φ⟩ = 0`` exactly by the Z₂ symmetry φ → −φ, so no
mean is subtracted per configuration; analysis can subtract the ensemble mean):

- ``magnetization`` M = Σ_x φ_x, ``abs_magnetization`` |M|
- ``chi2`` = M²/V, whose mean is χ₂ = Σ_x G_c(x)
- ``ising_energy`` = (1/d) Σ_μ (1/V) Σ_x φ_x φ_{x+μ}, whose mean is E = (1/d) Σ_μ G_c(μ̂)
- ``phi2`` = (1/V) Σ_x φ_x², whose mean is G_c(0)

The full two-point function per configuration is :func:`two_point`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..lattice import shift
from ..schema import key, nonnegative
from .base import Derived, Theory, register_theory

__all__ = ["Phi4", "phi4_action", "two_point", "zero_momentum_correlator"]


def phi4_action(phi: torch.Tensor, m2: float, lam: float) -> torch.Tensor:
    """S(φ) for fields ``(batch, *lattice)``; returns ``(batch,)``."""
    d = phi.dim() - 1
    kinetic = sum((shift(phi, mu) - phi) ** 2 for mu in range(d))
    density = kinetic + m2 * phi**2 + lam * phi**4
    return density.flatten(1).sum(1)


def two_point(phi: torch.Tensor) -> torch.Tensor:
    """C(x) = (1/V) Σ_y φ_y φ_{y+x} per configuration, ``(batch, *lattice)`` (by FFT)."""
    dims = tuple(range(1, phi.dim()))
    f = torch.fft.fftn(phi.to(torch.float64), dim=dims)
    volume = math.prod(phi.shape[1:])
    return torch.fft.ifftn(f.conj() * f, dim=dims).real / volume


def zero_momentum_correlator(phi: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Time-slice correlator of the zero-momentum field, ``(batch, L_axis)``.

    ``C(t) = Σ_{x⊥} C(t e_axis + x⊥)`` with C from :func:`two_point`, so ``Σ_t C(t) = M²/V``.
    A pole mass follows from its cosh-like decay.
    """
    c = two_point(phi)
    other = [i + 1 for i in range(phi.dim() - 1) if i != axis]
    return c.sum(dim=other) if other else c


@register_theory
class Phi4(Theory):
    """φ⁴ theory with mass parameter ``m2`` (may be negative) and coupling ``lam`` ≥ 0.

    References:
        arXiv:1904.12072 (flows for φ⁴, the AKS ensembles), arXiv:2101.08176 (tutorial).

    Arguments:
        shape: lattice extents ``(L_1, ..., L_d)``.
        m2, lam: couplings of the action above.

    Example:
        >>> theory = Phi4((8, 8), m2=-4.0, lam=8.0)
        >>> theory.action(torch.zeros(3, 8, 8)).shape
        torch.Size([3])
    """

    name = "phi4"
    @dataclass(frozen=True)
    class couplings:
        m2: float = key(doc="m² (may be negative)")
        lam: float = key(doc="quartic coupling λ", check=nonnegative)

    observable_names = ("magnetization", "abs_magnetization", "chi2", "ising_energy", "phi2")
    headline_observables = ("chi2", "abs_magnetization")

    def __init__(self, shape, m2: float, lam: float):
        super().__init__(shape)
        self.m2 = float(m2)
        self.lam = float(lam)

    @classmethod
    def couplings_problem(cls, couplings):
        """λ = 0 is the free field, whose weight e^{−S} is normalisable only for m² > 0 (the
        zero mode costs m² Σ_x φ_x²)."""
        if couplings["lam"] == 0 and couplings["m2"] <= 0:
            return "m2", (f"with lam = 0 (the free field) e^-S can be normalised only for m2 > 0 "
                          f"(got m2 = {couplings['m2']:g})")
        return None

    @property
    def field_shape(self):
        return self.shape

    def action(self, x):
        return phi4_action(x, self.m2, self.lam)

    def force(self, x):
        """−∂S/∂φ, shape like ``x`` (analytic; used by HMC)."""
        d = self.dim
        neighbours = sum(shift(x, mu) + shift(x, mu, -1) for mu in range(d))
        return 2 * neighbours - (4 * d + 2 * self.m2) * x - 4 * self.lam * x**3

    def observables(self, x):
        phi = x.to(torch.float64)
        v = self.volume
        m = phi.flatten(1).sum(1)
        link = sum((phi * shift(phi, mu)).flatten(1).sum(1) for mu in range(self.dim))
        return {
            "magnetization": m,
            "abs_magnetization": m.abs(),
            "chi2": m**2 / v,
            "ising_energy": link / (self.dim * v),
            "phi2": (phi**2).flatten(1).sum(1) / v,
        }

    def derived_observables(self):
        """``chi2_connected`` = (⟨M²⟩ − ⟨M⟩²)/V: the mean of ``chi2`` up to the ⟨M⟩² term,
        which vanishes by Z₂ symmetry."""
        v = self.volume
        return {"chi2_connected": Derived(("magnetization",), lambda obs: [obs["magnetization"] ** 2,
                                                                          obs["magnetization"]],
                                          lambda m2, m1: (m2 - m1**2) / v)}

    def exact(self):
        """Free-field values (λ = 0, m² > 0); empty for the interacting theory."""
        if self.lam != 0 or self.m2 <= 0:
            return {}
        from . import exact

        g = exact.free_propagator(self.shape, self.m2)
        chi2 = exact.free_chi2(self.m2)
        unit = [g[tuple(1 if i == mu else 0 for i in range(self.dim))] for mu in range(self.dim)]
        return {
            "magnetization": 0.0,
            "abs_magnetization": math.sqrt(2 * self.volume * chi2 / math.pi),
            "chi2": chi2,
            "ising_energy": float(sum(unit) / self.dim),
            "phi2": float(g[(0,) * self.dim]),
            "log_Z": exact.free_log_z(self.shape, self.m2),
        }

    def random_field(self, batch, generator=None):
        return torch.randn((batch, *self.shape), dtype=torch.float64, generator=generator)
