"""Instanton jumps: a global Metropolis move between topological sectors of 2D U(1) gauge
fields (pure U(1) and the Schwinger model), and chains of a base update (HMC or a heat
bath) interleaved with such jumps.

The move
--------
Multiply the links by a configuration of charge q = ±1 (probability ½ each) whose every
plaquette angle is 2πq/V (V = L₀L₁; conventions of :mod:`latticeflow.theories.u1`, plaquette
θ₀₁(x) = θ₀(x) + θ₁(x+0̂) − θ₀(x+1̂) − θ₁(x), periodic), centred at a random site a:
with y = x − a (mod L),

    θ₀(x) → θ₀(x) − 2πq y₁/V                      everywhere,
    θ₁(x) → θ₁(x) + 2πq y₀/L₀                     where y₁ = L₁ − 1.

Every plaquette then changes by 2πq/V mod 2π (on the slice y₁ = L₁ − 1 the two terms add
to 2πq/V − 2πq), for any L₀, L₁; a configuration whose plaquettes all stay inside (−π, π]
changes its charge Q by exactly q.  For fixed (a, q) the map is a translation of the link
angles, volume preserving, and (a, −q) undoes it; with q = ±1 drawn with probability ½
and a uniform on the lattice, the proposal density is symmetric, so accepting with
min(1, e^{−ΔS}) is exact (detailed balance holds pair by pair).  The random centre makes
the move translation symmetric on average: it moves the Polyakov loops that the instanton
carries (which the fermion determinant sees) to a random place.  Cf. the topology-changing
updates of arXiv:2106.14234 (2D U(1) and the N_f = 2 Schwinger model).

What ΔS is
----------
``determinant = "exact"`` (the default): the marginal action of the links,

    S_eff = S_gauge − log det(D†D)   (pure U(1): S_gauge),

with the exact log det(D†D) = 2 log|det D̂| of the dense even–odd Schur complement D̂
(``Schwinger.log_det``: a V × V LU, 8× cheaper than the 2V × 2V LU of D; odd extents fall
back to D itself), whatever the
``[hmc]`` fermions are; up to V = 32² sites (:data:`EXACT_MAX_VOLUME`). The log det of the
current links is kept between the jumps of one step. Exact with pseudofermion HMC too: a
pseudofermion trajectory draws φ from p(φ | U) by its heat bath, leaves the joint p(U, φ) ∝
e^{−S_gauge} e^{−φ†(D†D)⁻¹φ} invariant, and then discards φ; integrated over φ it is a
kernel on the links alone that leaves the marginal p(U) ∝ e^{−S_gauge} det D†D invariant.
The chain's state is U only (no φ is carried from one kernel to the next), so the jump, a
Metropolis step on the same marginal with the exact ΔS_eff, leaves it invariant too, and the
composition does; the next trajectory draws its φ at the jumped links anyway. (Were φ kept
across the jump — several trajectories per heat bath — the jump would have to be tested at
fixed φ, as below.)

``determinant = "action"``: the action HMC integrates, ``theory.md_action(...)``
(:class:`MDAction`):

- pure U(1): the Wilson gauge action (the same as ``"exact"``);
- Schwinger, ``fermions = "exact"``: S_eff from the dense LU of D (``theory.action``);
- Schwinger, ``fermions = "pseudofermion"``: a heat bath φ = D†(U) η, η Gaussian (∝ e^{−η†η}),
  then the jump at fixed φ with S = S_gauge(U) + φ†(D†D)⁻¹φ (the end point solved by CG to
  ``cg_action_tolerance``; a solve that fails is a rejection).  Proof: the heat bath samples
  φ from p(φ | U) exactly, and the Metropolis test with a symmetric proposal leaves
  p(U | φ) ∝ e^{−S(U, φ)} invariant, so both steps leave the joint
  p(U, φ) ∝ e^{−S_gauge} e^{−φ†(D†D)⁻¹φ} invariant, whose U-marginal is e^{−S_gauge} det D†D.
  (With even–odd preconditioning the same holds for D̂, whose determinant is det D.)
  Exact, but the pseudofermion estimate of the determinant ratio is noisy for a global
  move (its e^{−ΔS} has heavy tails): at L = 8, β = 2, κ = 0.26 the jumps are accepted ~1 %
  of the time, against ~42 % with the exact determinant (docs/instanton_jumps.md).

Files written before ``determinant`` existed were made with ``"action"`` and continue with
it (:meth:`HMCJumpChains.load_settings`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from ..groups import wrap_angle
from ..theories.u1 import U1, topological_charge
from .accept import metropolis
from .chains import KernelChains
from .hmc import HMC, md_settings
from .hmc_chains import HMCChains
from .kernels import Composite, HMCKernel, KernelState

__all__ = ["InstantonJump", "JumpChains", "HMCJumpChains", "jump_chains", "instanton_shift", "jump_problem",
           "DETERMINANTS", "EXACT_MAX_VOLUME"]

#: how the jump's Metropolis test treats the fermion determinant (``[sample] jump_determinant``)
DETERMINANTS = ("exact", "action")
#: the exact determinant is dense linear algebra (a V × V LU per configuration and jump)
EXACT_MAX_VOLUME = 32 * 32
#: what a file written before ``determinant`` existed was made with
LEGACY_DETERMINANT = "action"


def jump_problem(theory) -> str | None:
    """Why instanton jumps do not apply to ``theory`` (one line), or None: they need 2D U(1)
    link angles (the ``u1`` theory in 2D, or a theory built on it such as ``schwinger``)."""
    if not isinstance(theory, U1):
        return f"instanton jumps move 2D U(1) gauge fields; the {theory.name} theory has none"
    if theory.dim != 2:
        return f"instanton jumps are defined in 2D only, not for the {theory.name} theory in {theory.dim}D"
    return None


def instanton_shift(shape, q: torch.Tensor, centre: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """The link angles the jump adds (module docstring), ``(C, 2, L₀, L₁)``.

    Arguments:
        shape: ``(L₀, L₁)``.
        q: ``(C,)`` charges (±1; any integer works).
        centre: ``(C, 2)`` integer sites a where the instanton's seams cross.
    """
    l0, l1 = shape
    device = q.device
    x0 = torch.arange(l0, device=device).view(1, l0, 1)
    x1 = torch.arange(l1, device=device).view(1, 1, l1)
    y0 = torch.remainder(x0 - centre[:, 0].view(-1, 1, 1), l0).to(dtype)  # (C, L0, 1)
    y1 = torch.remainder(x1 - centre[:, 1].view(-1, 1, 1), l1)  # (C, 1, L1)
    charge = (2 * math.pi * q.to(dtype)).view(-1, 1, 1)
    d0 = (-charge * y1.to(dtype) / (l0 * l1)).expand(-1, l0, l1)
    d1 = charge * y0 / l0 * (y1 == l1 - 1).to(dtype)
    return torch.stack([d0, d1], dim=1)


class InstantonJump:
    """One instanton jump per chain (module docstring), vectorised over C chains.

    Arguments:
        theory: 2D U(1) or the Schwinger model (others: a ValueError, one line).
        translate: centre each proposal at a uniformly random site (default); False: at the
            origin (still exact, not translation symmetric).
        determinant: ``"exact"`` (default): ΔS of the marginal S_gauge − log det(D†D), the
            determinant dense (V ≤ :data:`EXACT_MAX_VOLUME`, else a ValueError); ``"action"``:
            ΔS of the action HMC integrates (with pseudofermions: a heat bath, then fixed φ).
            The same for pure U(1).
        **md_options: the theory's molecular-dynamics options (the Schwinger model's
            ``fermions``, ``cg_action_tolerance``, ``cg_max_iterations``; the defaults of
            ``[hmc]`` where not given).

    Info per chain: ``jump_accepted`` (bool), ``jump_delta_s`` (ΔS of the proposal, float64;
    NaN where its CG failed), ``jump_q`` (the proposed q, ±1), ``sector_change`` (Q after − Q
    before, 0 where rejected), and with pseudofermions ``jump_cg_iterations`` (the proposal's
    action solve; 0 with the exact determinant, which solves nothing: the columns of a file
    do not depend on ``determinant``, so a resume that changes it is refused by name).
    """

    def __init__(self, theory, translate: bool = True, determinant: str = "exact", **md_options):
        problem = jump_problem(theory)
        if problem:
            raise ValueError(problem)
        self.theory, self.translate = theory, bool(translate)
        self.md_settings = md_settings(theory, md_options)
        self.set_determinant(determinant)

    def set_determinant(self, determinant: str) -> None:
        """Use the ``"exact"`` or the ``"action"`` ΔS (class docstring)."""
        if determinant not in DETERMINANTS:
            raise ValueError(f"determinant must be one of {DETERMINANTS} (got {determinant!r})")
        self.determinant = determinant
        self.exact = determinant == "exact" and bool(getattr(self.theory, "has_fermions", False))
        if self.exact and self.theory.volume > EXACT_MAX_VOLUME:
            raise ValueError(f"the exact determinant of an instanton jump is a dense LU, implemented up to "
                             f"{EXACT_MAX_VOLUME} sites; this lattice has {self.theory.volume} "
                             "(use the pseudofermion action instead)")
        self.md = self.theory.md_action(**self.md_settings)
        self._held = (None, None, None)  # (links, their version, S_eff): the current links' action

    @property
    def stat_names(self) -> tuple[str, ...]:
        """The info's molecular-dynamics diagnostics (``jump_cg_iterations`` with pseudofermions)."""
        return tuple(f"jump_{name}" for name in self.md.stat_names)

    def exact_action(self, x: torch.Tensor) -> torch.Tensor:
        """S_eff = S_gauge − log det(D†D) of ``x``, ``(C,)`` float64 (that of the links the
        last step returned is kept, not recomputed)."""
        held, version, action = self._held
        if held is x and version == x._version:
            return action
        return self.theory.gauge_action(x.to(torch.float64)) - self.theory.log_det(x)

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        c, device = x.shape[0], x.device
        # drawn on the CPU in a fixed order (q, centre, ["action": pseudofermions], accept), then moved
        q = 2 * torch.randint(0, 2, (c,), generator=generator) - 1
        if self.translate:
            centre = torch.stack([torch.randint(0, n, (c,), generator=generator) for n in self.theory.shape], 1)
        else:
            centre = torch.zeros(c, 2, dtype=torch.int64)
        with torch.no_grad():
            proposal = wrap_angle(x + instanton_shift(self.theory.shape, q.to(device), centre.to(device), x.dtype))
            if self.exact:
                now, new = self.exact_action(x), self.exact_action(proposal)
                delta_s = new - now
                stats = {name: torch.zeros(c, dtype=torch.float64, device=device) for name in self.md.stat_names}
            else:
                self.md.refresh(x, generator)  # pseudofermions: the heat bath for φ at the current links
                delta_s = (self.md.action(proposal) - self.md.action(x)).to(torch.float64)
                stats = self.md.stats()
            log_u = torch.log(torch.rand(c, dtype=torch.float64, generator=generator)).to(device)
            accept = metropolis(-delta_s, log_u)  # NaN (a failed solve): rejected
            x_new = torch.where(accept.view(-1, 1, 1, 1), proposal, x)
            if self.exact:
                self._held = (x_new, x_new._version, torch.where(accept, new, now))
            change = torch.round(topological_charge(proposal) - topological_charge(x))
            change = torch.where(accept, change, torch.zeros_like(change))
        info = {"jump_accepted": accept, "jump_delta_s": delta_s, "jump_q": q.to(device),
                "sector_change": change}
        return KernelState(x_new), info | {f"jump_{k}": v for k, v in stats.items()}


