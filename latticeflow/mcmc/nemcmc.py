"""Non-equilibrium MCMC (NE-MCMC) with a defect: Metropolis on the work of transports from a
theory whose topology does not freeze (arXiv:2402.06561, arXiv:2412.00200, arXiv:2510.25704).

Conventions
-----------
- The defect and its protocol are :mod:`latticeflow.theories.defect`: S_c = −β Σ_x K_c(x)
  cos θ_P(x) (gauge part only for the Schwinger model), c_0 = 0 ≤ … ≤ c_N = 1.
- One transport (:class:`Transport`) of C chains at once from c = 0 fields U: W = 0; for
  n = 1 … N: W += S_{c_n}[U] − S_{c_{n−1}}[U] = −β (c_n − c_{n−1}) Σ_{defect} cos θ_P, then
  one update that leaves e^{−S_{c_n}} invariant (a heat-bath sweep with couplings β K_{c_n},
  :class:`HeatbathUpdate`, or an HMC trajectory of S_{c_n}, :class:`HMCUpdate`; the fermion
  determinant of the Schwinger model is unchanged by c, so it cancels in W).  Jarzynski
  (Phys. Rev. Lett. 78 (1997) 2690): ⟨e^{−W}⟩ over starts from e^{−S_0} is Z_1/Z_0, and an
  end point weighted by e^{−W} is a sample of e^{−S_1}.  Hook for stochastic normalizing
  flows: ``maps[n]`` (one per step, default none) moves U by an invertible map f_n with
  log|det J_n| before update n, and W += S_{c_n}[f_n(U)] − S_{c_{n−1}}[U] − log|det J_n|.
- The chain (:class:`NonEquilibriumKernel`): each step proposes the end point U′ of a fresh
  transport and accepts it with min(1, e^{−(W′ − W)}), W the work of the current end point.
  Its starts:

  * :class:`ExactStarts` (pure U(1)): exact, independent c = 0 draws
    (:func:`~latticeflow.theories.defect.draw_defect_links`).  Then this is independence
    Metropolis with proposal density q(path) and weight e^{−W}: exact.
  * :class:`ChainStarts` (Schwinger): the new start is ``prior_updates`` HMC trajectories at
    c = 0 from the start of the chain's *current* path (kept on a rejection).  Exact too:
    on the space of whole paths X = (U_0 … U_N) the target is P(X) ∝ e^{−S_0[U_0]} Π_n
    T_n(U_{n−1} → U_n) e^{−W(X)} (its end point follows e^{−S_1}), the proposal draws U_0′
    from K(U_0 → U_0′) and then the transport, and the Metropolis–Hastings ratio is
    e^{−S_0[U_0′]} K(U_0′ → U_0) e^{−W′} / (e^{−S_0[U_0]} K(U_0 → U_0′) e^{−W}) = e^{−(W′−W)}
    *because* K (HMC with fresh momenta and pseudofermions, any number of trajectories) is
    reversible with respect to e^{−S_0}.  What exactness requires: a reversible K at a fixed
    step size (never tuned inside), updates invariant under each e^{−S_{c_n}}, and the start
    taken from the current path — a separate c = 0 chain that runs on regardless of the
    accept/reject would correlate the proposals with the current state and bias the
    chain, even in equilibrium.  Starts so made are a Markov chain, not independent: the
    proposals' weights then have an autocorrelation of their own.

- :class:`NEMCMCChains`: C chains of the kernel as a chain sampler (the runner
  :class:`~latticeflow.mcmc.chains.KernelChains`); per row ``accepted``, ``log_weight``
  (−W of the current end point), ``proposal_log_weight`` (−W′ of the step's proposal),
  ``sector_change`` (Q(end) − Q(start) of that transport), ``update_acceptance`` (HMC
  updates: the fraction accepted in the transport), ``prior_acceptance`` (chain starts).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch

from ..devices import to_numpy
from ..ensemble.format import Weighting
from ..errors import ConfigError, LatticeflowError
from ..theories.defect import (Protocol, defect_couplings, defect_energy, defect_problem, draw_defect_links,
                               free_energy_difference, with_defect)
from ..theories.u1 import U1
from ..theories.u1 import topological_charge
from .accept import metropolis
from .chains import KernelChains
from .kernels import KernelState

__all__ = ["Transport", "HeatbathUpdate", "HMCUpdate", "ExactStarts", "ChainStarts", "NonEquilibriumKernel",
           "NEMCMCChains", "transport_parts", "transport_record"]

F64 = torch.float64

class HeatbathUpdate:
    """One heat-bath sweep (and ``overrelaxation`` overrelaxation sweeps) of pure U(1) with
    the couplings β K_c (:class:`~latticeflow.mcmc.heatbath.HeatbathKernel` with
    ``plaquette_beta``, one kernel per distinct c)."""

    def __init__(self, defect_theory, overrelaxation: int = 0):
        from .heatbath import HeatbathKernel

        self.defect, self.overrelaxation, self.kernels = defect_theory, int(overrelaxation), {}
        self.base = U1(defect_theory.shape, defect_theory.beta)
        self._make = HeatbathKernel

    def __call__(self, x: torch.Tensor, c: float, generator: torch.Generator):
        if c not in self.kernels:
            beta_p = self.defect.beta * defect_couplings(self.defect.shape, c, self.defect.defect_length)
            self.kernels[c] = self._make(self.base, self.overrelaxation, beta_p[None])
        return self.kernels[c].step(KernelState(x), generator)[0].x, None


class HMCUpdate:
    """One HMC trajectory of S_c (the defect theory at c; its frozen step size)."""

    def __init__(self, hmc):
        self.hmc, self.defect = hmc, hmc.theory

    def __call__(self, x: torch.Tensor, c: float, generator: torch.Generator):
        self.defect.set_c(c)
        x, accepted, _ = self.hmc.trajectory(x, generator)
        return x, accepted


class Transport:
    """``transport(U0, generator) -> (U, W, info)``: C chains from c = 0 to c = 1 at once
    (module docstring); ``U0``, ``U`` ``(C, 2, L_0, L_1)``, W ``(C,)`` float64, info
    ``sector_change`` and (HMC) ``update_acceptance``, each ``(C,)``.

    Arguments:
        defect_theory: :func:`~latticeflow.theories.defect.with_defect` of the theory.
        protocol: a :class:`~latticeflow.theories.defect.Protocol`.
        update: ``update(x, c, generator) -> (x, accepted or None)`` (:class:`HeatbathUpdate`,
            :class:`HMCUpdate`), leaving e^{−S_c} invariant.
        maps: None, or N maps ``f(x) -> (y, log|det J|)`` (the hook of stochastic flows).
    """

    def __init__(self, defect_theory, protocol, update, maps=None):
        if maps is not None and len(maps) != protocol.steps:
            raise ValueError(f"need one map per protocol step ({protocol.steps}), got {len(maps)}")
        self.defect, self.protocol, self.update, self.maps = defect_theory, protocol, update, maps

    def _action(self, x: torch.Tensor, c: float) -> torch.Tensor:
        self.defect.set_c(c)
        return self.defect.action(x).to(F64)

    def __call__(self, x: torch.Tensor, generator: torch.Generator):
        c = self.protocol.values
        beta, mask = self.defect.beta, self.defect.defect
        q0, work, accepted = topological_charge(x), torch.zeros(x.shape[0], dtype=F64, device=x.device), []
        with torch.no_grad():
            for n in range(1, len(c)):
                if self.maps is None:
                    work += -beta * (c[n] - c[n - 1]) * defect_energy(x, mask)
                else:
                    y, log_det = self.maps[n - 1](x)
                    work += self._action(y, c[n]) - self._action(x, c[n - 1]) - log_det.to(F64)
                    x = y
                x, acc = self.update(x, c[n], generator)
                if acc is not None:
                    accepted.append(acc.to(F64))
        info = {"sector_change": torch.round(topological_charge(x) - q0)}
        if accepted:
            info["update_acceptance"] = torch.stack(accepted).mean(0)
        return x, work, info


class ExactStarts:
    """Exact, independent c = 0 fields of pure U(1) with the defect, drawn in numpy from a
    seed taken from the chains' generator (so a resume draws the same ones)."""

    def __init__(self, defect_theory, device="cpu"):
        self.beta_p = defect_theory.beta * (~defect_theory.defect).to(F64).numpy()  # β K_0
        self.device, self.dtype = torch.device(device), defect_theory.field_dtype

    def propose(self, n: int, generator: torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        x = draw_defect_links(self.beta_p, n, np.random.default_rng(seed))
        return torch.from_numpy(x).to(device=self.device, dtype=self.dtype), {}

    def commit(self, accept: torch.Tensor) -> None:
        pass


class ChainStarts:
    """c = 0 starts from ``updates`` HMC trajectories (a reversible kernel, fixed step size)
    from the start of each chain's current path (module docstring); ``current`` ``(C, …)``."""

    def __init__(self, hmc, updates: int = 1):
        self.hmc, self.defect, self.updates = hmc, hmc.theory, int(updates)
        self.current = self.proposed = None

    def propose(self, n: int, generator: torch.Generator):
        self.defect.set_c(0.0)
        x, accepted = self.current, 0
        for _ in range(self.updates):
            x, acc, _ = self.hmc.trajectory(x, generator)
            accepted = accepted + acc.to(F64)
        self.proposed = x
        return x, {"prior_acceptance": accepted / self.updates}

    def commit(self, accept: torch.Tensor) -> None:
        mask = accept.view(-1, *([1] * (self.current.dim() - 1)))
        self.current = torch.where(mask, self.proposed, self.current)


class NonEquilibriumKernel:
    """One NE-MCMC step per chain (kernel contract): a transport from ``starts``, accepted
    with min(1, e^{−(W′ − W)}); ``state.log_weight`` = −W of the current end points (None:
    no end point yet, the proposal is accepted).  Not to be composed after kernels that move
    the fields: W belongs to the end point its transport made.  Info: ``accepted``,
    ``proposal_log_weight``, the transport's and the starts'."""

    def __init__(self, transport: Transport, starts):
        self.transport, self.starts = transport, starts

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        log_u = torch.log(torch.rand(x.shape[0], dtype=F64, generator=generator)).to(x.device)
        current = state.log_weight
        if current is None:
            current = torch.full((x.shape[0],), -torch.inf, dtype=F64, device=x.device)
        x0, info = self.starts.propose(x.shape[0], generator)
        end, work, transport_info = self.transport(x0, generator)
        accept = metropolis(-work - current, log_u)
        self.starts.commit(accept)
        x = torch.where(accept.view(-1, *([1] * (x.dim() - 1))), end, x)
        log_w = torch.where(accept, -work, current)
        return KernelState(x, log_w), {"accepted": accept, "proposal_log_weight": -work, **transport_info, **info}


class _CarriedWeights:
    """The kernel with the chains' log w carried from one step to the next (the runner hands
    each step its fields only); ``log_weight`` is part of the chains' resume state."""

    def __init__(self, kernel: NonEquilibriumKernel):
        self.kernels, self.log_weight = [kernel], None

    def step(self, state: KernelState, generator: torch.Generator):
        given = state.log_weight if state.log_weight is not None else self.log_weight
        state, info = self.kernels[0].step(KernelState(state.x, given), generator)
        self.log_weight = state.log_weight
        return state, info


class NEMCMCChains(KernelChains):
    """C NE-MCMC chains as a chain sampler (module docstring).

    A fresh start: with an HMC (``hmc``) and ``tune``, ``thermalization`` trajectories at
    c = 1 from a hot start tune its step size, which is then frozen; with chain starts,
    ``thermalization`` trajectories at c = 0 thermalise the first starts; then the first
    end points are a transport's (accepted).  Seeded by ``seed``; resumed bit for bit (the
    fields, the generator, log w, the starts of the current paths and the HMC settings).

    Arguments:
        theory: the theory sampled (its observables are measured).
        kernel: a :class:`NonEquilibriumKernel`.
        n_chains: C.
        hmc: the :class:`~latticeflow.mcmc.hmc.HMC` of the updates or starts, or None.
        record: ``{name: value}`` for the file's ``extra`` (e.g. the exact ΔF).
    """

    def __init__(self, theory, kernel: NonEquilibriumKernel, n_chains: int, hmc=None, tune: bool = False,
                 seed: int = 0, thermalization: int = 0, store_configs: bool = True, device="cpu",
                 progress: bool = False, name: str = "ne-mcmc", record: dict | None = None):
        self.ne, self.hmc, self.tune, self.record_extra = kernel, hmc, bool(tune), dict(record or {})
        columns = ["accepted", "log_weight", "proposal_log_weight", "sector_change"]
        columns += ["update_acceptance"] if isinstance(kernel.transport.update, HMCUpdate) else []
        columns += ["prior_acceptance"] if isinstance(kernel.starts, ChainStarts) else []
        super().__init__(theory, _CarriedWeights(kernel), n_chains, columns, "log_weight", name, seed,
                         thermalization, "hot", None, store_configs, device, progress)
        self.weights = Weighting("log_weight", proposals=True)  # an exact chain; the proposals give the ESS

    def _tunes(self) -> bool:
        return self.hmc is not None and self.tune

    def initial_field(self) -> torch.Tensor:
        """A hot start where an HMC is tuned or chain starts thermalise, else cold links
        (never used: the first end points are a transport's)."""
        if self._tunes() or isinstance(self.ne.starts, ChainStarts):
            return super().initial_field()
        return self.theory.cold_field(self.n_chains).to(self.device)

    def thermalize(self, x: torch.Tensor, callback) -> torch.Tensor:
        defect = self.ne.transport.defect
        if self._tunes():
            defect.set_c(1.0)
            x = self.hmc.thermalize(x, self.thermalization, self.generator, tune=True, callback=callback)
        if isinstance(self.ne.starts, ChainStarts):
            defect.set_c(0.0)
            x = self.hmc.thermalize(x, self.thermalization, self.generator, tune=False, callback=callback)
            self.ne.starts.current = x
        self.kernel.log_weight = None
        return self.kernel.step(KernelState(x), self.generator)[0].x

    def check(self, mcmc: dict, rows: int) -> None:
        if not np.isfinite(mcmc["proposal_log_weight"]).any():
            raise LatticeflowError(f"{self.sampler}: every transport of this block ({rows} steps of each chain) "
                                   "had a non-finite work; nothing of this block was written")

    def save_settings(self) -> dict:
        settings = {}
        if self.hmc is not None:
            hmc_state = json.dumps(self.hmc.state_dict()).encode()
            settings |= {"hmc": np.frombuffer(hmc_state, dtype=np.uint8).copy(),
                         "reunitarize_count": np.array(self.hmc._count)}
        if isinstance(self.ne.starts, ChainStarts):
            settings["start_field"] = to_numpy(self.ne.starts.current)
        return settings

    def load_settings(self, settings: dict) -> None:
        if self.hmc is not None:
            self.hmc.load_state_dict(json.loads(bytes(settings["hmc"]).decode()))
            self.hmc._count = int(settings["reunitarize_count"])
        if isinstance(self.ne.starts, ChainStarts):
            self.ne.starts.current = torch.from_numpy(np.asarray(settings["start_field"])).to(self.device)

    def start(self, state) -> None:
        super().start(state)
        if state:
            if state.log_weight is None:
                raise ValueError("the resume state holds no log weights of the chains' end points")
            self.kernel.log_weight = torch.from_numpy(np.asarray(state.log_weight, dtype=np.float64)).to(self.device)

    def state(self):
        state = super().state()
        state.log_weight = to_numpy(self.kernel.log_weight)
        return state

    def extra(self) -> dict:
        extra = {"jarzynski": self.record_extra, "thermalization": self.thermalization}
        return extra | ({"hmc": self.hmc.state_dict()} if self.hmc is not None else {})


#: ``protocol_update = "auto"``: a heat bath for pure U(1), HMC with fermions; whether an update is a heat bath
_AUTO = {False: "heatbath", True: "hmc"}
_HEAT_BATH = {"heatbath": True, "hmc": False}


def _schedule(sample) -> Protocol:
    """The protocol of the ``[sample]`` keys: ``protocol`` where given, else linear in
    ``protocol_steps``; a ConfigError for a bad table."""
    if sample.protocol is None:
        return Protocol.linear(sample.protocol_steps)
    try:
        return Protocol(sample.protocol)
    except ValueError as exc:
        raise ConfigError(f"sample.protocol: {exc}") from None


def transport_parts(theory, sample, hmc_config, device="cpu") -> SimpleNamespace:
    """The pieces of a defect transport from the ``[sample]`` keys of the ``ne-mcmc`` (or
    ``snf``) sampler and ``[hmc]``: ``defect``, ``protocol``, ``update``, ``starts``, ``hmc`` (None
    for heat bath with exact starts), ``kind`` (heatbath / hmc).  A ConfigError (one line) for a
    theory without the defect, a defect longer than L_1, a heat bath with fermions or a bad
    protocol.  Shared by the samplers and the work objective of training."""
    from .hmc import HMC

    s = sample
    problem = defect_problem(theory, s.defect_length)
    if problem:
        raise ConfigError(f"sample.defect_length: {problem}")
    protocol = _schedule(s)
    kind = _AUTO[theory.has_fermions] if s.protocol_update == "auto" else s.protocol_update
    heat_bath = _HEAT_BATH[kind]
    if heat_bath and theory.has_fermions:
        raise ConfigError(f"sample.protocol_update: heatbath updates pure U(1) only; the {theory.name} theory "
                          "has fermions (use hmc)")
    defect = with_defect(theory, s.defect_length)
    hmc = HMC.from_config(defect, hmc_config) if not heat_bath or theory.has_fermions else None
    update = HeatbathUpdate(defect, s.overrelaxation) if heat_bath else HMCUpdate(hmc)
    starts = ChainStarts(hmc, s.prior_updates) if theory.has_fermions else ExactStarts(defect, device)
    return SimpleNamespace(defect=defect, protocol=protocol, update=update, starts=starts, hmc=hmc, kind=kind)


def transport_record(theory, sample, parts) -> dict:
    """What a file of these transports records in ``extra["jarzynski"]``: the defect, the
    protocol, the update, the starts (``exact``: independent draws from e^{−S_0}, so that
    −log⟨e^{−W}⟩ over the proposals is Jarzynski's ΔF; ``chain``: a Markov chain of starts,
    for which it is not) and the exact ΔF where known (pure U(1))."""
    exact = isinstance(parts.starts, ExactStarts)
    return {"delta_f_exact": free_energy_difference(theory.shape, theory.beta, sample.defect_length)
            if exact else None,
            "defect_length": sample.defect_length, "protocol": list(parts.protocol.values),
            "protocol_update": parts.kind, "starts": "exact" if exact else "chain"}
