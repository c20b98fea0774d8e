"""The mixed kernel: HMC trajectories interleaved with flow independence proposals.

One step of the chain is ``k`` HMC trajectories followed by ``m`` Metropolis independence
proposals from the flow (``[sample] hmc_per_step = k``, ``flow_per_step = m``).  Each
kernel leaves p ∝ e^{−S} invariant on its own — HMC by detailed balance of the
reversible, volume-preserving integrator with its Metropolis test, the independence step
by min(1, w′/w) with log w = −S − log q — so their composition does too, for any flow.
HMC moves locally and decorrelates the plaquette; the flow proposes global moves and, when
it is accepted at all, changes the topological sector in one step, which HMC near the
continuum almost never does (arXiv:2003.06413 §V; cf. the mixed updates of
arXiv:2106.05934).

After the HMC trajectories the chain's configuration is no longer a flow sample, so its
weight is recomputed through the flow's inverse: log w(x) = −S(x) − log q(x),
``log q = flow.log_prob``.  Proposals do not depend on the chain, so they are drawn in chunks of
``batch_size`` from a stream of their own (its state at the chunk's start and the offset
into it are what a resume stores, so the chains see the same proposals however a run is
split); the per-step work is k trajectories, one density evaluation of C configurations
and the accept/reject of m proposals, all vectorised over chains.

Columns (``(rows, C)``, one row per step): ``accepted`` (some flow proposal of the step
was accepted), ``flow_acceptance`` (the fraction of its m proposals accepted — the
acceptance that reports show), ``hmc_acceptance`` (the fraction of its k trajectories),
``delta_h`` (ΔH of its last trajectory), ``log_weight`` (the chain's log w after the step)
and ``proposal_log_weight`` (its last proposal's log w, for the flow's ESS).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LatticeflowError
from .hmc import HMC
from .hmc_chains import HMCChains
from .independence import require_some_weight
from .kernels import Composite, HMCKernel, IndependenceKernel, KernelState, ProposalStream

__all__ = ["MixedKernel"]


class MixedKernel(HMCChains):
    """``C`` chains of k HMC trajectories then m flow independence proposals per step.

    One step is the kernel ``Composite([HMCKernel(hmc)] * k + [IndependenceKernel] * m)``
    (:mod:`latticeflow.mcmc.kernels`), its proposals one :class:`ProposalStream`.  The HMC
    part (fresh start and thermalisation, resume state, settings) is
    :class:`~latticeflow.mcmc.hmc_chains.HMCChains`; a fresh start thermalises from flow
    samples.

    Arguments:
        theory: the target theory.
        hmc: an :class:`HMC` integrator for the theory (its step size is tuned during
            thermalisation when ``tune``).
        propose: ``propose(n, generator) -> (x, log_q)`` (the flow's sampler).
        density: ``density(x) -> log_q`` (the flow's log-density, through its inverse).
        n_chains: C.
        hmc_per_step, flow_per_step: k ≥ 1 and m ≥ 1.
        thermalization: HMC trajectories from a flow sample before the first stored step.
        tune: tune the HMC step size during thermalisation.
        batch_size: proposals per flow call.
        seed: seeds the HMC momenta and accept/reject, and (derived from it) the proposals.
        store_configs: keep every step's fields in the block.
        progress: show a bar during thermalisation.
        device: where the chains, the HMC and the flow's density run (the flow must be
            there too; the generators stay on the CPU).
        start_fields: fields that start a fresh run instead of flow samples (``[sample]
            start``).
    """

    sampler = "mixed"
    weight_column = "log_weight"

    def __init__(self, theory, hmc: HMC, propose, density, n_chains: int, hmc_per_step: int = 1,
                 flow_per_step: int = 1, thermalization: int = 100, tune: bool = True,
                 batch_size: int = 1024, seed: int = 0, store_configs: bool = True,
                 progress: bool = True, device="cpu", start_fields=None):
        if int(hmc_per_step) < 1 or int(flow_per_step) < 1:
            raise ValueError("need hmc_per_step >= 1 and flow_per_step >= 1")
        self.k, self.m, self.batch_size = int(hmc_per_step), int(flow_per_step), int(batch_size)
        # the flow's proposals: a stream of their own (seeded from the same seed), so a block
        # or a resume never changes which proposals the chains see
        self.stream = ProposalStream(propose, theory, self.batch_size, int(seed) ^ 0x5DEECE66D, device)
        kernel = Composite([HMCKernel(hmc)] * self.k + [IndependenceKernel(theory, self.stream, density)] * self.m)
        super().__init__(theory, hmc, n_chains, thermalization, tune, "hot", seed, store_configs,
                         progress, device, start_fields, kernel)  # self.generator: momenta, accept/reject

    def columns(self) -> list[str]:
        """The kernel's columns, then the HMC integrator's diagnostics (``cg_iterations``,
        summed over the step's trajectories)."""
        return ["accepted", "flow_acceptance", "hmc_acceptance", "delta_h", "log_weight",
                "proposal_log_weight", *self.hmc.md.stat_names]

    def initial_field(self) -> torch.Tensor:
        """``start_fields``, else the stream's first C flow proposals."""
        if self.start_fields is not None:
            return self.given_fields()
        return self.stream.take(self.n_chains)[0]

    def record(self, state: KernelState, infos: list) -> dict:
        hmc, flow = infos[: self.k], infos[self.k :]
        n_accepted = torch.stack([i["accepted"] for i in flow]).to(torch.float64).sum(0)
        columns = {"accepted": n_accepted > 0, "flow_acceptance": n_accepted / self.m,
                   "hmc_acceptance": torch.stack([i["accepted"] for i in hmc]).to(torch.float64).mean(0),
                   "delta_h": hmc[-1]["delta_h"], "log_weight": state.log_weight,
                   "proposal_log_weight": flow[-1]["proposal_log_weight"]}
        for name in self.hmc.md.stat_names:
            columns[name] = torch.stack([i[name] for i in hmc]).to(torch.float64).sum(0)
        return columns

    def check(self, mcmc: dict, rows: int) -> None:
        super().check(mcmc, rows)
        require_some_weight(torch.from_numpy(mcmc["proposal_log_weight"]))

    def save_settings(self) -> dict:
        stream = self.stream.state()
        return super().save_settings() | {"proposal_rng": stream["rng"], "proposal_offset": np.array(stream["offset"]),
                                          "proposal_batch_size": np.array(self.batch_size)}

    def load_settings(self, settings: dict) -> None:
        written = int(settings.get("proposal_batch_size", self.batch_size))
        offset = int(settings["proposal_offset"])
        if written != self.batch_size or offset > self.batch_size:
            was = f"batch_size = {written}" if written != self.batch_size else "a larger batch_size"
            raise LatticeflowError(
                f"sample.batch_size: this file's chains draw their flow proposals in chunks of "
                f"{was}, and a resume must keep that stream; continue it with the same "
                f"batch_size (now {self.batch_size})")
        self.stream.load_state(settings["proposal_rng"], offset)
        super().load_settings(settings)

    def extra(self) -> dict:
        return super().extra() | {"hmc_per_step": self.k, "flow_per_step": self.m,
                                  "batch_size": self.batch_size}
