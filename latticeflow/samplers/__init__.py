"""Samplers: the registry of every kind (:mod:`.registry`) and the built-in kinds, one
module each — ``hmc``, ``flow-mcmc``, ``flow-iid``, ``mixed``, ``flow-hmc``, ``direct``, ``cluster``,
``instanton-jump``, ``heatbath``, ``ne-mcmc``, ``snf``, ``annealed-jump``, ``flow-jump``.

:func:`build_sampler` makes the chain sampler a configuration asks for and
:func:`resume_keeps` names the settings that define a file's chains, which a resume must
not change; both ask the registered :class:`SamplerKind`.  Adding a sampler is one module
that calls :func:`register_sampler` (docs/architecture.md shows one).
"""

from __future__ import annotations

# the built-in kinds register themselves, in the order --help and the docs list them
from . import flow_mcmc, flow_iid, mixed, flow_hmc, direct, hmc, cluster, jump, heatbath, ne_mcmc, snf  # noqa: F401,I001
from . import annealed_jump, flow_jump  # noqa: F401,I001
from .flows import flow_density, flow_proposal, weights_digest
from .registry import (IID, NoOptions, SamplerContext, SamplerKind, register_sampler, sampler_from_flags,
                       sampler_kind, sampler_names, unregister_sampler)

__all__ = ["SamplerKind", "SamplerContext", "NoOptions", "register_sampler", "unregister_sampler",
           "sampler_kind", "sampler_names", "sampler_from_flags", "IID", "build_sampler", "flow_sampler",
           "flow_proposal", "flow_density", "resume_keeps", "weights_digest"]


def build_sampler(cfg, theory, flow=None, store_configs: bool = True, progress: bool = True, device=None,
                  start_fields=None):
    """The chain sampler of ``[sample] sampler`` (a flow sampler needs ``flow``), on
    ``device`` (default: this rank's device for ``[sample] device``); ``start_fields``
    (:class:`~latticeflow.ensemble.start.StartFields`, ``[sample] start``) start fresh chains
    instead of the sampler's own start."""
    from ..training.distributed import rank_device

    kind = sampler_kind(cfg.sample.sampler)
    if kind.needs_flow and flow is None:
        raise ValueError(f"the {kind.name} sampler needs a flow")
    device = rank_device(cfg.sample.device, "sample.device") if device is None else device
    return kind.build(SamplerContext(cfg, theory, flow, store_configs, progress, device, start_fields))


#: the name of :func:`build_sampler` before classical samplers were registered
flow_sampler = build_sampler


def resume_keeps(cfg, theory, kind: str, flow=None) -> dict:
    """``{config key: value}`` of the settings that define the chains of a ``kind`` file,
    plus the digest of the flow's weights: the :func:`~latticeflow.mcmc.driver.run_ensemble`
    ``keep`` of a new file, refused if a resume changes one."""
    keeps = sampler_kind(kind).resume_keeps(cfg, theory)
    return keeps | ({"flow weights (sha256)": weights_digest(flow, cfg.sample.dtype)} if flow is not None else {})
