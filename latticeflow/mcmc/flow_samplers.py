"""Exact sampling with a flow: Metropolis independence chains, or i.i.d. draws with weights.

Both take a *proposal* ``propose(n, generator) -> (x, log_q)`` (a flow's ``sample`` in
float64, wrapped by the caller: this module never imports the flows) and a theory.

- :class:`IndependenceMetropolis` (arXiv:1904.12072 §III): each of ``C`` chains accepts
  the proposal x′ with probability min(1, w(x′)/w(x)), w = e^{−S}/q.  Exact for any flow,
  trained or not; the chain starts from a flow sample (no burn-in is needed beyond the
  τ_int-sized transient, which the Γ-method treats like any autocorrelation).
- :class:`IIDWithWeights`: raw flow samples and their log weights, for reweighting.

Both follow the chain-sampler protocol of :mod:`latticeflow.mcmc.driver`.  Proposals are
drawn in batches of ``batch_size``; the only per-proposal Python work is the
accept/reject scan over Monte Carlo time, vectorised over chains.
"""

from __future__ import annotations

import numpy as np
import torch

from .driver import Block, generator_state, restore_generator
from .independence import independence_chain, require_some_weight
from .kernels import proposal_weights, start_tensor
from .state import ChainState

__all__ = ["IndependenceMetropolis", "IIDWithWeights"]


class _FlowSampler:
    def __init__(self, theory, propose, n_chains: int, batch_size: int = 1024, seed: int = 0,
                 store_configs: bool = True, density=None, start_fields=None):
        if start_fields is not None and density is None:
            raise ValueError("chains started from given fields need the flow's density")
        self.theory, self.propose, self.density = theory, propose, density
        self.start_fields = start_fields
        self.n_chains, self.batch_size = int(n_chains), int(batch_size)
        self.store_configs = store_configs
        self.generator = torch.Generator().manual_seed(int(seed))

    def _batches(self, n: int):
        """n proposals in flow calls of at most ``batch_size``: ``(x, log_w)`` per call, x on the
        flow's device (where the action ran), log w float64 on the host (for the scan)."""
        for start in range(0, n, self.batch_size):
            with torch.no_grad():
                x, log_w = proposal_weights(self.theory, *self.propose(min(self.batch_size, n - start), self.generator))
            yield x, log_w.cpu()

    def _draw(self, n: int):
        """n proposals with their observables and log weights (float64), on the host: the
        flow and the action run on the flow's device, the accept/reject scan on the CPU."""
        xs, obs, log_ws = [], [], []
        for x, log_w in self._batches(n):
            with torch.no_grad():
                obs.append({k: v.cpu() for k, v in self.theory.observables(x).items()})
            xs.append(x.cpu() if self.store_configs else None)
            log_ws.append(log_w)
        observables = {k: torch.cat([o[k] for o in obs]) for k in obs[0]}
        configs = torch.cat(xs) if self.store_configs else None
        return configs, observables, torch.cat(log_ws)

    def extra(self) -> dict:
        start = {"start": self.start_fields.record} if self.start_fields is not None else {}
        return {"batch_size": self.batch_size} | start


