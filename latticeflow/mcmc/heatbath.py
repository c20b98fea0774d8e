"""Heat bath and overrelaxation for pure gauge theories: U(1) and SU(N) (N = 2, 3).

The update production pure-gauge codes run: every link is drawn from its exact conditional
distribution given the others (heat bath), then moved along its level set of the action
(overrelaxation, microcanonical).  Both leave p ∝ e^{−S} invariant link by link, so their
composition does; no accept/reject is needed (``accepted`` is always true).

Conventions
-----------
- Links as in :mod:`latticeflow.theories.u1` (angles ``(C, d, *lattice)`` float64) and
  :mod:`latticeflow.theories.sun` (``(C, d, *lattice, N, N)`` complex128).
- One :class:`HeatbathKernel` step = one heat-bath sweep over every link, then
  ``overrelaxation`` overrelaxation sweeps.
- A sweep visits the :class:`LinkSets` in order: for μ = 0 … d−1 the μ-links at the sites
  of one colour of the lattice coloured in the directions ν ≠ μ, colour
  ``Σ_{ν≠μ} c(x_ν) mod m`` with ``c(x) = x mod 2`` and m = 2 where every L_ν (ν ≠ μ) is
  even, else ``c(L_ν − 1) = 2`` on an odd extent and m = 3.  Neighbours x ± ν̂ (ν ≠ μ) always
  have another colour, and the staples of the μ-link at x hold μ-links only at x ± ν̂: no
  plaquette holds two links of a set, so its links are conditionally independent and are
  updated at once, vectorised over chains and sites (any d ≥ 2, any extents ≥ 2).
- Local action of a link, with A its weighted staple sum (``staple_terms``; SU(N) as in
  ``SUN.staples``): U(1) ``S = −Re(e^{iθ} A)``, ``A = Σ_P β_P e^{iR_P}`` (R_P the rest of
  plaquette P); SU(N) ``S = −Re tr(U W)``, ``W = Σ_P (β_P/N) × staple_P``.
- ``plaquette_beta``: a coupling per plaquette, ``(n_planes, *lattice)`` or
  ``(C, n_planes, *lattice)`` (planes in the order of :func:`latticeflow.lattice.planes`),
  instead of the uniform β: the kernel then samples S_c = −Σ_P β_P cos θ_P (U(1)) or
  −Σ_P (β_P/N) Re tr U_P (a defect action), not ``theory.action``.
- U(1) heat bath: θ = φ − arg A with φ ~ von Mises(|A|) (:func:`von_mises`);
  overrelaxation θ → −2 arg A − θ (the reflection that keeps cos(θ + arg A)).
- SU(N): Cabibbo–Marinari SU(2) subgroups with the Kennedy–Pendleton heat bath and the
  SU(2) reflection (:mod:`latticeflow.mcmc.sun_heatbath`).
- Random numbers are drawn on the CPU from the step's generator; the fields may live on
  any device.  Info: ``accepted`` (C,) all true, ``heatbath_tries`` (C,) the mean number of
  proposals per link (per link and subgroup for SU(N)) of the rejection samplers, ≥ 1.

References:
    M. Creutz, Phys. Rev. D 21 (1980) 2308 (heat bath);
    D. J. Best, N. I. Fisher, Appl. Statist. 28 (1979) 152 (von Mises sampling);
    N. Cabibbo, E. Marinari, Phys. Lett. B 119 (1982) 387;
    A. D. Kennedy, B. J. Pendleton, Phys. Lett. B 156 (1985) 393;
    M. Creutz, Phys. Rev. D 36 (1987) 515; F. R. Brown, T. J. Woch, Phys. Rev. Lett. 58
    (1987) 2394 (overrelaxation).

Example:
    >>> from latticeflow.theories import U1
    >>> theory = U1((4, 4), beta=2.0)
    >>> kernel = HeatbathKernel(theory, overrelaxation=1)
    >>> state, info = kernel.step(KernelState(theory.random_field(3)), torch.Generator().manual_seed(0))
    >>> state.x.shape, info["accepted"].tolist()
    (torch.Size([3, 2, 4, 4]), [True, True, True])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LatticeflowError
from ..groups import wrap_angle
from ..lattice import coordinates, planes, shift
from ..theories.sun import SUN, sun_action
from ..theories.u1 import U1, u1_action
from .chains import KernelChains
from .kernels import Composite, KernelState

__all__ = ["HeatbathKernel", "HeatbathChains", "LinkSets", "LinkSet", "heatbath_problem", "von_mises",
           "rejection_sample", "staple_terms", "u1_staple_sum"]

F64 = torch.float64
#: the ``mcmc/`` columns of :class:`HeatbathChains`
COLUMNS = ("accepted", "log_weight", "heatbath_tries")


def heatbath_problem(theory) -> str | None:
    """Why the heat bath cannot sample ``theory`` (one line), or None: it needs the Wilson
    action of pure U(1) or SU(N) gauge fields."""
    if getattr(theory, "has_fermions", False):
        return (f"the heat bath updates pure gauge fields; the {theory.name} theory has fermions "
                "(sample it with HMC)")
    if not isinstance(theory, (U1, SUN)):
        return f"the heat bath is implemented for U(1) and SU(N) gauge theories, not for the {theory.name} theory"
    if type(theory) in (U1, SUN):  # the Wilson action by construction: nothing to allocate
        return None
    x = theory.random_field(1, torch.Generator().manual_seed(0))  # a subclass: probe its action
    wilson = sun_action(x, theory.beta) if isinstance(theory, SUN) else u1_action(x, theory.beta)
    if not torch.allclose(theory.action(x), wilson, rtol=1e-12, atol=1e-9):
        return f"the {theory.name} theory's action is not the Wilson action the heat bath samples"
    return None


# --- the partition of the links ----------------------------------------------------------
@dataclass(frozen=True)
class Staple:
    """The two plaquettes of the (μ, ν) plane that hold the μ-links at ``sites``: flat site
    indices of x + μ̂, x + ν̂, x − ν̂ and x + μ̂ − ν̂ (each ``(n,)``) and the plane's index."""

    nu: int
    plane: int
    fwd_mu: torch.Tensor
    fwd_nu: torch.Tensor
    back_nu: torch.Tensor
    fwd_mu_back_nu: torch.Tensor


