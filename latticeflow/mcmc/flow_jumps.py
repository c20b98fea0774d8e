"""Annealed and flow-assisted instanton jumps: an instanton jump (:mod:`latticeflow.mcmc.jumps`)
followed by a short non-equilibrium transport that lets the gauge field relax towards the
new sector, accepted on its work (non-equilibrium candidate Monte Carlo, Nilmeier et al.,
PNAS 108 (2011) E1009; cf. arXiv:2402.06561 for the lattice transports).

The move (C chains at once, each with its own draws)
----------------------------------------------------
Draw q = ±1, a centre a (as the plain jump does) and a direction d ∈ {forward, backward},
each with probability ½; J(x) = x + s, s = ``instanton_shift(q, a)`` (a translation of the
link angles: volume preserving, J⁻¹ = the shift of −q).  With S_eff the marginal action of
the links (Schwinger: S_gauge − log det D†D, the exact dense determinant; pure U(1): S_gauge)
and λ_n = n/N, the intermediate actions are

    S_λ(x) = (1 − λ) S_eff(x) + λ S_eff(J x),       force (1 − λ) F(x) + λ F(J x).

T_λ is one HMC trajectory of S_λ at a fixed step size (reversible w.r.t. e^{−S_λ}); f_n
(optional) are invertible maps with log|det ∂f_n/∂x| = ld_n.

- forward from U: x_0 = U; for n = 1 … N: W += S_{λ_n}(x_{n−1}) − S_{λ_{n−1}}(x_{n−1}); y_n =
  f_n(x_{n−1}), W += S_{λ_n}(y_n) − S_{λ_n}(x_{n−1}) − ld_n(x_{n−1}); x_n = T_{λ_n}(y_n).
  Proposal U′ = J x_N.
- backward from U: x_N = J⁻¹U; for n = N … 1: y_n = T_{λ_n}(x_n); x_{n−1} = f_n⁻¹(y_n),
  W += S_{λ_n}(x_{n−1}) − S_{λ_n}(y_n) + ld_n(x_{n−1}); W += S_{λ_{n−1}}(x_{n−1}) − S_{λ_n}(x_{n−1}).
  Proposal U′ = x_0.

Accept with min(1, e^{−W}).  N = 0 is the plain jump: W = S_eff(J U) − S_eff(U) forward,
S_eff(J⁻¹U) − S_eff(U) backward.

Why it is exact
---------------
Summing the increments, the forward work is W = S_eff(U′) − S_eff(U) − Q − Σ_n ld_n with the
heat Q = Σ_n [S_{λ_n}(x_n) − S_{λ_n}(y_n)] (S_{λ_N}(x_N) = S_eff(J x_N) = S_eff(U′), S_{λ_0} =
S_eff).  The backward move of the same (q, a) from U′ starts at J⁻¹U′ = x_N and, where its
updates draw the reverse transitions x_n → y_n, visits y_n, x_{n−1}, … in reverse and ends
at U, with the backward work −W (each increment is the negative of a forward one).  T_λ
obeys detailed balance, T_λ(y → x) e^{−S_λ(y)} = T_λ(x → y) e^{−S_λ(x)}, so the forward path
has probability Π_n T_{λ_n}(y_n → x_n) = e^{−Q} Π_n T_{λ_n}(x_n → y_n), e^{−Q} times that of
its reverse; the maps change the path's volume element by Π_n e^{ld_n} (J and the draws
of q, a, d are volume preserving and symmetric: (q, a, forward) and (q, a, backward) each
have probability 1/(8V)).  Hence

    e^{−S_eff(U)} P(U → path → U′) / (e^{−S_eff(U′)} P(U′ → reverse → U)) = e^{−W},

and min(1, e^{−W}) satisfies detailed balance pair by pair: for any maps, any fixed step
size and any N (the chain's state is the links alone: the transport's momenta are drawn and
discarded inside it, its intermediate fields are not kept).  Without maps the two
directions are equivalent in distribution; the direction is drawn anyway (one code path).
Equilibrium starts give ⟨e^{−W}⟩ = 1 (Crooks; the free-energy difference of J is zero).

The transport always uses the exact determinant (force from the dense inverse of D, action
from the dense Schur complement), whatever ``[hmc] fermions`` the base chain integrates:
pseudofermions would need φ carried through J and every λ, and W needs S_eff exactly anyway.
That limits it to V ≤ :data:`~latticeflow.mcmc.jumps.EXACT_MAX_VOLUME`.

Columns of :class:`AnnealedJumpChains` (per step of k base trajectories and m moves):
``accepted``, ``delta_h`` (the base's last trajectory), ``jump_acceptance`` (fraction of the
m moves accepted), ``sector_change`` (their total ΔQ), ``jump_work`` (W of the last move, the
weight column, ⟨e^{−W}⟩ = 1), ``jump_forward`` (fraction of forward moves) and, for N ≥ 1,
``jump_update_acceptance`` (the transports' HMC acceptance).
"""

