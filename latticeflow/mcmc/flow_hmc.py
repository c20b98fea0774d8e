"""Flow HMC: Hybrid Monte Carlo in the flow's latent space (trivializing maps).

With x = f(z) the flow's map from the prior's space to the fields, the target
p(x) ∝ e^{−S(x)} pulls back to the latent density

    p̃(z) = p(f(z)) |det ∂f/∂z| ∝ exp(−S̃(z)),    S̃(z) = S(f(z)) − log|det ∂f/∂z|,

and HMC on S̃ (momenta, kinetic energy and drift of the theory's own field space: f maps
the field manifold onto itself) samples z ~ p̃, so x = f(z) ~ p exactly, for any flow —
trained or not — up to the usual HMC conditions (a reversible, volume-preserving
integrator and a Metropolis test on ΔH in float64).  The prior density does not enter.
If f trivialised the theory (Lüscher, Commun. Math. Phys. 293 (2010) 899,
arXiv:0907.5491), S̃ would be constant: the better the flow, the flatter S̃, the longer
the trajectories that stay accurate, and the faster the slow modes (the topological
charge) decorrelate (arXiv:2112.01586).

The force −∂S̃/∂z is taken by automatic differentiation through the flow (one forward and
one backward pass per force evaluation, batched over chains).  The flow runs in the
precision of ``[sample] dtype``; fields, momenta and ΔH are float64, so in float32 the
integrator is reversible to float32 round-off only (a bias far below any statistical error;
use ``dtype = "float64"`` for a strictly reversible integrator).

Stored per step: the observables and (optionally) the *physical* fields x = f(z); the
resume state holds the latent fields z.  Columns are those of HMC: ``accepted``,
``delta_h``.
"""

from __future__ import annotations

import copy

import torch

from ..devices import to_numpy
from .hmc import HMC
from .hmc_chains import HMCChains

__all__ = ["LatentTheory", "FlowHMCChains"]


class LatentTheory:
    """The pulled-back theory S̃(z) = S(f(z)) − log|det ∂f/∂z| on the flow's latent space.

    It offers what :class:`~latticeflow.mcmc.hmc.HMC` asks of a theory (``field_space``,
    ``field_shape``, ``action``, ``observables``, ``random_field``, ``cold_field``); its
    force is the autograd one.  ``random_field`` draws from the flow's prior.
    """

    def __init__(self, theory, flow):
        self.theory, self.flow = theory, flow
        self.field_space, self.field_shape = theory.field_space, theory.field_shape
        self.field_dtype = theory.field_dtype

    def push(self, z: torch.Tensor):
        """``(x, log|det ∂f/∂z|)`` in the theory's precision."""
        x, logdet = self.flow(z.to(self.flow.field_dtype))
        return self.field_space.to_action_dtype(x), logdet.to(torch.float64)

    def action(self, z: torch.Tensor) -> torch.Tensor:
        x, logdet = self.push(z)
        return self.theory.action(x).to(torch.float64) - logdet

    def observables(self, z: torch.Tensor) -> dict:
        with torch.no_grad():
            return self.theory.observables(self.push(z)[0])

    def random_field(self, n: int, generator=None) -> torch.Tensor:
        z = self.flow.prior.sample(n, generator=generator)
        return self.field_space.to_action_dtype(z)

    def cold_field(self, n: int) -> torch.Tensor:
        return self.field_space.identity(n, self.field_shape)

    def __repr__(self) -> str:
        return f"LatentTheory({self.theory!r})"


class FlowHMCChains(HMCChains):
    """``C`` chains of HMC on :class:`LatentTheory` (see the module docstring).

    Arguments:
        theory: the target theory.
        flow: the flow x = f(z) (any dtype; its prior's samples start the chains).
        hmc_config: the ``[hmc]`` settings of the latent-space integrator
            (:class:`~latticeflow.config.HMCConfig`; the force is always autograd).
        n_chains, thermalization, tune, seed, store_configs, progress: as for
            :class:`~latticeflow.mcmc.hmc_chains.HMCChains` (``start`` is a prior sample).
        batch_size: fields pushed through the flow at once when measuring a block.
        device: where the latent chains live (the flow's device).
        start_fields: physical fields x that start a fresh run (``[sample] start``); the
            chains start from z = f⁻¹(x).
    """

    sampler = "flow-hmc"

    def __init__(self, theory, flow, hmc_config, n_chains: int, thermalization: int = 100,
                 tune: bool = True, seed: int = 0, store_configs: bool = True,
                 progress: bool = True, batch_size: int = 1024, device="cpu", start_fields=None):
        flow = copy.deepcopy(flow).requires_grad_(False)  # the force needs ∂/∂z only
        latent = LatentTheory(theory, flow)
        hmc = HMC.from_config(latent, hmc_config, force="autograd")
        super().__init__(latent, hmc, n_chains, thermalization, tune, "hot", seed,
                         store_configs, progress, device, start_fields)
        self.physical, self.batch_size = theory, int(batch_size)

    def initial_field(self) -> torch.Tensor:
        """A prior sample, or the latent fields z = f⁻¹(x) of ``start_fields``."""
        if self.start_fields is None:
            return super().initial_field()
        x = self.given_fields()
        with torch.no_grad():
            z = torch.cat([self.theory.flow.inverse(x[i : i + self.batch_size].to(self.theory.flow.field_dtype))[0]
                           for i in range(0, x.shape[0], self.batch_size)])
        return self.theory.field_space.to_action_dtype(z)

    measure_each_step = False  # the block's latent fields are pushed through the flow at once

    def measure_block(self, z: torch.Tensor):
        """Observables and physical fields x = f(z) of a block's latent fields, pushed
        through the flow ``batch_size`` at a time."""
        rows, z = z.shape[0], z.flatten(0, 1)
        xs, obs = [], {}
        with torch.no_grad():
            for start in range(0, z.shape[0], self.batch_size):
                x = self.theory.push(z[start : start + self.batch_size])[0]
                for name, value in self.physical.observables(x).items():
                    obs.setdefault(name, []).append(value)
                if self.store_configs:
                    xs.append(x)
        observables = {k: to_numpy(torch.cat(v).view(rows, self.n_chains)) for k, v in obs.items()}
        configs = to_numpy(torch.cat(xs).view(rows, self.n_chains, *z.shape[1:])) if xs else None
        return observables, configs

    def extra(self) -> dict:
        return super().extra() | {"batch_size": self.batch_size}
