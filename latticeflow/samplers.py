"""The chain samplers a config asks for, built around a loaded flow (docs/design.md §7).

:func:`flow_sampler` reads ``[sample] sampler`` (and ``[hmc]`` for the samplers that
integrate): Metropolis independence chains, i.i.d. draws with weights, the mixed HMC +
flow kernel, or flow HMC.  :func:`flow_proposal` and :func:`flow_density` wrap a flow as
the ``propose`` / ``density`` functions the samplers take (:mod:`latticeflow.mcmc` never
imports the flows), run in ``[sample] dtype`` on ``[sample] device``.  :func:`resume_keeps`
names the settings that define a file's chains, which a resume must not change.
"""

from __future__ import annotations

from .training.distributed import rank_device

__all__ = ["flow_sampler", "flow_proposal", "flow_density", "resume_keeps", "weights_digest"]


def flow_sampler(cfg, theory, flow, store_configs: bool = True, progress: bool = True, device=None,
                 start_fields=None):
    """The chain sampler of ``[sample] sampler`` for a loaded flow (docs/design.md §7), on ``device``
    (default: this rank's device for ``[sample] device``); ``start_fields``
    (:class:`~latticeflow.ensemble.start.StartFields`, ``[sample] start``) start fresh chains
    instead of flow samples."""
    import torch

    from .mcmc.flow_hmc import FlowHMCChains
    from .mcmc.flow_samplers import IIDWithWeights, IndependenceMetropolis
    from .mcmc.hmc import HMC
    from .mcmc.mixed import MixedKernel

    s, h = cfg.sample, cfg.hmc
    device = rank_device(s.device, "sample.device") if device is None else device
    common = dict(n_chains=s.chains, seed=s.seed, store_configs=store_configs)
    if start_fields is not None:
        if s.sampler == "flow-iid":
            raise ValueError("flow-iid draws independent samples: it has no chains to start")
        common["start_fields"] = start_fields
    if s.sampler == "flow-hmc":
        return FlowHMCChains(theory, flow.to(getattr(torch, s.dtype)).to(device).eval(), h,
                             thermalization=s.thermalization, tune=h.tune, progress=progress,
                             batch_size=s.batch_size, device=device, **common)
    propose = flow_proposal(flow, s.dtype, device)
    if s.sampler == "mixed":
        return MixedKernel(theory, HMC.from_config(theory, h), propose,
                           flow_density(flow, s.dtype, device),
                           hmc_per_step=s.hmc_per_step, flow_per_step=s.flow_per_step,
                           thermalization=s.thermalization, tune=h.tune, batch_size=s.batch_size,
                           progress=progress, device=device, **common)
    if s.sampler == "flow-iid":
        return IIDWithWeights(theory, propose, batch_size=s.batch_size, **common)
    return IndependenceMetropolis(theory, propose, batch_size=s.batch_size,
                                  density=flow_density(flow, s.dtype, device), **common)


def flow_density(flow, dtype: str = "float32", device="cpu"):
    """``density(x) -> log q(x)`` (float64) with the flow run in ``dtype`` on ``device``."""
    import torch

    flow = flow.to(getattr(torch, dtype)).to(device).eval()

    def density(x):
        with torch.no_grad():
            return flow.log_prob(x.to(device)).to(torch.float64)

    return density


def flow_proposal(flow, dtype: str = "float32", device="cpu"):
    """``propose(n, generator) -> (x, log_q)`` with the flow run in ``dtype`` on ``device``
    (the generator is a CPU one: :mod:`latticeflow.devices`).

    The samplers cast x and log q to the theory's precision before computing S and log w
    (``docs/config.md``, ``[sample] dtype``).
    """
    import torch

    flow = flow.to(getattr(torch, dtype)).to(device).eval()

    def propose(n, generator):
        with torch.no_grad():
            return flow.sample(n, generator=generator)

    return propose


def weights_digest(flow, dtype: str = "float32") -> str:
    """The first 16 hex digits of a SHA-256 of the flow's parameters and buffers as the
    samplers run them (rounded to ``dtype``), so the same flow held in float32 or float64
    gives the same digest."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(flow.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(getattr(torch, dtype)).to(torch.float64)
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def resume_keeps(cfg, theory, kind: str, flow=None) -> dict:
    """``{config key: value}`` of the settings that define the chains of a ``kind`` file
    (``"hmc"`` or a ``[sample] sampler``), plus the digest of the flow's weights: the
    :func:`~latticeflow.mcmc.driver.run_ensemble` ``keep`` of a new file, refused if a
    resume changes one."""
    h, s = cfg.hmc, cfg.sample
    integrator = {f"hmc.{k}": getattr(h, k) for k in ("integrator", "trajectory_length", "tune")}
    integrator |= {"hmc.target_acceptance": h.target_acceptance} if h.tune else {"hmc.steps": h.steps}
    if getattr(theory, "has_fermions", False) and kind != "flow-hmc":
        integrator["hmc.fermions"] = h.fermions
        if h.fermions == "pseudofermion":
            integrator |= {f"hmc.{k}": getattr(h, k)
                           for k in ("cg_tolerance", "cg_action_tolerance", "cg_max_iterations")}
    if kind != "flow-hmc":  # flow HMC's force is always autograd
        integrator["hmc.force"] = h.force
    if kind == "hmc":
        return integrator | {"hmc.seed": h.seed}
    keeps = {"sample.seed": s.seed, "sample.dtype": s.dtype}
    if kind in ("mixed", "flow-hmc"):
        keeps |= integrator
    if kind == "mixed":
        keeps |= {"sample.hmc_per_step": s.hmc_per_step, "sample.flow_per_step": s.flow_per_step}
    return keeps | ({"flow weights (sha256)": weights_digest(flow, s.dtype)} if flow is not None else {})