@dataclass(frozen=True)
class LinkSet:
    """The μ-links at ``sites`` (flat site indices ``(n,)``, row-major over the lattice) and
    the staples of each plane (μ, ν)."""

    mu: int
    sites: torch.Tensor
    staples: tuple[Staple, ...]

    def to(self, device) -> "LinkSet":
        move = lambda t: t.to(device)  # noqa: E731
        return LinkSet(self.mu, move(self.sites), tuple(
            Staple(s.nu, s.plane, move(s.fwd_mu), move(s.fwd_nu), move(s.back_nu), move(s.fwd_mu_back_nu))
            for s in self.staples))


def link_colours(shape, mu: int) -> tuple[torch.Tensor, int]:
    """The colour of every site for the μ-links ``(*shape)`` and the number of colours m
    (module docstring)."""
    x = coordinates(shape)
    others = [nu for nu in range(len(shape)) if nu != mu]
    m = 2 if all(shape[nu] % 2 == 0 for nu in others) else 3
    colour = torch.zeros(tuple(shape), dtype=torch.long)
    for nu in others:
        c = x[nu] % 2
        if shape[nu] % 2:
            c = torch.where(x[nu] == shape[nu] - 1, 2, c)
        colour += c
    return colour % m, m


class LinkSets:
    """The links of a lattice of ``shape`` as a list of :class:`LinkSet` (``sets``), each
    updated at once; together they hold every link exactly once."""

    def __init__(self, shape):
        shape = tuple(int(n) for n in shape)
        d, volume = len(shape), math.prod(shape)
        index = torch.arange(volume).reshape(shape)
        fwd = [shift(index, nu, 1, axis0=0).flatten() for nu in range(d)]
        back = [shift(index, nu, -1, axis0=0).flatten() for nu in range(d)]
        plane_of = {p: i for i, p in enumerate(planes(d))}
        self.shape, self.dim, self.volume, self.sets = shape, d, volume, []
        for mu in range(d):
            colour, m = link_colours(shape, mu)
            for c in range(m):
                sites = torch.nonzero(colour.flatten() == c).flatten()
                staples = tuple(Staple(nu, plane_of[(min(mu, nu), max(mu, nu))], fwd[mu][sites],
                                       fwd[nu][sites], back[nu][sites], back[nu][fwd[mu][sites]])
                                for nu in range(d) if nu != mu)
                self.sets.append(LinkSet(mu, sites, staples))

    def weights(self, beta_p: torch.Tensor | None, beta: float) -> list[list[tuple]]:
        """Per set and staple, the couplings ``(w_up, w_down)`` of its two plaquettes: ``beta``
        (floats) where ``beta_p`` is None, else ``beta_p[:, plane, x]`` and
        ``beta_p[:, plane, x − ν̂]`` ``(B, n)`` from ``beta_p`` ``(B, n_planes, V)``."""
        if beta_p is None:
            return [[(beta, beta)] * len(s.staples) for s in self.sets]
        return [[(beta_p[:, st.plane, s.sites], beta_p[:, st.plane, st.back_nu]) for st in s.staples]
                for s in self.sets]


