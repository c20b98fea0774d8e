"""Even–odd preconditioned Wilson fermions on 2D U(1) links: the Schur complement D̂ on the
even sites, its pseudofermion action and force.

Conventions
-----------
- D = 1 − κH as in :mod:`~latticeflow.theories.fermions` (antiperiodic in time, γ₅-hermitian);
  H hops between nearest neighbours only, so with even ``L_0, L_1`` it connects sites of
  opposite parity (x₀ + x₁ mod 2, also across the boundaries), and in (even, odd) blocks

      D = [[1, −κH_eo], [−κH_oe, 1]],   det D = det(1 − κ² H_eo H_oe) = det D̂,

  D̂ = 1_e − κ² H_eo H_oe acting on even-site spinors (the Schur complement; the odd block
  is the unit matrix, so no factor).  γ₅ D̂ γ₅ = D̂† (γ₅ is site-diagonal and γ₅Hγ₅ = H†),
  det D̂ is real and det D†D = det D̂†D̂.  N_f = 2: ``φ†(D̂†D̂)⁻¹φ`` on the even sites, the
  heat bath ``φ = D̂†η``.  T. DeGrand, Comput. Phys. Commun. 52 (1988) 161; T. DeGrand
  and P. Rossi, Comput. Phys. Commun. 60 (1990) 211.
- Packed spinors: ``(batch, 2, V/2)``, the sites of one parity in the order of the flat
  index ``x₀ L_1 + x₁``.
- H as four hops d = (0+, 1+, 0−, 1−) with rank-one spin projectors ``1 ∓ γ_μ = w_d w_d†``:
  ``Hψ(x) = Σ_d w_d U_d(x) w_d†ψ(n_d(x))``, ``U_d(x) = u_μ(x)`` forward and ``u_μ(x−μ)*``
  backward.  So one application of H is a 4×2 spin projection, one gather of the
  neighbours (a precomputed index table, no loop over sites), a product with the links and
  a 2×4 spin matrix: whole-lattice tensor operations, vectorised over chains.
- Force: with ``X = (D̂†D̂)⁻¹φ``, ``Y = D̂X``, the full-lattice spinors
  ``R = (X, κH_oe X)`` and ``L = (Y, κH_eo†Y)`` give ``Y† ∂D̂ X = L† ∂D R``, so
  ``−∂S/∂θ = 2 Re L† ∂D/∂θ R`` with the unpreconditioned link derivative.
"""

from __future__ import annotations

import functools
import math

import torch

from ..errors import ConfigError
from ..lattice import checkerboard
from .chrono import SolutionHistory
from .fermions import _link_derivative_terms, conjugate_gradient, fermion_links

__all__ = ["EvenOddDirac", "EvenOddPseudofermionAction", "even_odd_problem", "schur_matrix"]

_C = torch.complex128
#: w_d of the four hops (0+, 1+, 0−, 1−): 1 − γ_0, 1 − γ_1, 1 + γ_0, 1 + γ_1 = w w†
_W = torch.tensor([[1, 1, 1, 1], [-1, -1j, 1, 1j]], dtype=_C)
_P = _W.conj().T.contiguous()  # w_d† as rows: the projections
_G5 = torch.tensor([1, -1], dtype=_C)


def even_odd_problem(shape) -> str | None:
    """Why even–odd preconditioning is not defined on a lattice of ``shape``, or None."""
    if any(n % 2 for n in shape):
        return (f"even-odd preconditioning needs even extents (this lattice is "
                f"{'x'.join(map(str, shape))}); set [hmc] even_odd = false")
    return None


