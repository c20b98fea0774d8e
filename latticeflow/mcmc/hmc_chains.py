"""HMC as a chain sampler for :func:`latticeflow.mcmc.driver.run_ensemble`.

A fresh start thermalises (tuning the step size, then freezing it); the state written
with every block — current fields, generator state, the frozen integrator settings and
the reunitarisation counter — lets a resumed run continue exactly as if it had never
stopped.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tqdm.auto import tqdm

from ..devices import to_numpy
from ..errors import LatticeflowError
from .driver import Block, generator_state, restore_generator
from .hmc import HMC, initial_field
from .kernels import start_tensor
from .state import ChainState

__all__ = ["HMCChains"]


class HMCChains:
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
    """

    sampler = "hmc"

    @property
    def mcmc_columns(self) -> list[str]:
        """``accepted``, ``delta_h`` and the integrator's diagnostics (``cg_iterations``)."""
        return ["accepted", "delta_h", *self.hmc.md.stat_names]

    def __init__(self, theory, hmc: HMC, n_chains: int, thermalization: int = 200,
                 tune: bool = True, start: str = "hot", seed: int = 0,
                 store_configs: bool = True, progress: bool = True, device="cpu",
                 start_fields=None):
        self.theory, self.hmc = theory, hmc
        self.start_fields = start_fields
        self.device = torch.device(device)
        self.n_chains = int(n_chains)
        self.thermalization, self.tune, self.start_kind = int(thermalization), tune, start
        self.store_configs, self.progress = store_configs, progress
        self.generator = torch.Generator().manual_seed(int(seed))

    def start(self, state: ChainState | None) -> None:
        if state:
            restore_generator(self.generator, state.rng)
            self.x = torch.from_numpy(state.field).to(self.device)
            self.hmc.load_state_dict(json.loads(bytes(state.settings["hmc"]).decode()))
            self.hmc._count = int(state.settings.get("reunitarize_count", np.array(0)))
            return
        x = self.initial_field()
        with tqdm(total=self.thermalization, desc="thermalising", unit="traj",
                  disable=not self.progress, dynamic_ncols=True) as bar:
            self.x = self.hmc.thermalize(x, self.thermalization, self.generator,
                                         tune=self.tune, callback=lambda: bar.update(1))

    def initial_field(self) -> torch.Tensor:
        """The fields a fresh start thermalises from (``start_fields``, else ``start``: hot
        or cold)."""
        if self.start_fields is not None:
            return self.given_fields()
        return initial_field(self.theory, self.n_chains, self.start_kind, self.generator).to(self.device)

    def advance(self, rows: int) -> Block:
        self.x, history = self.hmc.sample(self.x, rows, self.generator, measure=True,
                                          keep_fields=self.store_configs)
        mcmc = {k: to_numpy(history.pop(k)) for k in self.mcmc_columns}
        self._check_energies(mcmc, rows)
        fields = history.pop("fields", None)
        return Block({k: to_numpy(v) for k, v in history.items()}, mcmc,
                     to_numpy(fields) if fields is not None else None)

    def given_fields(self) -> torch.Tensor:
        """``start_fields`` as a tensor of the theory's field dtype on the chains' device."""
        return start_tensor(self.start_fields, self.theory, self.device)

    def _check_energies(self, mcmc: dict, rows: int) -> None:
        if not np.isfinite(mcmc["delta_h"]).any():
            why = "the action overflows at these couplings or this step size"
            if "cg_iterations" in self.hmc.md.stat_names:
                why += ", or CG did not converge (hmc.cg_action_tolerance, hmc.cg_max_iterations)"
            raise LatticeflowError(f"{self.sampler}: all {rows} trajectories of every chain had a "
                                   f"non-finite energy change; {why} (nothing of this block was written)")

    def state(self) -> ChainState:
        hmc_state = json.dumps(self.hmc.state_dict()).encode()
        return ChainState(field=to_numpy(self.x), rng=generator_state(self.generator),
                          settings={"hmc": np.frombuffer(hmc_state, dtype=np.uint8).copy(),
                                    "reunitarize_count": np.array(self.hmc._count)})

    def extra(self) -> dict:
        extra = {"hmc": self.hmc.state_dict(), "thermalization": self.thermalization}
        return extra | ({"start": self.start_fields.record} if self.start_fields is not None else {})