NAME = "instanton-jump"  #: the ensembles' ``sampler`` attribute


def jump_chains(theory, base, jump: InstantonJump, n_chains: int, updates_per_step: int = 1,
                jumps_per_step: int = 1, **options):
    """C chains of k base updates then m instanton jumps per step, as a chain sampler
    (:mod:`latticeflow.mcmc.driver`): the kernel ``Composite([base] * k + [jump] * m)`` run
    by the chain runner (:class:`~latticeflow.mcmc.chains.KernelChains`).

    ``base`` is an :class:`HMC` (:class:`HMCJumpChains`: one trajectory per update; a fresh
    start thermalises with HMC alone and tunes its step size, then freezes it, as
    :class:`~latticeflow.mcmc.hmc_chains.HMCChains` does) or any kernel, e.g. a heat bath
    (:class:`JumpChains`: a fresh start runs ``thermalization`` steps of the whole kernel).
    ``options``: ``thermalization``, ``start`` (``"hot"``/``"cold"``), ``seed``,
    ``store_configs``, ``progress``, ``device``, ``start_fields``, and ``tune`` for HMC.

    Columns ``(rows, C)``: ``accepted`` (the step's last base update: HMC's accept; a kernel's
    ``accepted`` where it reports one, else true); with HMC ``delta_h`` (its last trajectory)
    and the integrator's diagnostics (``cg_iterations``, summed over the step's trajectories);
    then ``jump_acceptance`` (fraction of the step's m jumps accepted), ``sector_change``
    (their total change of Q), ``jump_delta_s`` (ΔS of the step's last jump proposal: the
    weight column, ⟨e^{−ΔS}⟩ = 1) and with pseudofermions ``jump_cg_iterations`` (the most
    any of its jumps took).  The resume state is the fields, the generator and (HMC) the
    frozen integrator settings: a resumed run equals an uninterrupted one bit for bit.
    """
    if int(updates_per_step) < 1 or int(jumps_per_step) < 1:
        raise ValueError("need updates_per_step >= 1 and jumps_per_step >= 1")
    cls = HMCJumpChains if isinstance(base, HMC) else JumpChains
    return cls(theory, base, jump, n_chains, int(updates_per_step), int(jumps_per_step), **options)


