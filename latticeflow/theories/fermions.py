"""Wilson fermions on 2D U(1) links: the Wilson–Dirac operator, its dense matrix, a
conjugate-gradient solver and the pseudofermion action HMC integrates.

Conventions
-----------
- Links are U(1) angles ``θ`` ``(batch, 2, L_0, L_1)`` (as in :mod:`~latticeflow.theories.u1`);
  axis 0 is *time*.  Fermions are periodic in space and **antiperiodic in time**: a hop
  across the time boundary carries a factor −1, folded into the fermion links
  ``u_μ(x) = b_μ(x) e^{iθ_μ(x)}`` with ``b_0(x) = −1`` on the last time slice (1 elsewhere).
- Spinors ``ψ`` are complex ``(..., 2, L_0, L_1)`` (spin, then the lattice); a dense matrix
  index is the flattened ``(spin, x_0, x_1)``, spin-major.
- Euclidean gamma matrices ``γ_0 = σ_1``, ``γ_1 = σ_2``, ``γ_5 = σ_3``.
- Wilson–Dirac operator in the hopping-parameter normalisation (Wilson parameter r = 1)::

      D ψ(x) = ψ(x) − κ Σ_μ [ (1 − γ_μ) u_μ(x) ψ(x+μ) + (1 + γ_μ) u_μ(x−μ)* ψ(x−μ) ]

  bare mass ``m = 1/(2κ) − 2``, free critical point ``κ_c = 1/4``.  It is γ₅-hermitian,
  ``γ₅ D γ₅ = D†``, so det D is real and ``det D†D = (det D)²``: the weight of two
  degenerate flavours.  Free-field eigenvalues (``U = 1``):
  ``1 − 2κ Σ_μ cos p_μ ± 2iκ (Σ_μ sin² p_μ)^½`` with ``p_1 = 2πn/L_1``,
  ``p_0 = 2π(n + ½)/L_0``.
- Pseudofermions (N_f = 2): ``det D†D = ∫ dφ† dφ exp(−φ† (D†D)⁻¹ φ)`` (up to a constant);
  the heat bath draws ``φ = D† η`` with ``η`` complex Gaussian of density ∝ e^{−η†η}.

References:
    K. G. Wilson, Phys. Rev. D 10 (1974) 2445; S. Duane et al., Phys. Lett. B 195 (1987) 216;
    arXiv:2106.05934 and arXiv:2202.11712 (flows for the Schwinger model).
"""

from __future__ import annotations

import functools
import math

import torch

from .chrono import SolutionHistory

__all__ = ["GAMMA", "GAMMA5", "fermion_links", "apply_dirac", "apply_dirac_dagger", "dirac_matrix",
           "conjugate_gradient", "det_force", "PseudofermionAction", "free_dirac_eigenvalues"]

_C = torch.complex128
GAMMA = torch.tensor([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]]], dtype=_C)  # γ_0, γ_1
GAMMA5 = torch.tensor([[1, 0], [0, -1]], dtype=_C)
_EYE = torch.eye(2, dtype=_C)
_MINUS = _EYE - GAMMA  # (1 − γ_μ): forward hops
_PLUS = _EYE + GAMMA  # (1 + γ_μ): backward hops


def fermion_links(theta: torch.Tensor) -> torch.Tensor:
    """``u_μ(x) = b_μ(x) e^{iθ_μ(x)}`` (complex128, shaped like ``theta``), with the
    antiperiodic time boundary folded in as ``b_0 = −1`` on the last time slice."""
    theta = theta.to(torch.float64)
    u = torch.polar(torch.ones_like(theta), theta)
    sign = torch.ones(theta.shape[-2:], dtype=torch.float64, device=theta.device)
    sign[-1, :] = -1.0
    return torch.cat([u[:, :1] * sign, u[:, 1:]], dim=1)


