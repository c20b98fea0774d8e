"""HMC as a chain sampler for :func:`latticeflow.mcmc.driver.run_ensemble`: the
:class:`~latticeflow.mcmc.kernels.HMCKernel` run by the chain runner
(:class:`~latticeflow.mcmc.chains.KernelChains`).

A fresh start thermalises (tuning the step size, then freezing it); the state written
with every block — current fields, generator state, the frozen integrator settings and
the reunitarisation counter — lets a resumed run continue exactly as if it had never
stopped.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..errors import LatticeflowError
from .chains import KernelChains
from .hmc import HMC
from .kernels import HMCKernel

__all__ = ["HMCChains"]


class HMCChains(KernelChains):
    """``C`` HMC chains advanced as one batch.

    Arguments:
        theory: the theory to sample.
        hmc: an :class:`HMC` integrator (``HMC.from_config``).
        n_chains: C.
        thermalization: trajectories before the first stored one (step size tuned there).
        tune: tune the step size during thermalisation.
        start: ``"hot"`` or ``"cold"``.
        seed: seeds the chains' generator.
        store_configs: keep the fields of every trajectory in the block.
        progress: show a bar during thermalisation.
        device: where the fields and the molecular dynamics live (the generator stays on
            the CPU, :mod:`latticeflow.devices`).
        start_fields: a :class:`~latticeflow.ensemble.start.StartFields` whose fields start
            a fresh run instead of ``start`` (``[sample] start``; its record goes into
            ``extra``).
        kernel: the kernel of one step (default: one trajectory, ``HMCKernel(hmc)``).
    """

    sampler = "hmc"
    weight_column = "delta_h"

    def __init__(self, theory, hmc: HMC, n_chains: int, thermalization: int = 200,
                 tune: bool = True, start: str = "hot", seed: int = 0,
                 store_configs: bool = True, progress: bool = True, device="cpu",
                 start_fields=None, kernel=None):
        self.hmc, self.tune = hmc, tune
        super().__init__(theory, kernel or HMCKernel(hmc), n_chains, self.columns(), self.weight_column, self.sampler, seed,
                         thermalization, start, start_fields, store_configs, device, progress)

    def columns(self) -> list[str]:
        """``accepted``, ``delta_h`` and the integrator's diagnostics (``cg_iterations``)."""
        return ["accepted", "delta_h", *self.hmc.md.stat_names]

    def thermalize(self, x: torch.Tensor, callback) -> torch.Tensor:
        """HMC trajectories from ``x``, tuning the step size (then frozen) when ``tune``."""
        return self.hmc.thermalize(x, self.thermalization, self.generator, tune=self.tune, callback=callback)

    def check(self, mcmc: dict, rows: int) -> None:
        """Refuse a block whose every trajectory had a non-finite energy change."""
        if not np.isfinite(mcmc["delta_h"]).any():
            why = "the action overflows at these couplings or this step size"
            if "cg_iterations" in self.hmc.md.stat_names:
                why += ", or CG did not converge (hmc.cg_action_tolerance, hmc.cg_max_iterations)"
            raise LatticeflowError(f"{self.sampler}: all {rows} trajectories of every chain had a "
                                   f"non-finite energy change; {why} (nothing of this block was written)")

    def save_settings(self) -> dict:
        hmc_state = json.dumps(self.hmc.state_dict()).encode()
        return {"hmc": np.frombuffer(hmc_state, dtype=np.uint8).copy(),
                "reunitarize_count": np.array(self.hmc._count)}

    def load_settings(self, settings: dict) -> None:
        self.hmc.load_state_dict(json.loads(bytes(settings["hmc"]).decode()))
        self.hmc._count = int(settings.get("reunitarize_count", np.array(0)))

    def extra(self) -> dict:
        extra = {"hmc": self.hmc.state_dict(), "thermalization": self.thermalization}
        return extra | ({"start": self.start_fields.record} if self.start_fields is not None else {})