def staple_terms(links: torch.Tensor, s: LinkSet, product, inverse) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each staple of set ``s``, the products of the other three links of its two
    plaquettes, ``(up, down)`` ``(C, n, ...)``, oriented so that the plaquette is
    ``product(link, up)`` (``down`` likewise): up = U_ν(x+μ̂) U_μ(x+ν̂)† U_ν(x)†,
    down = U_ν(x+μ̂−ν̂)† U_μ(x−ν̂)† U_ν(x−ν̂).  ``links`` ``(C, d, V, ...)``; ``product`` and
    ``inverse`` as in :func:`latticeflow.lattice.rectangular_loop` (U(1): +, −; SU(N): @, †)."""
    out = []
    for st in s.staples:
        link_nu, link_mu = links[:, st.nu], links[:, s.mu]
        up = product(product(link_nu[:, st.fwd_mu], inverse(link_mu[:, st.fwd_nu])), inverse(link_nu[:, s.sites]))
        down = product(product(inverse(link_nu[:, st.fwd_mu_back_nu]), inverse(link_mu[:, st.back_nu])),
                       link_nu[:, st.back_nu])
        out.append((up, down))
    return out


# --- exact rejection samplers ------------------------------------------------------------
def rejection_sample(propose, params: list[torch.Tensor], n_uniforms: int, generator: torch.Generator,
                     rounds: int = 3):
    """Vectorised rejection sampling: one proposal for every draw, then ``rounds``
    proposals at once for each draw still pending (the first accepted one kept), repeated
    until none is pending; uniforms in (0, 1] from ``generator`` on the CPU, moved to the
    parameters' device.

    Arguments:
        propose: ``propose(u, *params) -> (value, accept)`` with ``u`` ``(R, n, n_uniforms)``
            and the parameters ``(n,)``; returns ``(R, n)`` values and accept flags.
        params: per-draw parameters, each ``(n,)``.

    Returns the accepted values ``(n,)`` and the proposals each took ``(n,)`` float64.
    """
    n, device = params[0].shape[0], params[0].device
    value = torch.empty(n, dtype=F64, device=device)
    tries = torch.zeros(n, dtype=F64, device=device)
    pending = torch.arange(n, device=device)
    todo, batch = params, 1
    while pending.numel():
        u = 1 - torch.rand((batch, pending.numel(), n_uniforms), dtype=F64, generator=generator)
        proposal, accept = propose(u.to(device), *todo)
        first, spent = proposal[-1], torch.full_like(proposal[-1], float(batch))
        for r in range(batch - 2, -1, -1):  # the first accepted round wins
            first = torch.where(accept[r], proposal[r], first)
            spent = torch.where(accept[r], float(r + 1), spent)
        hit = accept.any(0)
        value[pending[hit]] = first[hit]
        tries[pending] += spent
        pending, todo, batch = pending[~hit], [p[~hit] for p in todo], rounds
    return value, tries


def _von_mises_proposal(u: torch.Tensor, kappa: torch.Tensor):
    """Best–Fisher: a wrapped-Cauchy proposal with ρ = 2κ/(τ + √(2τ)), τ = 1 + √(1 + 4κ²),
    accepted with probability c e^{1−c}, c = κ(r − cos φ), r = (1 + ρ²)/(2ρ).  Written
    without cancellations: 1 − ρ = (1 + 1/(s + 2κ) + √(2τ))/(τ + √(2τ)) (s = √(1 + 4κ²)),
    κ/ρ = (τ + √(2τ))/2 finite at κ = 0 (uniform φ, always accepted), and
    tan(φ/2) = (1 − ρ)/(1 + ρ) tan(π(u − ½)) (no arccos near φ = 0)."""
    s = torch.sqrt(1 + 4 * kappa**2)
    tau = 1 + s
    root = torch.sqrt(2 * tau)
    rho = 2 * kappa / (tau + root)
    one_minus_rho = (1 + 1 / (s + 2 * kappa) + root) / (tau + root)
    kappa_over_rho = (tau + root) / 2
    phi = 2 * torch.atan(one_minus_rho / (1 + rho) * torch.tan(math.pi * (u[..., 0] - 0.5)))
    c = kappa_over_rho * one_minus_rho**2 / 2 + 2 * kappa * torch.sin(phi / 2) ** 2  # κ(r − 1) + κ(1 − cos φ)
    return phi, torch.log(u[..., 1]) < torch.log(c) + 1 - c


def von_mises(kappa: torch.Tensor, generator: torch.Generator, rounds: int = 3):
    """Exact draws φ ∈ (−π, π) from the von Mises density e^{κ cos φ}/(2π I₀(κ)), one per
    entry of ``kappa`` ``(n,)`` ≥ 0 (κ = 0: uniform); returns ``(φ, tries)``, each ``(n,)``."""
    return rejection_sample(_von_mises_proposal, [kappa.to(F64)], 2, generator, rounds)


# --- U(1) ---------------------------------------------------------------------------------
def u1_staple_sum(links: torch.Tensor, s: LinkSet, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """Re A and Im A ``(C, n)`` of A = Σ_P β_P e^{iR_P} for the links of ``s``, so that their
    local action is −Re(e^{iθ} A)."""
    re = im = 0
    for (up, down), (w_up, w_down) in zip(staple_terms(links, s, torch.add, torch.neg), weights):
        re = re + w_up * torch.cos(up) + w_down * torch.cos(down)
        im = im + w_up * torch.sin(up) + w_down * torch.sin(down)
    return re, im


class U1Update:
    """Heat bath and overrelaxation of one :class:`LinkSet` of U(1) angles ``(C, d, V)``,
    in place."""

    def heatbath(self, links, s: LinkSet, weights, generator, rounds) -> torch.Tensor:
        re, im = u1_staple_sum(links, s, weights)
        phi, tries = von_mises(torch.hypot(re, im).flatten(), generator, rounds)
        links[:, s.mu, s.sites] = wrap_angle(phi.view(re.shape) - torch.atan2(im, re))
        return tries.view(re.shape).sum(1)

    def overrelax(self, links, s: LinkSet, weights) -> None:
        re, im = u1_staple_sum(links, s, weights)
        links[:, s.mu, s.sites] = wrap_angle(-2 * torch.atan2(im, re) - links[:, s.mu, s.sites])

    def project(self, x):
        return x

    updates_per_link = 1


# --- the kernel ---------------------------------------------------------------------------
class HeatbathKernel:
    """One heat-bath sweep of every link, then ``overrelaxation`` overrelaxation sweeps
    (module docstring); kernel contract ``step(KernelState, generator) -> (KernelState,
    info)``.

    Arguments:
        theory: pure U(1) or SU(N) (``heatbath_problem`` says why not).
        overrelaxation: overrelaxation sweeps after the heat-bath sweep (≥ 0).
        plaquette_beta: None (the theory's β everywhere), or β_P per plaquette
            ``(n_planes, *lattice)`` or ``(C, n_planes, *lattice)``.
        rounds: proposals drawn at once per link by the rejection samplers.
    """

    def __init__(self, theory, overrelaxation: int = 1, plaquette_beta=None, rounds: int = 3):
        problem = heatbath_problem(theory)
        if problem:
            raise LatticeflowError(problem)
        if int(overrelaxation) != overrelaxation or overrelaxation < 0 or int(rounds) < 1:
            raise ValueError(f"need overrelaxation >= 0 and rounds >= 1 (got {overrelaxation}, {rounds})")
        self.theory, self.overrelaxation, self.rounds = theory, int(overrelaxation), int(rounds)
        if isinstance(theory, SUN):
            from .sun_heatbath import SUNUpdate

            self.update = SUNUpdate(theory.N)
        else:
            self.update = U1Update()
        self.links = LinkSets(theory.shape)
        self.beta_p = None if plaquette_beta is None else self._check_couplings(plaquette_beta)
        self._cache = {}

    def _check_couplings(self, beta_p) -> torch.Tensor:
        beta_p = torch.as_tensor(beta_p, dtype=F64).detach().cpu()
        shape = (len(planes(self.theory.dim)), *self.theory.shape)
        if beta_p.dim() == len(shape):
            beta_p = beta_p[None]
        if tuple(beta_p.shape[1:]) != shape or not torch.isfinite(beta_p).all():
            raise ValueError(f"plaquette_beta must be finite, of shape {shape} or (C, *{shape}) "
                             f"(got {tuple(beta_p.shape)})")
        return beta_p.reshape(beta_p.shape[0], shape[0], -1)

    def _on(self, device, chains: int):
        """The link sets and their couplings on ``device``."""
        if self.beta_p is not None and self.beta_p.shape[0] not in (1, chains):
            raise ValueError(f"plaquette_beta holds couplings of {self.beta_p.shape[0]} chains, the state {chains}")
        if device not in self._cache:
            beta_p = None if self.beta_p is None else self.beta_p.to(device)
            self._cache[device] = ([s.to(device) for s in self.links.sets],
                                   self.links.weights(beta_p, self.theory.beta))
        return self._cache[device]

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x.detach().clone(memory_format=torch.contiguous_format)
        chains, device = x.shape[0], x.device
        links = x.view(chains, self.theory.dim, self.theory.volume, *x.shape[2 + self.theory.dim:])
        sets, weights = self._on(device, chains)
        tries = torch.zeros(chains, dtype=F64, device=device)
        with torch.no_grad():
            for s, w in zip(sets, weights):
                tries += self.update.heatbath(links, s, w, generator, self.rounds)
            for _ in range(self.overrelaxation):
                for s, w in zip(sets, weights):
                    self.update.overrelax(links, s, w)
            x = self.update.project(x)
        per_link = self.theory.dim * self.theory.volume * self.update.updates_per_link
        return KernelState(x), {"accepted": torch.ones(chains, dtype=torch.bool, device=device),
                                "heatbath_tries": tries / per_link}


class HeatbathChains(KernelChains):
    """C chains of ``sweeps`` :class:`HeatbathKernel` steps per row: a :class:`KernelChains`
    (hot or cold start or given fields, thermalisation, bit-identical resume) with the
    columns ``accepted`` (always true), ``log_weight`` = 0 (every row has weight 1, as the
    ``direct`` sampler's) and ``heatbath_tries`` (the mean over the row's steps).  Keyword
    arguments are those of :class:`KernelChains` (``seed``, ``thermalization``, ``start``, …)."""

    def __init__(self, theory, kernel: HeatbathKernel, n_chains: int, sweeps: int = 1, name: str = "heatbath",
                 **options):
        super().__init__(theory, Composite([kernel] * int(sweeps)), n_chains, columns=COLUMNS,
                         weight_column="log_weight", name=name, **options)

    def record(self, state: KernelState, infos) -> dict[str, torch.Tensor]:
        tries = torch.stack([info["heatbath_tries"] for info in infos]).mean(0)
        return {"accepted": torch.ones_like(tries, dtype=torch.bool), "log_weight": torch.zeros_like(tries),
                "heatbath_tries": tries}