from __future__ import annotations

import torch

from ..theories.u1 import topological_charge
from .accept import metropolis
from .hmc import HMC
from .hmc_chains import HMCChains
from .jumps import EXACT_MAX_VOLUME, instanton_shift, jump_problem
from .kernels import Composite, HMCKernel, KernelState

__all__ = ["effective_action", "transport_problem", "JumpInterpolation", "TransportHMC", "AnnealedJump",
           "AnnealedJumpChains"]

F64 = torch.float64


def transport_problem(theory) -> str | None:
    """Why annealed jumps cannot sample ``theory`` (one line), or None: 2D U(1) or the
    Schwinger model with V ≤ EXACT_MAX_VOLUME (the transport's determinant is dense)."""
    problem = jump_problem(theory)
    if problem is None and getattr(theory, "has_fermions", False) and theory.volume > EXACT_MAX_VOLUME:
        problem = (f"the transport of an annealed jump uses the exact (dense) determinant, implemented up to "
                   f"{EXACT_MAX_VOLUME} sites; this lattice has {theory.volume}")
    return problem


def effective_action(theory, x: torch.Tensor) -> torch.Tensor:
    """S_eff ``(batch,)`` float64: S_gauge − log det(D†D) (exact: ``Schwinger.log_det``) with fermions, else the action."""
    if getattr(theory, "has_fermions", False):
        return theory.gauge_action(x.to(F64)) - theory.log_det(x)
    return theory.action(x).to(F64)


class JumpInterpolation:
    """S_λ(x) = (1 − λ) S_eff(x) + λ S_eff(x + s) as a theory HMC integrates (``action``,
    ``force``, ``field_space``); per chain λ ``(C,)`` and shift s ``(C, 2, L₀, L₁)`` (:meth:`set`).
    A term whose coefficient is 0 is not evaluated (λ = 1: S_eff(J x) only)."""

    def __init__(self, theory):
        self.theory, self.field_space = theory, theory.field_space
        self.shift = self.lam = None

    @property
    def field_shape(self):
        return self.theory.field_shape

    def set(self, shift: torch.Tensor, lam: torch.Tensor) -> None:
        self.shift, self.lam = shift, lam.to(F64)

    def _combine(self, x: torch.Tensor, evaluate) -> torch.Tensor:
        lam = self.lam.to(x.device)
        i, j = torch.nonzero(lam < 1).flatten(), torch.nonzero(lam > 0).flatten()
        values = evaluate(torch.cat([x[i], x[j] + self.shift[j].to(x.dtype)]))
        weight = torch.cat([1 - lam[i], lam[j]]).view(-1, *([1] * (values.dim() - 1))).to(values.dtype)
        out = torch.zeros((x.shape[0], *values.shape[1:]), dtype=values.dtype, device=values.device)
        return out.index_add(0, torch.cat([i, j]), weight * values)

    def action(self, x: torch.Tensor) -> torch.Tensor:
        return self._combine(x, lambda y: effective_action(self.theory, y))

    def force(self, x: torch.Tensor) -> torch.Tensor:
        return self._combine(x, self.theory.force)


class TransportHMC:
    """T_λ: one HMC trajectory of S_λ (:class:`JumpInterpolation`) per chain at a fixed step
    size; ``update(x, shift, lam, generator) -> (x, accepted)``.  :meth:`follow` takes the
    integrator of another (frozen) HMC, e.g. the base chain's after its tuning."""

    def __init__(self, theory, integrator: str = "omelyan", trajectory_length: float = 1.0, steps: int = 4):
        self.interpolation = JumpInterpolation(theory)
        self.hmc = HMC(self.interpolation, integrator=integrator, trajectory_length=trajectory_length, steps=steps)

    def follow(self, hmc: HMC) -> None:
        """Integrate as ``hmc`` does (its integrator, trajectory length, step size, steps)."""
        h = self.hmc
        h.integrator, h.trajectory_length, h.step_size, h.steps = (hmc.integrator, hmc.trajectory_length,
                                                                   hmc.step_size, hmc.steps)

    def settings(self) -> dict:
        h = self.hmc
        return {"integrator": h.integrator, "trajectory_length": h.trajectory_length, "step_size": h.step_size,
                "steps": h.steps}

    def __call__(self, x: torch.Tensor, shift: torch.Tensor, lam: torch.Tensor, generator: torch.Generator):
        self.interpolation.set(shift, lam)
        x, accepted, _ = self.hmc.trajectory(x, generator)
        return x, accepted


