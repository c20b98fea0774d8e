"""Hybrid Monte Carlo for every theory: many independent chains advanced as one batch.

Conventions
-----------
- The fields, momenta, kinetic energy and drift of each theory are its *field space*
  (:mod:`latticeflow.theories.field_space`): real fields with π ~ N(0, 1) and
  ``K = ½ Σ π²``, U(1) angles the same but wrapped to [0, 2π) after each trajectory,
  SU(N) links with traceless Hermitian momenta, ``K = Σ tr P²`` and ``U ← exp(iεP) U``.
  This module never asks which theory it runs.
- Forces: ``"analytic"`` (``theory.force``) or ``"autograd"`` (the field space's
  derivative of ``theory.action``, the reference the analytic forces are tested against).
- Integrators, with A = drift (position update) and B = kick (momentum update), one step
  of size ε; consecutive kicks of neighbouring steps are merged:
    * ``"leapfrog"``:  B(ε/2) A(ε) B(ε/2) — n + 1 force evaluations per trajectory.
    * ``"omelyan"`` (2nd-order minimum norm, Omelyan–Mryglod–Folk 2003, Takaishi–de
      Forcrand hep-lat/0505020):  B(λε) A(ε/2) B((1−2λ)ε) A(ε/2) B(λε),
      λ = 0.1931833275037836 — 2n + 1 force evaluations per trajectory.
  Both are time-reversible, symplectic (volume-preserving) and of second order: the
  energy violation of one trajectory of fixed length is ΔH = O(ε²) (so ⟨ΔH²⟩^½ ∝ ε²),
  while at equilibrium ⟨ΔH⟩ = ½⟨ΔH²⟩ + … ∝ ε⁴ (from ⟨e^{−ΔH}⟩ = 1).  The minimum-norm
  scheme has a much smaller ε² coefficient.
- Metropolis accept/reject per chain on ΔH in float64; a non-finite ΔH is a rejection.
- Fields are projected back onto their manifold (``field_space.project``: U(1) wrapping,
  SU(N) reunitarisation) every ``reunitarize_every`` trajectories (default: the field
  space's ``project_every``), which only removes rounding drift.

References:
    S. Duane, A. D. Kennedy, B. J. Pendleton, D. Roweth, Phys. Lett. B 195 (1987) 216.
    I. P. Omelyan, I. M. Mryglod, R. Folk, Comput. Phys. Commun. 151 (2003) 272.
    T. Takaishi, Ph. de Forcrand, Phys. Rev. E 73 (2006) 036706, arXiv:hep-lat/0505020.
    M. D. Hoffman, A. Gelman, JMLR 15 (2014) 1593, arXiv:1111.4246 (dual averaging).
"""

from __future__ import annotations

import math
import warnings

import torch

from ..schema import table_fields
from ..theories.base import MDAction, NoMDOptions, Theory
from .accept import metropolis

from ..groups import su_n_generators  # noqa: F401  (re-exported)

__all__ = ["HMC", "OMELYAN_LAMBDA", "initial_field", "su_n_generators"]

OMELYAN_LAMBDA = 0.1931833275037836
INTEGRATORS = ("leapfrog", "omelyan")
FORCES = ("analytic", "autograd")
MAX_STEP_REDUCTION = 50  # tuning never makes ε smaller than (initial ε) / this


def md_settings(theory, options: dict) -> dict:
    """The theory's molecular-dynamics options (``Theory.md_options``), defaults filled in;
    a key it does not have is a ValueError (a theory without options takes none)."""
    fields = table_fields(getattr(theory, "md_options", NoMDOptions))
    unknown = set(options) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"{type(theory).__name__} has no molecular-dynamics option {sorted(unknown)}")
    return {f.name: options.get(f.name, f.default) for f in fields}


