"""What the samplers share: a flow wrapped as the ``propose`` / ``density`` functions the
chain samplers take (:mod:`latticeflow.mcmc` never imports the flows), run in ``[sample]
dtype`` on ``[sample] device``; the digest of a flow's weights; and the ``[hmc]`` settings
that define the chains of every sampler that integrates (what a resume must keep)."""

from __future__ import annotations

__all__ = ["flow_proposal", "flow_density", "weights_digest", "integrator_keeps", "flow_keeps"]


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


def integrator_keeps(cfg, theory, physical: bool = True) -> dict:
    """The ``[hmc]`` settings that define HMC chains: integrator, trajectory length, tuning
    (its target, or the fixed step count), and for an integrator of the ``physical`` theory
    (not flow HMC's latent one, whose force is always autograd) the force and the options of
    the theory's molecular dynamics that define its chains (``Theory.md_keeps``: the
    Schwinger model's fermions and CG settings)."""
    h = cfg.hmc
    keeps = {f"hmc.{k}": getattr(h, k) for k in ("integrator", "trajectory_length", "tune")}
    keeps |= {"hmc.target_acceptance": h.target_acceptance} if h.tune else {"hmc.steps": h.steps}
    if physical:
        keeps |= {f"hmc.{k}": v for k, v in theory.md_keeps(dict(h.options)).items()}
        keeps["hmc.force"] = h.force
    return keeps


def flow_keeps(cfg, theory) -> dict:
    """What every flow sampler keeps: its seed and the precision the flow runs in."""
    return {"sample.seed": cfg.sample.seed, "sample.dtype": cfg.sample.dtype}