class AnnealedJump:
    """One annealed (N ≥ 1) or plain (N = 0) jump per chain, with optional maps (module
    docstring); the kernel contract, vectorised over C chains.

    Arguments:
        theory: 2D U(1) or the Schwinger model (V ≤ EXACT_MAX_VOLUME); else a ValueError.
        steps: N, the transport's updates (0: the plain instanton jump).
        update: T_λ, ``update(x, shift, lam, generator) -> (x, accepted)``; default
            :class:`TransportHMC` of the theory (4 Omelyan steps, τ = 1).
        maps: None or N maps ``f(x) -> (y, ld)`` with ``f.inverse(y) -> (x, −ld)`` (e.g. the
            :class:`~latticeflow.flows.defect_flow.DefectMap` of a flow's couplings on the
            whole lattice).

    Info per chain: ``jump_accepted``, ``jump_work`` (W, float64), ``jump_q``, ``jump_forward``
    (bool), ``sector_change`` (ΔQ, 0 where rejected), ``jump_update_acceptance`` (N ≥ 1).
    """

    def __init__(self, theory, steps: int, update=None, maps=None):
        problem = transport_problem(theory)
        if problem:
            raise ValueError(problem)
        if int(steps) != steps or steps < 0:
            raise ValueError(f"an annealed jump needs N >= 0 transport steps (got {steps})")
        if maps is not None and len(maps) != steps:
            raise ValueError(f"need one map per transport step ({steps}), got {len(maps)}")
        self.theory, self.steps, self.maps = theory, int(steps), maps
        self.update = update if update is not None else TransportHMC(theory)

    def draw(self, c: int, generator: torch.Generator):
        """``(q, centre, forward)`` of C moves, drawn on the CPU in this order."""
        q = 2 * torch.randint(0, 2, (c,), generator=generator) - 1
        centre = torch.stack([torch.randint(0, n, (c,), generator=generator) for n in self.theory.shape], 1)
        return q, centre, torch.randint(0, 2, (c,), generator=generator) == 1

    def _pair(self, x: torch.Tensor, shift: torch.Tensor):
        """(S_eff(x), S_eff(x + s)) of the chains given."""
        both = effective_action(self.theory, torch.cat([x, x + shift]))
        return both[: x.shape[0]], both[x.shape[0]:]

    def _mapped(self, f, x, shift, lam, pair):
        """(y, ΔW) of a map at λ: S_λ(y) − S_λ(x) − ld, and the pair of y."""
        y, ld = f(x)
        new = self._pair(y, shift)
        dw = (1 - lam) * (new[0] - pair[0]) + lam * (new[1] - pair[1]) - ld.to(F64)
        return y, dw, new

    def transport(self, x: torch.Tensor, q: torch.Tensor, centre: torch.Tensor, forward: torch.Tensor,
                  generator: torch.Generator):
        """``(U′, W, update acceptance or None)`` of the moves (q, centre, forward) from ``x``
        ``(C, 2, L₀, L₁)``.  Differentiable in the maps' parameters where gradients are on
        (the updates are detached)."""
        device, n = x.device, max(self.steps, 1)
        forward = forward.to(device)
        shift = instanton_shift(self.theory.shape, q.to(device), centre.to(device), x.dtype)
        fwd, bwd = torch.nonzero(forward).flatten(), torch.nonzero(~forward).flatten()
        x = torch.where(forward.view(-1, 1, 1, 1), x, x - shift)
        work, accepted = torch.zeros(x.shape[0], dtype=F64, device=device), []
        for k in range(1, n + 1):
            if fwd.numel():  # forward: switch λ_{k−1} → λ_k, then the map f_k
                xf, sf = x[fwd], shift[fwd]
                pair = self._pair(xf, sf)
                work = work.index_add(0, fwd, (pair[1] - pair[0]) / n)
                if self.maps is not None:
                    y, dw, _ = self._mapped(self.maps[k - 1], xf, sf, k / n, pair)
                    work, x = work.index_add(0, fwd, dw), x.index_copy(0, fwd, y)
            if self.steps:
                lam = torch.where(forward, k / n, (n + 1 - k) / n).to(F64)
                x, acc = self.update(x.detach(), shift, lam, generator)
                accepted.append(acc.to(F64))
            if bwd.numel():  # backward, at m = N + 1 − k: the inverse map f_m⁻¹, then λ_m → λ_{m−1}
                m, xb, sb = n + 1 - k, x[bwd], shift[bwd]
                pair = self._pair(xb, sb)
                if self.maps is not None:
                    xb, dw, pair = self._mapped(self.maps[m - 1].inverse, xb, sb, m / n, pair)
                    work, x = work.index_add(0, bwd, dw), x.index_copy(0, bwd, xb)
                work = work.index_add(0, bwd, (pair[0] - pair[1]) / n)
        proposal = torch.where(forward.view(-1, 1, 1, 1), x + shift, x)
        return proposal, work, (torch.stack(accepted).mean(0) if accepted else None)

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        q, centre, forward = self.draw(x.shape[0], generator)
        with torch.no_grad():
            proposal, work, update_acceptance = self.transport(x, q, centre, forward, generator)
            log_u = torch.log(torch.rand(x.shape[0], dtype=F64, generator=generator)).to(x.device)
            accept = metropolis(-work, log_u)  # NaN: rejected
            proposal = self.theory.field_space.project(proposal)
            x_new = torch.where(accept.view(-1, 1, 1, 1), proposal, x)
            change = torch.round(topological_charge(proposal) - topological_charge(x))
            change = torch.where(accept, change, torch.zeros_like(change))
        info = {"jump_accepted": accept, "jump_work": work, "jump_q": q.to(x.device),
                "jump_forward": forward.to(x.device), "sector_change": change}
        if update_acceptance is not None:
            info["jump_update_acceptance"] = update_acceptance
        return KernelState(x_new), info


