"""Markov kernels with one contract, ``kernel.step(state, generator) -> (state, info)``.

A :class:`KernelState` holds what the next step needs: the fields of C chains and, where a
kernel knows it, their log weight log w = −S − log q.  The info is a dict of ``(C,)``
tensors for the diagnostics (``accepted``, ``delta_h``, ``proposal_log_weight``, …).
Kernels compose: :class:`Composite` runs its kernels in sequence, and each of them leaves
p ∝ e^{−S} invariant on its own, so their composition does too.

- :func:`~latticeflow.mcmc.accept.metropolis`: the one accept/reject of the package: accept
  where log u < log of the acceptance ratio; a NaN ratio is a rejection.  HMC (ratio
  e^{−ΔH}), Metropolis independence (w′/w) and every kernel below use it.
- :class:`HMCKernel`: one HMC trajectory per chain (:class:`~latticeflow.mcmc.hmc.HMC`; on
  the flow's pull-back ``LatentTheory`` it is flow HMC).
- :class:`ProposalStream`: a flow's proposals with their log weights, drawn in fixed chunks
  of ``batch_size`` from a generator of their own, so the proposals never depend on how a
  run was split into blocks (its state is the stream's state at the chunk's start and the
  offset into it).
- :class:`IndependenceKernel`: one Metropolis independence proposal per chain from a stream.
- :class:`Composite`: kernels in sequence (``Composite([hmc] * k + [flow] * m)`` is the
  mixed kernel of :mod:`latticeflow.mcmc.mixed`).
- :class:`~latticeflow.mcmc.chains.KernelChains` (importable from here too): C chains of
  any kernel as a chain sampler — the one chain runner of every Markov-chain sampler —, so
  that a kernel composed in a script runs to an ensemble file like the command line's
  samplers (docs/kernels.md).

Example (HMC trajectories interleaved with flow proposals, from a script; ``flow`` is a
trained flow, e.g. ``latticeflow.load_model("models/u1_L8_b2.toml")[1]``):

    >>> from latticeflow.samplers import flow_density, flow_proposal     # doctest: +SKIP
    >>> stream = ProposalStream(flow_proposal(flow), theory, batch_size=256, seed=1)
    >>> kernel = Composite([HMCKernel(HMC(theory, steps=8))] * 2
    ...                    + [IndependenceKernel(theory, stream, flow_density(flow))])
    >>> state, infos = kernel.step(KernelState(x), torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .accept import metropolis
from .driver import generator_state, restore_generator
from .independence import chain_log_weight

__all__ = ["KernelState", "HMCKernel", "ProposalStream", "IndependenceKernel", "Composite",
           "proposal_weights", "start_tensor", "metropolis"]


@dataclass
class KernelState:
    """The fields ``x`` ``(C, *field_shape)`` of C chains and their log w ``(C,)`` float64
    where known (None: a kernel moved them without a flow's density, e.g. HMC)."""

    x: torch.Tensor
    log_weight: torch.Tensor | None = None


def proposal_weights(theory, x: torch.Tensor, log_q: torch.Tensor, device=None):
    """Proposals cast to the precision of the action, on ``device``, and their log w =
    −S − log q in float64 (a NaN weight becomes −inf: never accepted)."""
    x = theory.field_space.to_action_dtype(x)
    if device is not None:
        x, log_q = x.to(device), log_q.to(device)
    return x, chain_log_weight(theory.action(x), log_q)


def start_tensor(start_fields, theory, device="cpu") -> torch.Tensor:
    """The fields of a :class:`~latticeflow.ensemble.start.StartFields` (``[sample] start``)
    as a tensor in the theory's field dtype on ``device``: the one way chains start from
    given fields."""
    x = torch.from_numpy(np.ascontiguousarray(start_fields.fields))
    return x.to(device=device, dtype=theory.field_dtype)


class HMCKernel:
    """One HMC trajectory per chain; info: ``accepted``, ``delta_h`` and the integrator's
    diagnostics (``hmc.md.stat_names``, e.g. ``cg_iterations``)."""

    def __init__(self, hmc):
        self.hmc = hmc

    def step(self, state: KernelState, generator: torch.Generator):
        x, accepted, delta_h = self.hmc.trajectory(state.x, generator)
        return KernelState(x), {"accepted": accepted, "delta_h": delta_h, **self.hmc.last_stats}


class ProposalStream:
    """A flow's proposals with their log weights, in chunks of ``batch_size`` (see the
    module docstring).

    Arguments:
        propose: ``propose(n, generator) -> (x, log_q)`` (e.g. ``samplers.flow_proposal``).
        theory: the target theory (its action gives log w).
        batch_size: proposals per flow call.
        seed: seeds the stream's own generator.
        device: where the proposals and their weights are returned.
    """

    def __init__(self, propose, theory, batch_size: int = 1024, seed: int = 0, device="cpu"):
        self.propose, self.theory, self.batch_size = propose, theory, int(batch_size)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.offset, self.chunk_start = self.batch_size, None  # empty: the first take draws a chunk

    def _chunk(self) -> None:
        self.chunk_start = generator_state(self.generator)
        with torch.no_grad():
            x, log_q = self.propose(self.batch_size, self.generator)
            self.buffer = proposal_weights(self.theory, x, log_q, self.device)
        self.offset = 0

    def take(self, n: int):
        """The next ``n`` proposals of the stream: fields and log w."""
        xs, log_ws = [], []
        while n > 0:
            if self.offset == self.batch_size:
                self._chunk()
            k = min(n, self.batch_size - self.offset)
            xs.append(self.buffer[0][self.offset : self.offset + k])
            log_ws.append(self.buffer[1][self.offset : self.offset + k])
            self.offset, n = self.offset + k, n - k
        return torch.cat(xs), torch.cat(log_ws)

    def state(self) -> dict:
        """What a resume needs: the stream at its chunk's start, the offset into the chunk."""
        if self.chunk_start is None:  # nothing drawn yet: the stream's first chunk
            self._chunk()
        return {"rng": self.chunk_start, "offset": self.offset}

    def load_state(self, rng: np.ndarray, offset: int) -> None:
        """Continue a stream saved by :meth:`state` (``offset`` ≤ ``batch_size``)."""
        restore_generator(self.generator, rng)
        self._chunk()
        if not 0 <= int(offset) <= self.batch_size:
            raise ValueError(f"proposal offset {offset} outside its chunk")
        self.offset = int(offset)


class IndependenceKernel:
    """One Metropolis independence proposal per chain from a :class:`ProposalStream`:
    accept x′ with min(1, w(x′)/w(x)); the current log w comes from the state, or from
    ``density`` (the flow's log q, through its inverse) where a kernel before it moved the
    fields.  Info: ``accepted`` and ``proposal_log_weight``."""

    def __init__(self, theory, stream: ProposalStream, density):
        self.theory, self.stream, self.density = theory, stream, density

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        log_u = torch.log(torch.rand(x.shape[0], dtype=torch.float64, generator=generator)).to(x.device)
        with torch.no_grad():
            current = state.log_weight
            if current is None:
                current = chain_log_weight(self.theory.action(x), self.density(x))
            proposal, proposal_log_w = self.stream.take(x.shape[0])
            accept = metropolis(proposal_log_w - current, log_u)
            x = torch.where(accept.view(-1, *([1] * (x.dim() - 1))), proposal, x)
            current = torch.where(accept, proposal_log_w, current)
        return KernelState(x, current), {"accepted": accept, "proposal_log_weight": proposal_log_w}


class Composite:
    """Kernels in sequence; info: the list of their infos, in order."""

    def __init__(self, kernels):
        self.kernels = list(kernels)
        if not self.kernels:
            raise ValueError("a composite kernel needs at least one kernel")

    def step(self, state: KernelState, generator: torch.Generator):
        infos = []
        for kernel in self.kernels:
            state, info = kernel.step(state, generator)
            infos.append(info)
        return state, infos


def __getattr__(attr):
    # the chain runner lives in .chains (which imports this module); importable from here too
    if attr in ("KernelChains",):
        from . import chains

        return getattr(chains, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
