"""Training a stochastic normalizing flow on the work of its transports (``[train] objective =
"work"``; arXiv:2201.08862, arXiv:2412.00200, arXiv:2510.25704; docs/nonequilibrium.md).

The flow's couplings, restricted to the links near the defect, are the maps f_n of a defect
transport (:func:`~latticeflow.flows.defect_flow.defect_maps`; the ``[sample]`` keys of the
``snf`` sampler give the protocol, the defect, the updates, ``maps`` and ``patch``).  The
loss is the mean work of a batch of transports from c = 0,

  ⟨W⟩ = ⟨Σ_n S_{c_n}[f_n(U_{n−1})] − S_{c_{n−1}}[U_{n−1}] − log|det J_n|⟩
      = KL(forward path ‖ reverse path) + ΔF ≥ ΔF,

with the Monte Carlo updates detached: the gradient flows through each map's output and
log-det along the path, never through a heat-bath sweep or an HMC trajectory.  log w = −W
gives the ESS and the acceptance of the evaluation (the acceptance of the sampler with
exact starts); −⟨W⟩ is the logged lower bound on log(Z_1/Z_0) = −ΔF.

Starts: exact independent c = 0 draws for pure U(1); for the Schwinger model a chain of
``prior_updates`` HMC trajectories at c = 0 per step, thermalised by ``[sample]
thermalization`` trajectories (after tuning at c = 1 with ``[hmc] tune``), kept in the
checkpoint so a resume continues bit for bit.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..flows.defect_flow import defect_maps, map_problem
from ..mcmc.nemcmc import ChainStarts, Transport, transport_parts
from .objectives import check_work_objective

__all__ = ["snf_transport", "transport_work", "WorkObjective"]

F64 = torch.float64


def snf_transport(flow, parts, maps: int, patch: int) -> Transport:
    """The transport of ``parts`` (:func:`~latticeflow.mcmc.nemcmc.transport_parts`) with ``flow``'s couplings as its maps
    (:func:`~latticeflow.flows.defect_flow.defect_maps`); ConfigError (one line) for a flow
    that does not fit."""
    problem = map_problem(flow, maps, parts.protocol.steps)
    if problem:
        raise ConfigError(f"sample.maps: {problem}")
    maps = defect_maps(flow, parts.defect.defect, parts.protocol.steps, maps, patch)
    return Transport(parts.defect, parts.protocol, parts.update, maps)


def transport_work(transport: Transport, x: torch.Tensor, generator: torch.Generator):
    """``(W, U_N)`` of one transport of the fields ``x`` ``(C, 2, L_0, L_1)``, W ``(C,)`` float64
    differentiable in the maps' parameters (the updates detached)."""
    c, defect = transport.protocol.values, transport.defect
    work = torch.zeros(x.shape[0], dtype=F64, device=x.device)
    for n in range(1, len(c)):
        y, log_det = transport.maps[n - 1](x)
        defect.set_c(c[n])
        s_y = defect.action(y).to(F64)
        with torch.no_grad():
            defect.set_c(c[n - 1])
            s_x = defect.action(x).to(F64)
        work = work + s_y - s_x - log_det
        with torch.no_grad():
            x, _ = transport.update(y.detach(), c[n], generator)
    return work, x


class WorkObjective:
    """``[train] objective = "work"`` (module docstring), made from a
    :class:`~latticeflow.training.trainer.Trainer`."""

    def __init__(self, trainer):
        cfg, self.trainer = trainer.cfg, trainer
        check_work_objective(trainer, "work", "snf")
        s = cfg.sample
        maps, patch = s.maps, s.patch
        self.parts = transport_parts(trainer.theory, s, cfg.hmc, trainer.device)
        self.transport = snf_transport(trainer.flow, self.parts, maps, patch)
        self.thermalization = s.thermalization

    @property
    def chain(self) -> ChainStarts | None:
        starts = self.parts.starts
        return starts if isinstance(starts, ChainStarts) else None

    def start(self) -> None:
        """Tune an HMC at c = 1 (``[hmc] tune``) and thermalise the chain of starts at c = 0."""
        t, hmc, defect = self.trainer, self.parts.hmc, self.parts.defect
        if hmc is None:
            return
        x = t.theory.random_field(t.rank_batch, t.generator).to(t.device)
        if t.cfg.hmc.tune:
            defect.set_c(1.0)
            x = hmc.thermalize(x, self.thermalization, t.generator, tune=True)
        if self.chain is not None:
            defect.set_c(0.0)
            self.chain.current = hmc.thermalize(x, self.thermalization, t.generator, tune=False)

    def _starts(self, n: int, generator, advance: bool) -> torch.Tensor:
        chain = self.chain
        if chain is None:
            return self.parts.starts.propose(n, generator)[0]
        current = chain.current
        x, _ = chain.propose(n, generator)
        if advance:  # training: the chain of starts always moves on
            chain.commit(torch.ones(n, dtype=torch.bool, device=x.device))
        else:
            chain.current = current
        return x

    def loss(self, target, estimator: str):
        t = self.trainer
        x = self._starts(t.rank_batch, t.generator, advance=True)
        work, _ = transport_work(self.transport, x, t.generator)
        return work.mean(), -work.detach()

    @torch.no_grad()
    def eval_log_weights(self, n: int, generator) -> torch.Tensor:
        """−W of ``n`` transports (for the Schwinger model, from the chain's current starts,
        which stay untouched)."""
        out, size = [], self.trainer.rank_batch if self.chain is not None else self.trainer.tc.batch_size
        for start in range(0, n, size):
            m = size if self.chain is not None else min(size, n - start)
            x = self._starts(m, generator, advance=False)
            out.append(-self.transport(x, generator)[1])
        return torch.cat(out)[:n]

    def state_dict(self) -> dict:
        state = {}
        if self.parts.hmc is not None:
            h = self.parts.hmc
            state["hmc"] = torch.tensor([h.step_size, h.steps, float(h.tuned), h._count], dtype=F64)
        if self.chain is not None:
            state["start_field"] = self.chain.current.detach().cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.parts.hmc is not None and state.get("hmc") is not None:
            h = self.parts.hmc
            step_size, steps, tuned, count = state["hmc"].tolist()
            h.load_state_dict(h.state_dict() | {"step_size": step_size, "steps": int(steps), "tuned": bool(tuned)})
            h._count = int(count)
        if self.chain is not None:
            if "start_field" not in state:
                self.start()  # a checkpoint without this rank's chain: thermalise afresh
            else:
                self.chain.current = state["start_field"].to(self.trainer.device)