def _jump_columns(jump: InstantonJump) -> list[str]:
    return ["jump_acceptance", "sector_change", "jump_delta_s", *jump.stat_names]


def _stacked(infos: list[dict], name: str) -> torch.Tensor:
    return torch.stack([i[name] for i in infos]).to(torch.float64)


def _jump_record(jump: InstantonJump, infos: list[dict]) -> dict[str, torch.Tensor]:
    """The jump columns of one step from the infos of its m jumps."""
    out = {"jump_acceptance": _stacked(infos, "jump_accepted").mean(0),
           "sector_change": _stacked(infos, "sector_change").sum(0),
           "jump_delta_s": infos[-1]["jump_delta_s"]}
    return out | {name: _stacked(infos, name).max(0).values for name in jump.stat_names}


class HMCJumpChains(HMCChains):
    """k HMC trajectories then m jumps per step (see :func:`jump_chains`)."""

    sampler = NAME
    weight_column = "jump_delta_s"

    def __init__(self, theory, hmc: HMC, jump: InstantonJump, n_chains: int, updates_per_step: int,
                 jumps_per_step: int, thermalization: int = 100, tune: bool = True, start: str = "hot",
                 seed: int = 0, store_configs: bool = True, progress: bool = True, device="cpu",
                 start_fields=None):
        self.jump, self.k, self.m = jump, updates_per_step, jumps_per_step
        kernel = Composite([HMCKernel(hmc)] * self.k + [jump] * self.m)
        super().__init__(theory, hmc, n_chains, thermalization, tune, start, seed, store_configs, progress,
                         device, start_fields, kernel)

    def columns(self) -> list[str]:
        return super().columns() + _jump_columns(self.jump)

    def record(self, state: KernelState, infos: list) -> dict:
        hmc = infos[: self.k]
        columns = {"accepted": hmc[-1]["accepted"], "delta_h": hmc[-1]["delta_h"]}
        columns |= {name: _stacked(hmc, name).sum(0) for name in self.hmc.md.stat_names}
        return columns | _jump_record(self.jump, infos[self.k :])

    def save_settings(self) -> dict:
        determinant = np.frombuffer(json.dumps(self.jump.determinant).encode(), dtype=np.uint8).copy()
        return super().save_settings() | {"jump_determinant": determinant}

    def load_settings(self, settings: dict) -> None:
        """HMC's settings and the jump's determinant; a file written before the determinant
        was saved continues as it was made (:data:`LEGACY_DETERMINANT`)."""
        super().load_settings(settings)
        saved = settings.get("jump_determinant")
        determinant = LEGACY_DETERMINANT if saved is None else json.loads(bytes(saved).decode())
        if determinant != self.jump.determinant:
            self.jump.set_determinant(determinant)

    def extra(self) -> dict:
        return super().extra() | {"updates_per_step": self.k, "jumps_per_step": self.m, "base": "hmc",
                                  "translate": self.jump.translate, "jump_determinant": self.jump.determinant}


