"""Training the maps of flow-assisted instanton jumps on their work (``[train] objective =
"jump-work"``; the ``flow-jump`` sampler, :mod:`latticeflow.mcmc.flow_jumps`, docs/flow_jumps.md).

The maps f_1 … f_N are the model's U(1) gauge-equivariant couplings on the whole lattice, cut
into ``[sample] maps`` groups (:func:`jump_maps`).  The loss is the mean work of a batch of
forward moves (random q, centre) from equilibrium configurations U of the target,

    ⟨W⟩ = KL(forward path ‖ reverse path) ≥ 0     (the free energy of J is zero),

with the transport's HMC updates detached: the gradient flows through each map's output and
log-det only.  The equilibrium configurations are a chain of the target kept in the
checkpoint: thermalised by ``[sample] thermalization`` base trajectories (the step size tuned
there with ``[hmc] tune``, then frozen), advanced before every training step by
``updates_per_step`` base trajectories and one plain instanton jump (exact determinant), so
a resume continues bit for bit.  Evaluation: log w = −W of fresh moves from the chain's
current configurations (untouched); the acceptance reported is the sampler's, ⟨min(1, e^{−W})⟩.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ..errors import ConfigError
from ..flows.defect_flow import defect_maps, map_problem
from ..mcmc.flow_jumps import AnnealedJump, TransportHMC, transport_problem
from ..mcmc.hmc import HMC
from ..mcmc.jumps import InstantonJump
from ..mcmc.kernels import KernelState
from .objectives import check_work_objective

__all__ = ["jump_maps", "jump_parts", "JumpWorkObjective", "NAME"]

NAME = "jump-work"  #: ``[train] objective``
F64 = torch.float64
DEFAULT_TRAJECTORY = 1.0  #: ``jump_trajectory_length``'s default (only with ``jump_md_steps`` > 0)


def jump_maps(flow, theory, steps: int, maps: int = 1) -> list:
    """The N = ``steps`` maps of a flow jump: ``flow``'s couplings on every link of the lattice
    (:func:`~latticeflow.flows.defect_flow.defect_maps` with the whole lattice as the region),
    cut into ``maps`` groups; a ConfigError (one line) if the flow does not fit."""
    problem = map_problem(flow, maps, steps)
    if problem:
        raise ConfigError(f"sample.maps: {problem}")
    return defect_maps(flow, torch.ones(theory.shape, dtype=torch.bool), steps, maps, patch=0)


def jump_parts(theory, sample, hmc_config, flow=None) -> SimpleNamespace:
    """``hmc`` (the base chain's), ``jump`` (:class:`AnnealedJump`) and ``follow`` (whether the
    transport takes the base's frozen integrator) from the ``[sample]`` keys of
    ``annealed-jump`` / ``flow-jump`` and ``[hmc]``; with ``flow``, its maps.  One-line
    ConfigErrors for a theory it does not apply to and keys that contradict each other."""
    s = sample
    problem = transport_problem(theory)
    if problem:
        raise ConfigError(f"sample.sampler: {s.sampler}: {problem}")
    follow = s.jump_md_steps == 0
    if follow and s.jump_trajectory_length != DEFAULT_TRAJECTORY:
        raise ConfigError("sample.jump_trajectory_length: with jump_md_steps = 0 the transport integrates as the "
                          "tuned base HMC does; set jump_md_steps >= 1 for a trajectory length of its own")
    if flow is not None and s.jump_steps < 1:
        raise ConfigError("sample.jump_steps: the maps of a flow jump act between its N >= 1 updates; "
                          "N = 0 is the plain instanton jump")
    hmc = HMC.from_config(theory, hmc_config)
    update = TransportHMC(theory, hmc_config.integrator, s.jump_trajectory_length, max(s.jump_md_steps, 1))
    maps = jump_maps(flow, theory, s.jump_steps, s.maps) if flow is not None else None
    return SimpleNamespace(hmc=hmc, jump=AnnealedJump(theory, s.jump_steps, update, maps), follow=follow)


class JumpWorkObjective:
    """``[train] objective = "jump-work"`` (module docstring), made from a
    :class:`~latticeflow.training.trainer.Trainer`."""

    def __init__(self, trainer):
        cfg, self.trainer = trainer.cfg, trainer
        check_work_objective(trainer, NAME, "flow-jump")
        s = cfg.sample
        self.parts = jump_parts(trainer.theory, s, cfg.hmc, flow=trainer.flow)
        self.plain = InstantonJump(trainer.theory, **dict(cfg.hmc.options))
        self.updates, self.thermalization, self.chain = s.updates_per_step, s.thermalization, None

    def _follow(self) -> None:
        if self.parts.follow:
            self.parts.jump.update.follow(self.parts.hmc)

    def start(self) -> None:
        """Thermalise the chain of the target (tuning the base HMC with ``[hmc] tune``)."""
        t = self.trainer
        x = t.theory.random_field(t.rank_batch, t.generator).to(t.device)
        self.chain = self.parts.hmc.thermalize(x, self.thermalization, t.generator, tune=t.cfg.hmc.tune)
        self._follow()

    @torch.no_grad()
    def _advance(self) -> None:
        g, x = self.trainer.generator, self.chain
        for _ in range(self.updates):
            x = self.parts.hmc.trajectory(x, g)[0]
        self.chain = self.plain.step(KernelState(x), g)[0].x

    def forward_work(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """W ``(C,)`` of forward moves from ``x`` with fresh (q, centre), differentiable in the maps."""
        jump = self.parts.jump
        q, centre, _ = jump.draw(x.shape[0], generator)
        forward = torch.ones(x.shape[0], dtype=torch.bool)
        return jump.transport(x, q, centre, forward, generator)[1]

    def loss(self, target, estimator: str):
        self._advance()
        work = self.forward_work(self.chain, self.trainer.generator)
        return work.mean(), -work.detach()

    @torch.no_grad()
    def eval_log_weights(self, n: int, generator) -> torch.Tensor:
        """−W of ``n`` forward moves from the chain's current configurations (cycled)."""
        out, c = [], self.chain.shape[0]
        for start in range(0, n, c):
            out.append(-self.forward_work(self.chain[: min(c, n - start)], generator))
        return torch.cat(out)

    @staticmethod
    def acceptance(log_w) -> float:
        """The flow-jump's acceptance of these moves, ⟨min(1, e^{−W})⟩ (each is accepted on its
        own work; the ESS of e^{−W} says how well they would reweight)."""
        return float(np.minimum(1.0, np.exp(np.asarray(log_w, dtype=np.float64))).mean())

    def state_dict(self) -> dict:
        h = self.parts.hmc
        return {"hmc": torch.tensor([h.step_size, h.steps, float(h.tuned), h._count], dtype=F64),
                "chain": self.chain.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        h = self.parts.hmc
        if state.get("hmc") is not None:
            step_size, steps, tuned, count = state["hmc"].tolist()
            h.load_state_dict(h.state_dict() | {"step_size": step_size, "steps": int(steps), "tuned": bool(tuned)})
            h._count = int(count)
        if "chain" not in state:
            self.start()  # a checkpoint without this rank's chain: thermalise afresh
        else:
            self.chain = state["chain"].to(self.trainer.device)
        self._follow()