class IndependenceMetropolis(_FlowSampler):
    """Metropolis independence chains fed by batched flow proposals.

    References:
        Albergo, Kanwar, Shanahan, arXiv:1904.12072.

    Arguments:
        theory: the target theory (its action defines w).
        propose: ``propose(n, generator) -> (x, log_q)``.
        n_chains: independent chains C.
        batch_size: proposals per flow call.
        seed: seeds the generator used for proposals and accept/reject.
        store_configs: keep every row's fields in the block.
        density: ``density(x) -> log q(x)``, needed only with ``start_fields``.
        start_fields: fields that start a fresh run instead of a flow sample (``[sample]
            start``; their log w comes from ``density``).
    """

    sampler = "flow-mcmc"
    mcmc_columns = ["accepted", "log_weight", "proposal_log_weight"]

    def start(self, state: ChainState | None) -> None:
        if state:
            restore_generator(self.generator, state.rng)
            self.x = torch.from_numpy(state.field)
            self.log_w = torch.from_numpy(state.log_weight)
            self.obs = {k: torch.from_numpy(v) for k, v in state.observables.items()}
            return
        if self.start_fields is not None:
            x, obs, log_w = self._given()
        else:
            x, obs, log_w = self._draw(self.n_chains)
        self.x = x if x is not None else torch.zeros(0)
        self.obs, self.log_w = obs, log_w

    def _given(self):
        """The ``start_fields`` with their observables and log weights, like :meth:`_draw`."""
        x = start_tensor(self.start_fields, self.theory)
        with torch.no_grad():
            x, log_w = proposal_weights(self.theory, x, self.density(x).cpu())
            obs = {k: v.cpu() for k, v in self.theory.observables(x).items()}
        return (x if self.store_configs else None), obs, log_w

    def advance(self, rows: int) -> Block:
        """``rows`` steps of every chain, in chunks of about ``batch_size`` proposals (one flow
        call each), so that the proposals of a chunk are held only while it is scanned."""
        step = max(1, self.batch_size // self.n_chains)
        blocks = [self._advance(min(step, rows - r)) for r in range(0, rows, step)]
        # refused only if no proposal of the whole block has a finite weight (a chunk without
        # one accepts nothing and leaves the chains as they were)
        require_some_weight(torch.from_numpy(np.concatenate([b.mcmc["proposal_log_weight"].ravel() for b in blocks])))
        if len(blocks) == 1:
            return blocks[0]
        return Block({k: np.concatenate([b.observables[k] for b in blocks]) for k in blocks[0].observables},
                     {k: np.concatenate([b.mcmc[k] for b in blocks]) for k in blocks[0].mcmc},
                     np.concatenate([b.configs for b in blocks]) if self.store_configs else None)

    def _advance(self, rows: int) -> Block:
        """The chains' accept/reject scan over ``rows × C`` fresh proposals; only the proposals
        some chain holds afterwards are measured (a rejected one never enters the ensemble,
        and the theory's observables can cost more than the flow and the action together)."""
        c = self.n_chains
        xs, log_ws = zip(*self._batches(rows * c))
        x, log_w = torch.cat(xs), torch.cat(log_ws).view(rows, c)
        log_u = torch.log(torch.rand(rows, c, dtype=torch.float64, generator=self.generator))
        accepted, source, chain_log_w = independence_chain(log_w, self.log_w, log_u)
        # gather: proposal index source*C + c, or the chain's state before the block (−1)
        flat = (source * c + torch.arange(c)).clamp(min=0)
        keep = source < 0
        held, where = torch.unique(flat[~keep], return_inverse=True)
        measured = {}
        if held.numel():
            with torch.no_grad():
                measured = {k: v.cpu() for k, v in self.theory.observables(x[held.to(x.device)]).items()}
        out_obs = {}
        for k, old in self.obs.items():
            values = old.expand(rows, c).clone()
            if held.numel():
                values[~keep] = measured[k][where]
            out_obs[k] = values.numpy()
        configs = None
        if self.store_configs:
            x = x.cpu()
            chosen = x[flat.reshape(-1)].view(rows, c, *x.shape[1:])
            mask = keep.view(rows, c, *([1] * (x.dim() - 1)))
            configs = torch.where(mask, self.x.unsqueeze(0).expand_as(chosen), chosen)
            self.x = configs[-1].clone()
            configs = configs.numpy()
        self.obs = {k: torch.from_numpy(v[-1].copy()) for k, v in out_obs.items()}
        self.log_w = chain_log_w[-1].clone()
        return Block(out_obs, {"accepted": accepted.numpy(), "log_weight": chain_log_w.numpy(),
                               "proposal_log_weight": log_w.numpy()}, configs)

    def state(self) -> ChainState:
        return ChainState(field=self.x.numpy(), rng=generator_state(self.generator),
                          log_weight=self.log_w.numpy(), observables={k: v.numpy() for k, v in self.obs.items()})


class IIDWithWeights(_FlowSampler):
    """Independent flow samples with log weights log w = −S − log q, for reweighting.

    Arguments: as :class:`IndependenceMetropolis`; ``n_chains`` only sets the row width.
    """

    sampler = "flow-iid"
    mcmc_columns = ["accepted", "log_weight"]

    def start(self, state: ChainState | None) -> None:
        if state:
            restore_generator(self.generator, state.rng)

    def advance(self, rows: int) -> Block:
        c = self.n_chains
        x, obs, log_w = self._draw(rows * c)
        require_some_weight(log_w)
        out_obs = {k: v.view(rows, c).numpy() for k, v in obs.items()}
        configs = x.view(rows, c, *x.shape[1:]).numpy() if x is not None else None
        return Block(out_obs, {"accepted": np.ones((rows, c), dtype=bool),
                               "log_weight": log_w.view(rows, c).numpy()}, configs)

    def state(self) -> ChainState:
        return ChainState(rng=generator_state(self.generator))