@functools.lru_cache(maxsize=16)
def _tables(l0: int, l1: int, device: str):
    """Index tables of the checkerboard: ``sites[p]`` (flat indices of parity p), ``unpack``
    (full lattice from ``cat([even, odd])``), and for target parity p: ``hops[p]`` (index
    into the other parity's projected ``(4, V/2)``, flattened) and ``links[p]`` (index into
    ``cat([u.flatten(1), u.conj().flatten(1)])``), each ``(4·V/2,)``."""
    v, n = l0 * l1, l0 * l1 // 2
    flat = torch.arange(v).view(l0, l1)
    sites = [flat[checkerboard((l0, l1), p)] for p in (0, 1)]
    pos = torch.empty(v, dtype=torch.int64)
    for p in (0, 1):
        pos[sites[p]] = torch.arange(n)
    fwd = [torch.roll(flat, -1, mu).flatten() for mu in (0, 1)]  # x + μ
    bwd = [torch.roll(flat, 1, mu).flatten() for mu in (0, 1)]  # x − μ
    hops, links = [], []
    for p in (0, 1):
        t = sites[p]
        nbrs = (fwd[0][t], fwd[1][t], bwd[0][t], bwd[1][t])
        hops.append(torch.cat([d * n + pos[nb] for d, nb in enumerate(nbrs)]))
        links.append(torch.cat([t, v + t, 2 * v + bwd[0][t], 3 * v + bwd[1][t]]))
    unpack = torch.argsort(torch.cat(sites))
    move = functools.partial(torch.Tensor.to, device=device)
    return [move(s) for s in sites], move(unpack), [move(h) for h in hops], [move(k) for k in links]


