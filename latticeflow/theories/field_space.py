"""Field spaces: what a sampler needs to know about the manifold a theory's fields live on.

HMC (and any other update that moves fields continuously) talks to a theory's
``field_space`` only, never to its name:

- ``RealField`` — fields in ℝⁿ (φ⁴ sites).  Momenta π ~ N(0, 1) per component,
  ``K = ½ Σ π²``, drift ``x ← x + ε π``, cold start ``x = 0``.
- ``AngleField`` — U(1) link angles: as ``RealField``, but the action only sees angles mod
  2π, so fields are wrapped to [0, 2π) after every trajectory (``project_every = 1``).
- ``SUNField`` — SU(N) link matrices.  Momenta P traceless Hermitian per link with density
  ∝ exp(−tr P²) (:func:`latticeflow.groups.random_algebra`), ``K = Σ_links tr P²``, drift
  ``U ← exp(iεP) U``, cold start ``U = 1``; links are projected back onto SU(N)
  (:func:`latticeflow.groups.reunitarize`) every ``project_every = 10`` trajectories, which
  only removes rounding drift (a change of order 1e-15).

A *force* is the momentum-space direction of steepest descent of S: ``−∂S/∂x`` for real
fields, and for SU(N) the traceless Hermitian ``F = −Σ_a T_a ∂S/∂ω_a`` with
``U = exp(iω_a T_a) U`` (so that the kick is ``P ← P + εF``).  Theories provide analytic
forces; :meth:`autograd_force` is the reference they are tested against.
"""

from __future__ import annotations

import torch

from ..groups import exp_algebra, random_algebra, reunitarize, su_n_generators, wrap_angle

__all__ = ["FieldSpace", "RealField", "AngleField", "SUNField"]


class FieldSpace:
    """Interface; see the module docstring.  Fields are ``(batch, *field_shape)``."""

    #: dtype of fields as stored and as the action sees them
    dtype: torch.dtype = torch.float64
    #: project back onto the manifold every this many trajectories (0: never needed)
    project_every: int = 0

    def momenta(self, batch: int, field_shape, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        """Kinetic energy per configuration, ``(batch,)``."""
        raise NotImplementedError

    def drift(self, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        """Move the fields for a molecular-dynamics time ``eps`` at momentum ``p``."""
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Map fields back onto the manifold (identity where nothing drifts)."""
        return x

    def identity(self, batch: int, field_shape) -> torch.Tensor:
        """The cold start (φ = 0, θ = 0, U = 1)."""
        raise NotImplementedError

    def autograd_force(self, action, x: torch.Tensor) -> torch.Tensor:
        """The force of ``action`` at ``x`` by automatic differentiation."""
        raise NotImplementedError

    def to_action_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the dtype the action and the weights are computed in (float64 or
        complex128), whatever precision a flow produced it in."""
        return x.to(self.dtype)


class RealField(FieldSpace):
    """Fields in ℝⁿ: Gaussian momenta, flat drift."""

    def momenta(self, batch, field_shape, generator=None):
        return torch.randn((batch, *field_shape), dtype=torch.float64, generator=generator)

    def kinetic(self, p):
        return 0.5 * (p**2).flatten(1).sum(1)

    def drift(self, x, p, eps):
        return x + eps * p

    def identity(self, batch, field_shape):
        return torch.zeros((batch, *field_shape), dtype=self.dtype)

    def autograd_force(self, action, x):
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(action(y).sum(), y)
        return -grad


class AngleField(RealField):
    """U(1) link angles: real fields taken mod 2π, wrapped to [0, 2π) after each trajectory."""

    project_every = 1

    def project(self, x):
        return wrap_angle(x)


class SUNField(FieldSpace):
    """SU(N) link matrices ``(..., N, N)``; momenta in the Lie algebra (traceless Hermitian)."""

    dtype = torch.complex128
    project_every = 10

    def __init__(self, N: int):
        self.N = int(N)
        self.generators = su_n_generators(self.N)

    def momenta(self, batch, field_shape, generator=None):
        return random_algebra((batch, *field_shape[:-2]), self.N, generator=generator)

    def kinetic(self, p):
        return (p.abs() ** 2).flatten(1).sum(1)  # Σ tr P² for Hermitian P

    def drift(self, x, p, eps):
        return exp_algebra(p, eps) @ x

    def project(self, x):
        return reunitarize(x)

    def identity(self, batch, field_shape):
        eye = torch.eye(self.N, dtype=self.dtype)
        return eye.expand(batch, *field_shape).clone()

    def autograd_force(self, action, x):
        # derivative along (1 + iω_a T_a) U at ω = 0, which equals that along exp(iω_a T_a) U
        t = self.generators.to(x.device)
        with torch.enable_grad():
            omega = torch.zeros((*x.shape[:-2], t.shape[0]), dtype=torch.float64, device=x.device,
                                requires_grad=True)
            h = torch.einsum("...a,aij->...ij", omega.to(t.dtype), t)
            u = x.detach()
            (grad,) = torch.autograd.grad(action(u + 1j * h @ u).sum(), omega)
        return -torch.einsum("...a,aij->...ij", grad.to(t.dtype), t)