def _spin(m: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Apply the 2×2 spin matrix ``m`` to spinors ``(..., 2, L_0, L_1)``."""
    return torch.einsum("st,...txy->...sxy", m.to(psi.device), psi)


@functools.lru_cache(maxsize=8)
def _projectors(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 − γ_μ)`` and ``(1 + γ_μ)`` on ``device``, copied there once (not per CG step)."""
    return _MINUS.to(device), _PLUS.to(device)


def _gamma5(psi: torch.Tensor) -> torch.Tensor:
    """``γ₅ ψ = diag(1, −1) ψ`` for spinors ``(..., 2, L_0, L_1)``, without a matrix."""
    return torch.cat([psi[..., :1, :, :], -psi[..., 1:, :, :]], dim=-3)


def _hop(psi: torch.Tensor, mu: int, steps: int) -> torch.Tensor:
    """ψ at ``x + steps·μ`` (periodic; lattice axes are the last two)."""
    return torch.roll(psi, shifts=-steps, dims=psi.dim() - 2 + mu)


#: (1 ∓ γ_μ) = w w† with w = (1, b) (rank one): b for the forward (1 − γ_μ) and the
#: backward (1 + γ_μ) projectors of μ = 0, 1
_B_MINUS = (-1, -1j)
_B_PLUS = (1, 1j)


def apply_dirac(u: torch.Tensor, psi: torch.Tensor, kappa: float) -> torch.Tensor:
    """``D ψ`` for fermion links ``u`` ``(batch, 2, L_0, L_1)`` and spinors ``(batch, 2, L_0, L_1)``.

    Matrix-free: each projector ``(1 ∓ γ_μ) = w w†`` is applied as one projection
    ``w†ψ`` per site, hopped, and spread back along ``w`` (what CG calls every iteration;
    :func:`dirac_matrix` builds the same operator independently, as a dense matrix).
    """
    up, down = psi[:, 0], psi[:, 1]
    out_up, out_down = up.clone(), down.clone()
    for mu in range(2):
        link = u[:, mu]
        b, d = _B_MINUS[mu], _B_PLUS[mu]
        fwd = link * _hop(up + _conj(b) * down, mu, 1)  # w = (1, b): w†ψ = ψ_0 + b* ψ_1
        bwd = _hop(link.conj() * (up + _conj(d) * down), mu, -1)
        out_up = out_up - kappa * (fwd + bwd)
        out_down = out_down - kappa * (b * fwd + d * bwd)
    return torch.stack([out_up, out_down], dim=1)


def _conj(z):
    return complex(z).conjugate()


def apply_dirac_dagger(u: torch.Tensor, psi: torch.Tensor, kappa: float) -> torch.Tensor:
    """``D† ψ = γ₅ D γ₅ ψ``."""
    return _gamma5(apply_dirac(u, _gamma5(psi), kappa))


def dirac_matrix(u: torch.Tensor, kappa: float) -> torch.Tensor:
    """The dense ``(batch, 2V, 2V)`` matrix of D (index ``(spin, x_0, x_1)``, spin-major),
    scattered entry by entry from the definition (16 V hopping entries and the unit
    diagonal); differentiable in ``u``."""
    batch, _, l0, l1 = u.shape
    n = 2 * l0 * l1
    index, coef, link = _dirac_pattern(l0, l1, str(u.device))
    links = torch.cat([u.flatten(1), u.conj().flatten(1)], dim=1)  # u_μ(x), then u_μ(x)*
    values = (-kappa * coef) * links[:, link]
    eye = torch.eye(n, dtype=_C, device=u.device).flatten().expand(batch, n * n)
    return torch.index_add(eye, 1, index, values).view(batch, n, n)


@functools.lru_cache(maxsize=16)
def _dirac_pattern(l0: int, l1: int, device: str = "cpu"):
    """Where D's hopping entries sit: flat matrix index, spin coefficient and which link
    (index into ``[u.flatten(), u.conj().flatten()]``) each one carries, on ``device``."""
    v = l0 * l1
    sites = torch.arange(v).view(l0, l1)
    here = sites.flatten()
    index, coef, link = [], [], []
    for mu in range(2):
        nbr = torch.roll(sites, shifts=-1, dims=mu).flatten()  # x + μ
        for s in range(2):
            for t in range(2):
                # forward: D(x, x+μ) ∋ −κ (1 − γ_μ)_{st} u_μ(x)
                index.append((s * v + here) * 2 * v + t * v + nbr)
                coef.append(_MINUS[mu, s, t].expand(v))
                link.append(mu * v + here)
                # backward: D(x+μ, x) ∋ −κ (1 + γ_μ)_{st} u_μ(x)*
                index.append((s * v + nbr) * 2 * v + t * v + here)
                coef.append(_PLUS[mu, s, t].expand(v))
                link.append(2 * v + mu * v + here)
    return tuple(torch.cat(t).to(device) for t in (index, coef, link))


def free_dirac_eigenvalues(shape: tuple[int, int], kappa: float) -> torch.Tensor:
    """The ``2V`` eigenvalues of D at ``U = 1`` (the module docstring's formula), complex128."""
    l0, l1 = shape
    p0 = 2 * math.pi * (torch.arange(l0, dtype=torch.float64) + 0.5) / l0
    p1 = 2 * math.pi * torch.arange(l1, dtype=torch.float64) / l1
    p0, p1 = torch.meshgrid(p0, p1, indexing="ij")
    real = 1 - 2 * kappa * (torch.cos(p0) + torch.cos(p1))
    imag = 2 * kappa * torch.sqrt(torch.sin(p0) ** 2 + torch.sin(p1) ** 2)
    return torch.cat([torch.complex(real, imag).flatten(), torch.complex(real, -imag).flatten()])


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a† b`` per batch entry, ``(batch,)``."""
    return (a.conj() * b).flatten(1).sum(1)


def conjugate_gradient(apply, b: torch.Tensor, tolerance: float, max_iterations: int,
                       x0: torch.Tensor | None = None, r0: torch.Tensor | None = None):
    """Solve ``A x = b`` for Hermitian positive-definite ``A`` (``apply(x) = A x``), batched.

    Each batch entry stops when its residual ``|r| ≤ tolerance · |b|``; the others go on.
    Starts from x = 0 by default, so the solution is a deterministic function of ``A`` and
    ``b`` (which HMC's reversibility needs), or from a guess ``x0`` (its residual
    ``r0 = b − A x0`` where known, else one more application of A): the solution then
    depends on the guess within the tolerance (:mod:`~latticeflow.theories.chrono`).

    Returns:
        ``(x, iterations, converged)``: the solution, ``(batch,)`` int iterations each entry
        took, and ``(batch,)`` bool.
    """
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0
        r = b - apply(x0) if r0 is None else r0
    p = r.clone()
    rr = _dot(r, r).real
    stop = tolerance**2 * (rr if x0 is None else _dot(b, b).real)
    iterations = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    done = rr <= stop
    shape = (-1,) + (1,) * (b.dim() - 1)
    for _ in range(max_iterations):
        if bool(done.all()):
            break
        ap = apply(p)
        alpha = torch.where(done, 0.0, rr / _dot(p, ap).real.clamp(min=1e-300))
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * ap
        rr_new = _dot(r, r).real
        iterations = iterations + (~done).long()
        done = done | (rr_new <= stop)
        beta = torch.where(done, 0.0, rr_new / rr.clamp(min=1e-300))
        p = r + beta.view(shape) * p
        rr = rr_new
    return x, iterations, done


def _link_derivative_terms(u, left, right, kappa):
    """``(left† ∂D/∂θ_μ(x) right)`` for every link, ``(batch, 2, L_0, L_1)`` complex, where
    ``left``/``right`` are spinors: the hops through link (x, μ) are
    ``−κ(1−γ_μ) i u_μ(x)`` from x+μ to x and ``+κ(1+γ_μ) i u_μ(x)*`` from x to x+μ."""
    minus, plus = _projectors(str(u.device))
    out = []
    for mu in range(2):
        link = u[:, mu]
        fwd = (left.conj() * _spin(minus[mu], _hop(right, mu, 1))).sum(1)
        bwd = (_hop(left, mu, 1).conj() * _spin(plus[mu], right)).sum(1)
        out.append(-1j * kappa * link * fwd + 1j * kappa * link.conj() * bwd)
    return torch.stack(out, dim=1)


def det_force(u: torch.Tensor, kappa: float) -> torch.Tensor:
    """``∂ log det(D†D) / ∂θ = 2 Re tr(D⁻¹ ∂D/∂θ)`` from the dense inverse, ``(batch, 2, L_0, L_1)``."""
    batch, _, l0, l1 = u.shape
    v = l0 * l1
    g = torch.linalg.inv(dirac_matrix(u, kappa)).view(batch, 2, l0, l1, 2, l0, l1)
    minus, plus = _projectors(str(u.device))
    out = []
    for mu in range(2):
        # G(x+μ, x)[t, s] and G(x, x+μ)[t, s] for every x: the blocks that meet the link (x, μ)
        g_fwd = torch.diagonal(_hop_rows(g, mu).reshape(batch, 2, v, 2, v), dim1=2, dim2=4)
        g_bwd = torch.diagonal(_hop_cols(g, mu).reshape(batch, 2, v, 2, v), dim1=2, dim2=4)
        link = u[:, mu].flatten(1)
        tr_fwd = torch.einsum("st,btsx->bx", minus[mu], g_fwd)
        tr_bwd = torch.einsum("st,btsx->bx", plus[mu], g_bwd)
        term = -1j * kappa * link * tr_fwd + 1j * kappa * link.conj() * tr_bwd
        out.append(2 * term.real.view(batch, l0, l1))
    return torch.stack(out, dim=1)


def _hop_rows(g, mu):
    """``g`` with its row site moved to x+μ: entry (x, y) becomes G(x+μ, y)."""
    return torch.roll(g, shifts=-1, dims=2 + mu)


def _hop_cols(g, mu):
    """``g`` with its column site moved to y+μ: entry (x, y) becomes G(x, y+μ)."""
    return torch.roll(g, shifts=-1, dims=5 + mu)


class PseudofermionAction:
    """What HMC integrates for two flavours with pseudofermions: ``S_gauge + φ†(D†D)⁻¹φ``.

    :meth:`refresh` draws ``φ = D† η`` at the start of each trajectory, where the action is
    then exactly ``S_gauge + η†η`` (no solve, no CG error at the start point); elsewhere the
    action and the force solve ``D†D X = φ`` by :func:`conjugate_gradient` (from zero, or
    from ``guess``).
    ``stats()`` reports, per chain, the most CG iterations any solve of the current
    trajectory took (``cg_iterations``).

    Exactness: two tolerances, as in production codes.  From zero, the force is a
    deterministic function of the links whatever its tolerance (a fixed stopping rule), so
    the integrator stays reversible and volume-preserving, and a loose force tolerance costs
    acceptance only.  The Metropolis test needs the action itself: the end point's
    ``φ†(D†D)⁻¹φ`` is solved to ``action_tolerance`` (an error of at most
    ``action_tolerance · |φ|²/λ_min(D†D)`` in ΔH), never to the force's tolerance: a
    loose action solve biases the chain (a tolerance of 0.9 moved ⟨ψ̄ψ⟩ by 30σ).

    Arguments:
        theory: the :class:`~latticeflow.theories.schwinger.Schwinger` theory.
        tolerance: relative residual ``|r|/|φ|`` at which the force's CG stops.
        max_iterations: an action solve that has not converged by then makes the
            trajectory's ΔH non-finite, i.e. a rejection (counted in ``cg_failures``); a
            force solve stops there too (still deterministic, so still reversible).
        action_tolerance: relative residual of the action's CG (the Metropolis test).
        guess: where the solves start: ``"zero"`` (the deterministic force above), or from
            the history of this trajectory's solutions, ``"last"`` or ``"chrono"``
            (:mod:`~latticeflow.theories.chrono`; the force is then reversible only to about
            ``tolerance``, so keep it tight); ``depth``: the chronological basis.

    ``applications`` counts, per chain, the applications of D†D in the current trajectory.
    """

    stat_names = ("cg_iterations",)

    def __init__(self, theory, tolerance: float = 1e-10, max_iterations: int = 2000,
                 action_tolerance: float = 1e-10, guess: str = "zero", depth: int = 3):
        self.theory = theory
        self.kappa = theory.kappa
        self.tolerance, self.max_iterations = float(tolerance), int(max_iterations)
        self.action_tolerance = float(action_tolerance)
        self.history = SolutionHistory(guess, depth)
        self.phi, self._start = None, (None, None)
        self.cg_failures = 0

    def refresh(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """New pseudofermions for the trajectory starting at ``x``."""
        shape = (x.shape[0], 2, *x.shape[2:])
        re = torch.randn(shape, dtype=torch.float64, generator=generator)  # drawn on the CPU
        im = torch.randn(shape, dtype=torch.float64, generator=generator)
        eta = (torch.complex(re, im) / math.sqrt(2.0)).to(x.device)  # density ∝ exp(−|η|²)
        self.phi = apply_dirac_dagger(fermion_links(x), eta, self.kappa)
        self._start = (x, (eta.abs() ** 2).flatten(1).sum(1))
        self._iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        self.applications = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        self.history.reset()

    def _solve(self, u, tolerance: float):
        kappa = self.kappa

        def normal(p):
            return apply_dirac_dagger(u, apply_dirac(u, p, kappa), kappa)

        x0, r0, used = self.history.guess(normal, self.phi)
        x, its, ok = conjugate_gradient(normal, self.phi, tolerance, self.max_iterations, x0=x0, r0=r0)
        self._iterations = torch.maximum(self._iterations, its)
        self.applications += its + used + int(x0 is not None and r0 is None)
        return x, ok

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """``S_gauge + φ†(D†D)⁻¹φ``; NaN (a rejection) where CG did not converge."""
        start, eta_norm = self._start
        if x is start:  # the refresh point: φ†(D†D)⁻¹φ = η†η exactly
            return self.theory.gauge_action(x) + eta_norm
        u = fermion_links(x)
        sol, ok = self._solve(u, self.action_tolerance)
        s = self.theory.gauge_action(x) + _dot(self.phi, sol).real
        if not bool(ok.all()):
            self.cg_failures += int((~ok).sum())
        return torch.where(ok, s, torch.full_like(s, math.nan))

    def force(self, x: torch.Tensor) -> torch.Tensor:
        u = fermion_links(x)
        sol, _ = self._solve(u, self.tolerance)
        self.history.push(sol)
        dsol = apply_dirac(u, sol, self.kappa)
        fermion = 2 * _link_derivative_terms(u, dsol, sol, self.kappa).real
        return self.theory.gauge_force(x) + fermion

    def stats(self) -> dict[str, torch.Tensor]:
        return {"cg_iterations": self._iterations.to(torch.float64)}