class JumpChains(KernelChains):
    """k steps of a base kernel (e.g. a heat bath) then m jumps per step (see :func:`jump_chains`)."""

    def __init__(self, theory, base, jump: InstantonJump, n_chains: int, updates_per_step: int,
                 jumps_per_step: int, thermalization: int = 100, start: str = "hot", seed: int = 0,
                 store_configs: bool = True, progress: bool = True, device="cpu", start_fields=None):
        self.jump, self.k, self.m, self.base = jump, updates_per_step, jumps_per_step, base
        kernel = Composite([base] * self.k + [jump] * self.m)
        super().__init__(theory, kernel, n_chains, ["accepted", *_jump_columns(jump)], "jump_delta_s", NAME,
                         seed, thermalization, start, start_fields, store_configs, device, progress)

    def record(self, state: KernelState, infos: list) -> dict:
        accepted = infos[self.k - 1].get("accepted")
        if accepted is None:
            accepted = torch.ones(state.x.shape[0], dtype=torch.bool, device=state.x.device)
        return {"accepted": accepted} | _jump_record(self.jump, infos[self.k :])

    def extra(self) -> dict:
        extra = {"thermalization": self.thermalization, "updates_per_step": self.k, "jumps_per_step": self.m,
                 "base": type(self.base).__name__, "translate": self.jump.translate}
        return extra | ({"start": self.start_fields.record} if self.start_fields is not None else {})