class EvenOddDirac:
    """D̂ = 1 − κ² H_eo H_oe on packed even-site spinors ``(batch, 2, V/2)``, for link angles
    ``theta`` ``(batch, 2, L_0, L_1)`` (even extents) and hopping parameter ``kappa``."""

    def __init__(self, theta: torch.Tensor, kappa: float):
        self.batch, _, l0, l1 = theta.shape
        self.shape, self.kappa, self.n = (l0, l1), float(kappa), l0 * l1 // 2
        dev = theta.device
        self.sites, self.unpack, self.hops, links = _tables(l0, l1, str(dev))
        self.u = fermion_links(theta)
        both = torch.cat([self.u.flatten(1), self.u.conj().flatten(1)], dim=1)
        # κ U_d(x) for targets of each parity, (batch, 4, V/2)
        self.links = [self.kappa * both.index_select(1, k).view(self.batch, 4, self.n) for k in links]
        w, p = _W.to(dev), _P.to(dev)
        self.w, self.p, self.pw = w, p, p @ w
        self.w5, self.p5 = _G5.to(dev).view(2, 1) * w, p * _G5.to(dev)  # γ₅ W and P γ₅

    def _gather(self, projected: torch.Tensor, target: int) -> torch.Tensor:
        """κ U_d(x) (w_d†ψ)(n_d(x)) on the sites of parity ``target``, ``(batch, 4, V/2)``."""
        g = projected.flatten(1).index_select(1, self.hops[target]).view(self.batch, 4, self.n)
        return g * self.links[target]

    def hop_oe(self, psi: torch.Tensor, dagger: bool = False) -> torch.Tensor:
        """κ H_oe ψ (``dagger``: κ H_eo† ψ = γ₅ κH_oe γ₅ ψ), even → odd sites."""
        p, w = (self.p5, self.w5) if dagger else (self.p, self.w)
        return w @ self._gather(p @ psi, 1)

    def apply(self, psi: torch.Tensor, dagger: bool = False) -> torch.Tensor:
        """D̂ ψ (``dagger``: D̂† ψ = γ₅ D̂ γ₅ ψ)."""
        p, w = (self.p5, self.w5) if dagger else (self.p, self.w)
        inner = self._gather(p @ psi, 1)  # w_d† κ H_oe ψ, before the odd sites' spin sum
        return psi - w @ self._gather(self.pw @ inner, 0)

    def normal(self, psi: torch.Tensor) -> torch.Tensor:
        """D̂†D̂ ψ (Hermitian positive definite: what CG solves)."""
        return self.apply(self.apply(psi), dagger=True)

    def full(self, even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
        """Packed even and odd spinors as one full-lattice spinor ``(batch, 2, L_0, L_1)``."""
        return torch.cat([even, odd], -1).index_select(-1, self.unpack).view(self.batch, 2, *self.shape)

    def pack(self, psi: torch.Tensor, parity: int = 0) -> torch.Tensor:
        """The sites of ``parity`` of a full-lattice spinor, packed ``(batch, 2, V/2)``."""
        return psi.flatten(2).index_select(-1, self.sites[parity])

    def force(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``2 Re Y† ∂D̂/∂θ X`` for every link, ``(batch, 2, L_0, L_1)`` (module docstring);
        with ``X = (D̂†D̂)⁻¹φ``, ``Y = D̂X`` this is −∂/∂θ of ``φ†(D̂†D̂)⁻¹φ``."""
        right = self.full(x, self.hop_oe(x))
        left = self.full(y, self.hop_oe(y, dagger=True))
        return 2 * _link_derivative_terms(self.u, left, right, self.kappa).real


def schur_matrix(theta: torch.Tensor, kappa: float) -> torch.Tensor:
    """The dense even–odd Schur complement D̂ = 1 − κ²H_eo H_oe, ``(batch, V, V)`` complex128,
    for link angles ``theta`` ``(batch, 2, L₀, L₁)`` with even extents (index ``(spin, even
    site)``, spin-major, as the packed spinors of
    :class:`~latticeflow.theories.even_odd.EvenOddDirac`, whose hop tables it reads); det D̂ = det D.

    κ²H_eo H_oe is a sum over the 16 two-hop paths x → z = n_d(x) → y = n_e(z) of every even
    site x, each a 2×2 spin matrix w_d (w_d†w_e) w_e† times κU_d(x) κU_e(z): 64 V/2 entries
    scattered into the zero matrix (O(V) work besides the V² zeros)."""
    op = EvenOddDirac(theta, kappa)
    batch, n = op.batch, op.n
    size, device = 2 * n, theta.device
    sites = torch.arange(n, device=device)
    hops = [h.view(4, n) - (torch.arange(4, device=device) * n).view(4, 1) for h in op.hops]  # n_d(x) per parity
    z = hops[0]  # (4, n): the odd neighbour of x along d
    y = hops[1][:, z].transpose(0, 1)  # (d, e, n): the even site n_e(n_d(x))
    first = op.links[0]  # (batch, d, n): κU_d(x)
    second = op.links[1][:, :, z].transpose(1, 2)  # (batch, d, e, n): κU_e(z)
    spin = torch.einsum("sd,de,et->stde", op.w, op.pw, op.p)  # w_d (w_d†w_e) w_e†, (s, t, d, e)
    values = spin.view(1, 2, 2, 4, 4, 1) * (first.unsqueeze(2) * second).view(batch, 1, 1, 4, 4, n)
    s, t = torch.arange(2, device=device).view(2, 1, 1, 1, 1), torch.arange(2, device=device).view(1, 2, 1, 1, 1)
    flat = (s * n + sites) * size + t * n + y  # (s, t, d, e, n)
    hopping = torch.zeros(batch, size * size, dtype=torch.complex128, device=device)
    hopping.index_add_(1, flat.flatten(), values.reshape(batch, -1))
    eye = torch.eye(size, dtype=torch.complex128, device=device)
    return eye - hopping.view(batch, size, size)


class EvenOddPseudofermionAction:
    """``S_gauge + φ†(D̂†D̂)⁻¹φ`` with φ on the even sites: what HMC integrates with
    ``[hmc] even_odd = true``; the interface of
    :class:`~latticeflow.theories.fermions.PseudofermionAction` (``refresh``, ``action``,
    ``force``, ``stats``; ``phi`` is packed ``(batch, 2, V/2)``).

    The heat bath φ = D̂†η makes the action at the refresh point exactly ``S_gauge + η†η``.
    Solves start from ``guess`` (:mod:`~latticeflow.theories.chrono`), cleared at each heat
    bath; the action of the Metropolis test is solved to ``action_tolerance``, and may start
    from the same history (it is only a value: the guess changes it within the tolerance).
    ``applications`` counts, per chain, the applications of D̂†D̂ in the current trajectory
    (CG iterations, the guess's, the residuals'): the trajectory's cost.

    Arguments:
        theory: the :class:`~latticeflow.theories.schwinger.Schwinger` theory (even extents).
        tolerance, max_iterations, action_tolerance: as for ``PseudofermionAction``.
        guess: ``"zero"``, ``"last"`` or ``"chrono"``; ``depth``: the chronological basis.
    """

    stat_names = ("cg_iterations",)

    def __init__(self, theory, tolerance: float = 1e-10, max_iterations: int = 2000,
                 action_tolerance: float = 1e-10, guess: str = "last", depth: int = 3):
        problem = even_odd_problem(theory.shape)
        if problem:
            raise ConfigError(f"hmc.even_odd: {problem}")
        self.theory, self.kappa = theory, theory.kappa
        self.tolerance, self.max_iterations = float(tolerance), int(max_iterations)
        self.action_tolerance = float(action_tolerance)
        self.history = SolutionHistory(guess, depth)
        self.phi, self._start, self._operator = None, (None, None), (None, None, None)
        self.cg_failures = 0

    def dirac(self, x: torch.Tensor) -> EvenOddDirac:
        """D̂ at links ``x`` (the last one is kept: the action at the end of a trajectory
        reuses the last force's, unless ``x`` was changed in place since)."""
        held, version, op = self._operator
        if held is not x or version != x._version:
            op = EvenOddDirac(x, self.kappa)
            self._operator = (x, x._version, op)
        return op

    def refresh(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """New pseudofermions φ = D̂†η for the trajectory starting at ``x``."""
        shape = (x.shape[0], 2, math.prod(self.theory.shape) // 2)
        re = torch.randn(shape, dtype=torch.float64, generator=generator)  # drawn on the CPU
        im = torch.randn(shape, dtype=torch.float64, generator=generator)
        eta = (torch.complex(re, im) / math.sqrt(2.0)).to(x.device)  # density ∝ exp(−|η|²)
        self.phi = self.dirac(x).apply(eta, dagger=True)
        self._start = (x, (eta.abs() ** 2).flatten(1).sum(1))
        self.history.reset()
        self._iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        self.applications = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)

    def _solve(self, op: EvenOddDirac, tolerance: float):
        x0, r0, used = self.history.guess(op.normal, self.phi)
        x, its, ok = conjugate_gradient(op.normal, self.phi, tolerance, self.max_iterations, x0=x0, r0=r0)
        self._iterations = torch.maximum(self._iterations, its)
        self.applications += its + used + int(x0 is not None and r0 is None)
        return x, ok

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """``S_gauge + φ†(D̂†D̂)⁻¹φ``; NaN (a rejection) where CG did not converge."""
        start, eta_norm = self._start
        if x is start:
            return self.theory.gauge_action(x) + eta_norm
        sol, ok = self._solve(self.dirac(x), self.action_tolerance)
        s = self.theory.gauge_action(x) + (self.phi.conj() * sol).flatten(1).sum(1).real
        if not bool(ok.all()):
            self.cg_failures += int((~ok).sum())
        return torch.where(ok, s, torch.full_like(s, math.nan))

    def force(self, x: torch.Tensor) -> torch.Tensor:
        op = self.dirac(x)
        sol, _ = self._solve(op, self.tolerance)
        self.history.push(sol)
        return self.theory.gauge_force(x) + op.force(sol, op.apply(sol))

    def stats(self) -> dict[str, torch.Tensor]:
        return {"cg_iterations": self._iterations.to(torch.float64)}
