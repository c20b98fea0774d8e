"""The two-flavour Schwinger model: 2D compact U(1) gauge theory with N_f = 2 degenerate
Wilson fermions, integrated out exactly.

Conventions
-----------
- Links as in :mod:`~latticeflow.theories.u1` (angles ``(batch, 2, L_0, L_1)``, axis 0 is
  time); the Wilson–Dirac operator ``D`` with hopping parameter κ, antiperiodic in time,
  as in :mod:`~latticeflow.theories.fermions`.
- Effective action ``S_eff = −β Σ_x cos θ_01(x) − log det(D†D) = S_gauge − 2 log|det D|``;
  ``action`` computes it exactly from the dense V × V even–odd Schur complement D̂ (det D̂ =
  det D; LU in complex128; odd extents: the 2V × 2V matrix D), which is what flows are
  trained on and what Metropolis and reweighting use.  HMC integrates it
  either exactly (``[hmc] fermions = "exact"``: the force from the dense inverse) or with
  pseudofermions (``"pseudofermion"``, the default: a CG solve per force), by default
  even–odd preconditioned (``even_odd``, :mod:`~latticeflow.theories.even_odd`), each solve
  starting from the previous solution (``cg_guess``, :mod:`~latticeflow.theories.chrono`).
- Observables, besides the U(1) ones (``plaquette``, ``topological_charge``, ``chi_Q``):
  ``chiral_condensate`` = (1/V) Re tr D⁻¹ per flavour (the lattice normalisation of
  D = 1 − κH; with S_F = ψ̄Dψ this is −⟨ψ̄ψ⟩ per flavour), and the pion correlator
  ``pion_t{t}`` = (1/V) Σ_{x, y: x_0 − y_0 = t} Σ_spins |D⁻¹(x, y)|² for t = 0 … L_0/2
  (γ₅-hermiticity turns −tr γ₅ D⁻¹(x,y) γ₅ D⁻¹(y,x) into this sum of squares; averaged
  over every source y).
- At κ = 0, D = 1 and the exact U(1) torus values apply (``exact()`` gives them).

References:
    J. Schwinger, Phys. Rev. 128 (1962) 2425; arXiv:2106.05934, arXiv:2202.11712,
    arXiv:2207.08945 (flow sampling of this model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schema import Check, between, key, nonnegative, one_of, positive
from .base import register_theory
from .chrono import GUESSES
from .even_odd import EvenOddPseudofermionAction, even_odd_problem, schur_matrix
from .fermions import PseudofermionAction, det_force, dirac_matrix, fermion_links
from .u1 import U1, mean_plaquette

__all__ = ["Schwinger", "FERMION_METHODS"]

#: how HMC treats the determinant (``[hmc] fermions``)
FERMION_METHODS = ("pseudofermion", "exact")
#: ``[hmc] cg_tolerance``: a relative residual float64 can reach (1e-300 would run every
#: solve to its last iteration); a loose force costs acceptance, not exactness
FORCE_TOLERANCE = Check(lambda v: 1e-14 <= v < 1, "in [1e-14, 1) (float64 cannot reach a smaller "
                                                    "relative residual)")
#: ``[hmc] cg_action_tolerance``: the accept/reject action, strict enough to keep ΔH exact
ACTION_TOLERANCE = Check(lambda v: 1e-14 <= v <= 1e-8, "in [1e-14, 1e-8] (looser biases the "
                                                        "Metropolis test; float64 cannot reach tighter)")
#: a guess makes the force depend on the solver's history at the level of its residual: it is
#: used only with a force tolerance this tight, where a trajectory is reversible to ~1e-8
#: (measured at L = 16, κ = 0.26: 3e-9 at 1e-9, 5e-8 at 1e-8; docs/pseudofermions.md)
GUESS_TOLERANCE = 1e-9
#: solutions the chronological guess extrapolates from (3 was best at L = 16, κ = 0.26, 12 MD
#: steps; at the 5 or 6 steps of acceptance 0.8 it saves no more than `last`)
CHRONO_DEPTH = 3
#: the action and the observables use the dense 2V × 2V matrix of D: up to V = 32²
#: (a 2048² complex matrix, 67 MB, an LU in about a second)
MAX_VOLUME = 32 * 32
#: memory for the dense matrices of one batch chunk
DENSE_BYTES = 1 << 28


def _cat_dicts(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@register_theory
class Schwinger(U1):
    """Two-flavour Schwinger model (Wilson fermions) at gauge coupling ``beta`` and hopping
    parameter ``kappa``; 2D only.

    Example:
        >>> theory = Schwinger((4, 4), beta=2.0, kappa=0.2)
        >>> x = theory.cold_field(1)
        >>> round(float(theory.observables(x)["plaquette"]), 6)
        1.0
    """

    name = "schwinger"
    @dataclass(frozen=True)
    class couplings:
        beta: float = key(doc="inverse gauge coupling β", check=positive)
        kappa: float = key(doc="hopping parameter κ of the Wilson fermions (free critical point 1/4; "
                               "bare mass 1/(2κ) − 2)", check=nonnegative)

    @dataclass(frozen=True)
    class md_options:
        """``[hmc]`` keys of the Schwinger model's molecular dynamics."""

        fermions: str = key("pseudofermion", "the determinant by `pseudofermion` fields φ†(D†D)⁻¹φ (a "
                                             "CG solve per force), or `exact` (dense; small lattices)",
                            one_of(*FERMION_METHODS))
        even_odd: bool = key(True, "pseudofermions: even–odd preconditioning, φ on the even sites with "
                                   "D̂ = 1 − κ²H_eo H_oe (det D̂ = det D; about half the CG iterations "
                                   "on half the vector); needs even L_0 and L_1")
        cg_guess: str = key("last", "pseudofermions: where each solve of a trajectory starts: `zero`, "
                                    "the `last` solution, or `chrono`, the minimal-residual "
                                    "extrapolation of the last 3 (hep-lat/9509012); a guess is used "
                                    "only where cg_tolerance ≤ 1e-9 (the trajectory stays reversible "
                                    "to ~1e-8), else solves start from zero", one_of(*GUESSES))
        cg_tolerance: float = key(1e-10, "pseudofermions: the CG of the molecular-dynamics force stops "
                                         "at residual |r| ≤ this · |φ| (a loose force costs acceptance, "
                                         "never exactness)", FORCE_TOLERANCE)
        cg_action_tolerance: float = key(1e-10, "pseudofermions: the CG of the action in the Metropolis "
                                                "test stops at |r| ≤ this · |φ|; at most 1e-8, so that ΔH "
                                                "stays exact whatever `cg_tolerance` is", ACTION_TOLERANCE)
        cg_max_iterations: int = key(2000, "pseudofermions: a solve not converged by then rejects its "
                                           "trajectory", between(1, 10**6))

    #: what files written before ``even_odd`` and ``cg_guess`` existed ran with: a resume of
    #: such a file continues with these (``HMC.load_state_dict``)
    md_legacy = {"even_odd": False, "cg_guess": "zero"}

    min_dim = max_dim = 2
    max_volume = MAX_VOLUME
    has_fermions = True
    headline_observables = ("topological_charge", "chi_Q", "chiral_condensate", "plaquette")

    def __init__(self, shape, beta: float, kappa: float):
        super().__init__(shape, beta)
        self.kappa = float(kappa)

    @property
    def observable_names(self):
        pion = [f"pion_t{t}" for t in range(self.shape[0] // 2 + 1)]
        return ("plaquette", "topological_charge", "chi_Q", "chiral_condensate", *pion)

    # --- the action -----------------------------------------------------------------------
    def gauge_action(self, x: torch.Tensor) -> torch.Tensor:
        """``−β Σ cos θ_P``, ``(batch,)``."""
        return U1.action(self, x)

    def gauge_force(self, x: torch.Tensor) -> torch.Tensor:
        return U1.force(self, x)

    def dirac_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """Dense D, ``(batch, 2V, 2V)`` complex128 (see :func:`~latticeflow.theories.fermions.dirac_matrix`)."""
        return dirac_matrix(fermion_links(x), self.kappa)

    def _chunks(self, x: torch.Tensor):
        """``x`` in batch chunks whose dense matrices stay within ``DENSE_BYTES``."""
        n = 2 * self.volume
        size = max(1, DENSE_BYTES // (16 * n * n))
        return x.split(size) if x.shape[0] > size else (x,)

    def log_det(self, x: torch.Tensor) -> torch.Tensor:
        """``log det(D†D) = 2 log|det D̂|``, ``(batch,)`` float64 (differentiable): the V × V LU of
        the even–odd Schur complement D̂ (:func:`~latticeflow.theories.even_odd.schur_matrix`,
        det D̂ = det D; 8× cheaper than D's); odd extents take :meth:`dense_log_det`."""
        if even_odd_problem(self.shape):
            return self.dense_log_det(x)
        theta = x.to(torch.float64)
        return torch.cat([2 * torch.linalg.slogdet(schur_matrix(c, self.kappa)).logabsdet
                          for c in self._chunks(theta)])

    def dense_log_det(self, x: torch.Tensor) -> torch.Tensor:
        """``2 log|det D|`` from the 2V × 2V LU of D itself, ``(batch,)`` float64 (the reference
        that :meth:`log_det` is tested against)."""
        return torch.cat([2 * torch.linalg.slogdet(self.dirac_matrix(c)).logabsdet for c in self._chunks(x)])

    def action(self, x):
        """``S_eff = S_gauge − log det(D†D)``, exact, ``(batch,)`` float64."""
        return self.gauge_action(x.to(torch.float64)) - self.log_det(x)

    def force(self, x):
        """−∂S_eff/∂θ: the U(1) force plus ``2 Re tr(D⁻¹ ∂D/∂θ)`` from the dense inverse."""
        fermion = torch.cat([det_force(fermion_links(c), self.kappa) for c in self._chunks(x)])
        return self.gauge_force(x) + fermion

    def md_keeps(self, options: dict) -> dict:
        """The CG settings define the chains of pseudofermion HMC only."""
        return options if options.get("fermions") == "pseudofermion" else {"fermions": options.get("fermions")}

    def md_action(self, fermions: str = "pseudofermion", cg_tolerance: float = 1e-10,
                  cg_max_iterations: int = 2000, cg_action_tolerance: float = 1e-10,
                  even_odd: bool = True, cg_guess: str = "last"):
        """What HMC integrates: the exact ``S_eff`` (``fermions = "exact"``), or pseudofermions
        (:class:`~latticeflow.theories.even_odd.EvenOddPseudofermionAction` or, with
        ``even_odd = False``, :class:`~latticeflow.theories.fermions.PseudofermionAction`).
        Even–odd on a lattice with an odd extent is a ConfigError (one line)."""
        if fermions not in FERMION_METHODS:
            raise ValueError(f"fermions must be one of {FERMION_METHODS} (got {fermions!r})")
        if fermions == "exact" or self.kappa == 0:
            return super().md_action()
        guess = cg_guess if cg_tolerance <= GUESS_TOLERANCE else "zero"
        solver = EvenOddPseudofermionAction if even_odd else PseudofermionAction
        return solver(self, cg_tolerance, cg_max_iterations, cg_action_tolerance, guess=guess, depth=CHRONO_DEPTH)

    # --- observables ----------------------------------------------------------------------
    def observables(self, x):
        return _cat_dicts([self._observables(c) for c in self._chunks(x)])

    def _observables(self, x):
        theta = x.to(torch.float64)
        obs = {"plaquette": mean_plaquette(theta), **self.charge_observables(theta)}
        batch, (l0, l1) = theta.shape[0], self.shape
        g = torch.linalg.inv(self.dirac_matrix(theta))
        obs["chiral_condensate"] = torch.diagonal(g, dim1=1, dim2=2).sum(1).real / self.volume
        # Σ_spins |G(x, y)|², summed over the spatial sites of sink and source: (batch, x_0, y_0)
        a = (g.abs() ** 2).view(batch, 2, l0, l1, 2, l0, l1).sum((1, 3, 4, 6))
        for t in range(l0 // 2 + 1):
            obs[f"pion_t{t}"] = torch.diagonal(torch.roll(a, shifts=-t, dims=1), dim1=1, dim2=2).sum(1) / self.volume
        return obs

    def exact(self):
        """Only at κ = 0 (no fermion dynamics): the U(1) torus values."""
        if self.kappa != 0:
            return {}
        out = {k: v for k, v in super().exact().items()
               if k in ("plaquette", "topological_charge", "chi_Q", "Q_squared")}
        if out:
            out["chiral_condensate"] = 2.0
        return out

    def exact_distributions(self):
        return super().exact_distributions() if self.kappa == 0 else {}