def _stacked(infos: list[dict], name: str) -> torch.Tensor:
    return torch.stack([i[name] for i in infos]).to(F64)


class AnnealedJumpChains(HMCChains):
    """k HMC trajectories of the theory, then m annealed jumps, per step (module docstring).

    A fresh start thermalises with HMC alone, tuning its step size (``tune``), which is then
    frozen; with ``follow`` the transports integrate with that frozen integrator too (else
    with their own fixed settings).  The resume state is the fields, the generator and the
    HMC settings: a resumed run equals an uninterrupted one bit for bit.

    Arguments:
        theory, hmc, n_chains: the theory, its base :class:`HMC`, C.
        jump: an :class:`AnnealedJump` (its ``update`` a :class:`TransportHMC` where ``follow``).
        updates_per_step, jumps_per_step: k, m (≥ 1).
        name: the ensemble's ``sampler`` attribute.
        **options: ``thermalization``, ``tune``, ``start``, ``seed``, ``store_configs``,
            ``progress``, ``device``, ``start_fields`` (as :class:`HMCChains`).
    """

    weight_column = "jump_work"

    def __init__(self, theory, hmc: HMC, jump: AnnealedJump, n_chains: int, updates_per_step: int = 1,
                 jumps_per_step: int = 1, follow: bool = True, name: str = "annealed-jump", **options):
        if int(updates_per_step) < 1 or int(jumps_per_step) < 1:
            raise ValueError("need updates_per_step >= 1 and jumps_per_step >= 1")
        self.jump, self.k, self.m, self.follow, self.sampler = jump, int(updates_per_step), int(jumps_per_step), \
            bool(follow), name
        kernel = Composite([HMCKernel(hmc)] * self.k + [jump] * self.m)
        super().__init__(theory, hmc, n_chains, kernel=kernel, **options)
        self._follow()

    def _follow(self) -> None:
        if self.follow:
            self.jump.update.follow(self.hmc)

    def columns(self) -> list[str]:
        own = ["jump_acceptance", "sector_change", "jump_work", "jump_forward"]
        return super().columns() + own + (["jump_update_acceptance"] if self.jump.steps else [])

    def record(self, state: KernelState, infos: list) -> dict:
        hmc, jumps = infos[: self.k], infos[self.k:]
        columns = {"accepted": hmc[-1]["accepted"], "delta_h": hmc[-1]["delta_h"]}
        columns |= {name: _stacked(hmc, name).sum(0) for name in self.hmc.md.stat_names}
        columns |= {"jump_acceptance": _stacked(jumps, "jump_accepted").mean(0),
                    "sector_change": _stacked(jumps, "sector_change").sum(0),
                    "jump_work": jumps[-1]["jump_work"], "jump_forward": _stacked(jumps, "jump_forward").mean(0)}
        if self.jump.steps:
            columns["jump_update_acceptance"] = _stacked(jumps, "jump_update_acceptance").mean(0)
        return columns

    def thermalize(self, x: torch.Tensor, callback) -> torch.Tensor:
        x = super().thermalize(x, callback)
        self._follow()
        return x

    def load_settings(self, settings: dict) -> None:
        super().load_settings(settings)
        self._follow()

    def extra(self) -> dict:
        transport = self.jump.update.settings() if hasattr(self.jump.update, "settings") else None
        return super().extra() | {"updates_per_step": self.k, "jumps_per_step": self.m, "base": "hmc",
                                  "jump_steps": self.jump.steps, "maps": self.jump.maps is not None,
                                  "transport_hmc": transport}