def initial_field(theory, chains: int, start: str = "hot",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Starting configurations: ``"hot"`` (random) or ``"cold"`` (φ = 0, θ = 0, U = 1)."""
    if start == "hot":
        return theory.random_field(chains, generator)
    if start != "cold":
        raise ValueError(f"start must be 'hot' or 'cold' (got {start!r})")
    return theory.cold_field(chains)


class _DualAveraging:
    """Nesterov dual averaging of log ε (Hoffman & Gelman 2014, Alg. 5)."""

    def __init__(self, step_size: float, target: float, bounds: tuple[float, float],
                 gamma=0.05, t0=10.0, kappa=0.75):
        self.mu = math.log(10 * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.t, self.h_bar, self.log_eps_bar = 0, 0.0, math.log(step_size)
        self.log_bounds = (math.log(bounds[0]), math.log(bounds[1]))

    def update(self, acceptance: float) -> float:
        """Feed the mean acceptance probability; returns the next ε to try."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - acceptance)
        log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        # a run of rejections early on would otherwise ask for ε ~ 1e-10, i.e. 1e10 MD steps
        log_eps = min(max(log_eps, self.log_bounds[0]), self.log_bounds[1])
        eta = self.t ** (-self.kappa)
        self.log_eps_bar = eta * log_eps + (1 - eta) * self.log_eps_bar
        return math.exp(log_eps)

    @property
    def final(self) -> float:
        return math.exp(self.log_eps_bar)


class HMC:
    """Hybrid Monte Carlo with leapfrog or Omelyan integration, vectorised over chains.

    References:
        Duane et al., Phys. Lett. B 195 (1987) 216; Takaishi & de Forcrand,
        arXiv:hep-lat/0505020 (minimum-norm integrator); Hoffman & Gelman, arXiv:1111.4246.

    Arguments:
        theory: a :class:`latticeflow.theories.Theory` (φ⁴, U(1) or SU(N)).
        integrator: ``"omelyan"`` (default) or ``"leapfrog"``.
        trajectory_length: molecular-dynamics time τ of one trajectory.
        steps: MD steps per trajectory; the step size is ``trajectory_length / steps``.
        force: ``"analytic"`` or ``"autograd"``.
        target_acceptance: the acceptance that :meth:`thermalize` tunes toward.
        reunitarize_every: project fields back onto their manifold every this many
            trajectories (default: the field space's; 0 never).
        **md_options: the theory's molecular-dynamics options (``theory.md_options``, e.g.
            the Schwinger model's ``fermions`` and CG tolerances); HMC passes them to
            ``theory.md_action`` and never reads them itself.

    Fields are ``(batch, *theory.field_shape)`` tensors in float64 (complex128 for SU(N)),
    on any device; each batch entry is an independent chain with its own accept/reject.
    Momenta and accept/reject draws come from a CPU generator and are moved to the fields'
    device (:mod:`latticeflow.devices`).

    Example:
        >>> from latticeflow.theories import U1
        >>> theory = U1((8, 8), beta=2.0)
        >>> hmc = HMC(theory, steps=5)
        >>> g = torch.Generator().manual_seed(0)
        >>> x = hmc.thermalize(theory.random_field(16, g), 20, g)
        >>> x, accepted, delta_h = hmc.trajectory(x, g)
        >>> accepted.shape, delta_h.dtype
        (torch.Size([16]), torch.float64)
    """

    def __init__(self, theory, integrator: str = "omelyan", trajectory_length: float = 1.0,
                 steps: int = 10, force: str = "analytic", target_acceptance: float = 0.8,
                 reunitarize_every: int | None = None, **md_options):
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS} (got {integrator!r})")
        if force not in FORCES:
            raise ValueError(f"force must be one of {FORCES} (got {force!r})")
        if not trajectory_length > 0 or int(steps) < 1:
            raise ValueError("need trajectory_length > 0 and steps >= 1")
        self.theory = theory
        self.integrator = integrator
        self.trajectory_length = float(trajectory_length)
        self.steps = int(steps)
        self.step_size = self.trajectory_length / self.steps
        self.force_kind = force
        self.target_acceptance = float(target_acceptance)
        self.space = theory.field_space
        self.reunitarize_every = int(self.space.project_every if reunitarize_every is None
                                     else reunitarize_every)
        self.tuned = False
        self._count = 0  # trajectories since the last projection
        self.md_settings = md_settings(theory, md_options)
        make = getattr(theory, "md_action", None)
        self.md = make(**self.md_settings) if make else MDAction(theory)
        self.last_stats: dict[str, torch.Tensor] = {}
        if force == "analytic" and type(theory).force is Theory.force:
            raise ValueError(f"{type(theory).__name__} has no analytic force; use force='autograd'")

    @classmethod
    def from_config(cls, theory, config, force: str | None = None) -> "HMC":
        """Build from an :class:`latticeflow.config.HMCConfig` (the ``[hmc]`` table);
        ``force`` overrides its ``force``."""
        own = {f.name for f in table_fields(getattr(theory, "md_options", NoMDOptions))}
        return cls(theory, integrator=config.integrator, trajectory_length=config.trajectory_length,
                   steps=config.steps, force=force or config.force,
                   target_acceptance=config.target_acceptance,
                   **{k: v for k, v in getattr(config, "options", ()) if k in own})

    # --- state for ensemble files -------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain numbers/strings that fix the update (tuned step size included)."""
        return {"integrator": self.integrator, "trajectory_length": self.trajectory_length,
                "step_size": self.step_size, "steps": self.steps, "force": self.force_kind,
                "target_acceptance": self.target_acceptance, "tuned": self.tuned,
                **self.md_settings}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (e.g. on resume, so tuning is not redone)."""
        if state.get("integrator", self.integrator) not in INTEGRATORS:
            raise ValueError(f"unknown integrator {state['integrator']!r}")
        self.integrator = state.get("integrator", self.integrator)
        self.trajectory_length = float(state.get("trajectory_length", self.trajectory_length))
        self.steps = int(state["steps"])
        self.step_size = float(state["step_size"])
        self.force_kind = state.get("force", self.force_kind)
        self.target_acceptance = float(state.get("target_acceptance", self.target_acceptance))
        self.tuned = bool(state.get("tuned", True))
        # a file written before some molecular-dynamics options existed continues as it was made
        legacy = {k: v for k, v in getattr(self.theory, "md_legacy", {}).items() if k not in state}
        if any(self.md_settings.get(k) != v for k, v in legacy.items()):
            self.md_settings = {**self.md_settings, **legacy}
            self.md = self.theory.md_action(**self.md_settings)

    # --- the Hamiltonian system -----------------------------------------------------------
    def sample_momenta(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian momenta with density ∝ exp(−K), shaped like a batch of fields."""
        return self.space.momenta(batch, self.theory.field_shape, generator)

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        """K per chain, ``(batch,)``."""
        return self.space.kinetic(p)

    def hamiltonian(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """K + S of the molecular dynamics (``self.md``: the action, or with pseudofermions
        the action of the current trajectory's pseudofermion fields)."""
        return self.kinetic(p) + self.md.action(x).to(torch.float64)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """The force at ``x``: analytic (``theory.force``) or by autograd."""
        if self.force_kind == "autograd":
            return self.space.autograd_force(self.md.action, x)
        return self.md.force(x)

    def _drift(self, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        return self.space.drift(x, p, eps)

    # --- molecular dynamics ---------------------------------------------------------------
    def integrate(self, x: torch.Tensor, p: torch.Tensor, step_size: float | None = None,
                  steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Molecular-dynamics evolution of ``(x, p)`` over ``steps`` steps of ``step_size``."""
        eps = self.step_size if step_size is None else float(step_size)
        n = self.steps if steps is None else int(steps)
        with torch.no_grad():
            if self.integrator == "leapfrog":
                p = p + 0.5 * eps * self.force(x)
                for k in range(n):
                    x = self._drift(x, p, eps)
                    p = p + (eps if k < n - 1 else 0.5 * eps) * self.force(x)
            else:
                lam = OMELYAN_LAMBDA
                p = p + lam * eps * self.force(x)
                for k in range(n):
                    x = self._drift(x, p, 0.5 * eps)
                    p = p + (1 - 2 * lam) * eps * self.force(x)
                    x = self._drift(x, p, 0.5 * eps)
                    p = p + (2 * lam * eps if k < n - 1 else lam * eps) * self.force(x)
        return x, p

    def trajectory(self, x: torch.Tensor, generator: torch.Generator | None = None,
                   step_size: float | None = None, steps: int | None = None):
        """One HMC trajectory per chain with Metropolis accept/reject.

        Returns:
            ``(x_new, accepted, delta_h)``: the new fields, ``(batch,)`` bool and
            ``(batch,)`` float64 ΔH = H(end) − H(start) of the proposal.
        """
        with torch.no_grad():
            p = self.sample_momenta(x.shape[0], generator).to(x.device)  # drawn on the CPU
            self.md.refresh(x, generator)
            h0 = self.hamiltonian(x, p)
            x1, p1 = self.integrate(x, p, step_size, steps)
            delta_h = self.hamiltonian(x1, p1) - h0
            self.last_stats = self.md.stats()
            u = torch.rand(x.shape[0], dtype=torch.float64, generator=generator).to(x.device)
            accepted = metropolis(-delta_h, torch.log(u))  # False for NaN
            mask = accepted.view(-1, *([1] * (x.dim() - 1)))
            x_new = torch.where(mask, x1, x)
            self._count += 1
            if self.reunitarize_every > 0 and self._count >= self.reunitarize_every:
                x_new, self._count = self.space.project(x_new), 0
        return x_new, accepted, delta_h

    def thermalize(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   target: float | None = None, tune: bool = True,
                   callback=None) -> torch.Tensor:
        """Run ``n`` trajectories, tuning the step size toward ``target`` acceptance.

        Tuning: dual averaging of log ε on the mean Metropolis probability
        ⟨min(1, e^{−ΔH})⟩ over chains, each trajectory using ``round(τ/ε)`` steps of ε.
        ε is kept in [ε₀/50, τ] (ε₀ the step size before tuning), with a
        warning if it ends at the lower bound.  The adaptation restarts at n/2 so that the hot-start transient does not bias it.
        At the end ε is frozen to ``τ / steps`` with ``steps = ⌈τ/ε̄⌉``, so the trajectory
        length stays τ exactly and the acceptance is at least about the target (rounding up:
        on small lattices acceptance falls off a cliff near the stability limit, and one step
        fewer can halve it).  Read ``step_size`` and ``steps`` (or :meth:`state_dict`) to
        store the result.  ``callback()`` (e.g. a progress bar's update) is called after
        every trajectory.
        """
        tick = callback or (lambda: None)
        target = self.target_acceptance if target is None else float(target)
        if not tune or n < 2:
            for _ in range(n):
                x, _, _ = self.trajectory(x, generator)
                tick()
            return x
        tau = self.trajectory_length
        eps = self.step_size
        bounds = (eps / MAX_STEP_REDUCTION, tau)
        for window in (n // 2, n - n // 2):
            averager = _DualAveraging(eps, target, bounds)
            for _ in range(window):
                steps = max(1, round(tau / eps))
                x, _, delta_h = self.trajectory(x, generator, step_size=eps, steps=steps)
                prob = torch.exp(-delta_h.clamp(min=0)).nan_to_num(0.0)
                eps = averager.update(float(prob.mean()))
                tick()
            eps = averager.final
        self.steps = max(1, math.ceil(tau / eps - 1e-6))
        self.step_size = tau / self.steps
        self.tuned = True
        if eps <= bounds[0] * 1.01:
            warnings.warn(f"HMC tuning hit its smallest step size {bounds[0]:.3g}; the "
                          f"acceptance may stay below {target} (start with more steps)")
        return x

    def sample(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None,
               measure: bool = True, keep_fields: bool = False
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``n`` trajectories; returns the last fields and histories ``{name: (n, batch)}``:
        ``accepted``, ``delta_h``, the molecular-dynamics diagnostics ``md.stat_names`` (e.g.
        ``cg_iterations``), (if ``measure``) every ``theory.observables`` and (if
        ``keep_fields``) ``fields`` ``(n, batch, *field_shape)``."""
        history: dict[str, list] = {"accepted": [], "delta_h": []}
        for _ in range(n):
            x, accepted, delta_h = self.trajectory(x, generator)
            history["accepted"].append(accepted)
            history["delta_h"].append(delta_h)
            for name, value in self.last_stats.items():
                history.setdefault(name, []).append(value)
            if measure:
                for name, value in self.theory.observables(x).items():
                    history.setdefault(name, []).append(value)
            if keep_fields:
                history.setdefault("fields", []).append(x.clone())
        return x, ({k: torch.stack(v) for k, v in history.items()} if n else {})

    def __repr__(self) -> str:
        return (f"HMC({self.theory!r}, integrator={self.integrator!r}, "
                f"trajectory_length={self.trajectory_length}, steps={self.steps}, "
                f"step_size={self.step_size:.6g}, force={self.force_kind!r})")

