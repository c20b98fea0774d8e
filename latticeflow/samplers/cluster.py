"""``cluster``: embedded-Ising cluster updates for φ⁴ (Brower and Tamayo, Phys. Rev. Lett. 62
(1989) 1087; :mod:`latticeflow.mcmc.cluster`).  No flow.

One step of a chain is ``updates_per_step`` updates of the field — HMC trajectories with
the ``[hmc]`` integrator (step size tuned during ``[sample] thermalization``, then frozen),
or checkerboard local Metropolis sweeps (δ tuned there toward ``metropolis_acceptance``) —
then one cluster update of the signs: Swendsen–Wang (every cluster flipped with probability
½) or Wolff (the cluster of one random site flipped), with bonds between aligned neighbours
active with probability 1 − exp(−4 φ_x φ_{x+μ}).  Every part leaves e^{−S} invariant, so
the rows are plain (unweighted) chain averages; τ_int is in steps.  Fresh chains start hot
or cold (``fresh_start``), or from another ensemble (``[sample] start``).
"""

from dataclasses import dataclass, fields

from ..ensemble.format import Weighting
from ..errors import ConfigError
from ..schema import between, key, one_of, open_unit, positive
from .flows import integrator_keeps
from .registry import SamplerKind, register_sampler


@dataclass(frozen=True)
class Options:
    """The cluster sampler's own ``[sample]`` keys."""

    cluster_update: str = key("swendsen-wang", "`cluster`: `swendsen-wang` (flip every cluster with "
                                               "probability 1/2) or `wolff` (flip the cluster of one "
                                               "random site)", one_of("swendsen-wang", "wolff"))
    updates_per_step: int = key(1, "`cluster`: updates of the field (HMC trajectories or Metropolis "
                                   "sweeps) before each cluster update", between(1, 100_000))
    amplitude_update: str = key("hmc", "`cluster`: how the field moves between cluster updates: `hmc` "
                                       "(trajectories of the `[hmc]` integrator) or `metropolis` "
                                       "(checkerboard sweeps of local Metropolis; even extents)",
                                one_of("hmc", "metropolis"))
    metropolis_step: float = key(1.0, "`cluster` with `metropolis`: the initial width δ of the local "
                                      "proposals φ + δ(2u − 1), tuned during thermalization", positive)
    metropolis_acceptance: float = key(0.5, "`cluster` with `metropolis`: the acceptance δ is tuned to",
                                       open_unit)
    fresh_start: str = key("hot", "`cluster`: a new file's chains start `hot` (random) or `cold` (φ = 0), "
                                  "unless `start` names an ensemble file", one_of("hot", "cold"))


_METROPOLIS_ONLY = ("metropolis_step", "metropolis_acceptance")


def applies(theory) -> str | None:
    """Why cluster updates cannot sample ``theory`` (one line), or None: φ⁴ only."""
    from ..theories.phi4 import Phi4

    if not isinstance(theory, Phi4):
        return f"cluster flips the signs of a real scalar field; it samples phi4 only, not {theory.name}"
    return None


def _check(ctx) -> None:
    """One-line refusals: a theory other than φ⁴, Metropolis sweeps on odd extents, the
    Metropolis keys with HMC."""
    theory, s = ctx.theory, ctx.cfg.sample
    problem = applies(theory)
    if problem:
        raise ConfigError(f"sample.sampler: {problem}")
    if s.amplitude_update == "metropolis" and any(n % 2 for n in theory.shape):
        raise ConfigError(f"sample.amplitude_update: metropolis sweeps a checkerboard, which needs even "
                          f"extents (lattice {list(theory.shape)}); use hmc")
    defaults = {f.name: f.default for f in fields(Options)}
    for name in _METROPOLIS_ONLY:
        if s.amplitude_update == "hmc" and getattr(s, name) != defaults[name]:
            raise ConfigError(f"sample.{name}: only for amplitude_update = \"metropolis\" (this run "
                              "moves the field by HMC, set by [hmc])")


def build(ctx):
    from ..mcmc.cluster import (ClusterChains, ClusterStep, LocalMetropolisKernel, SwendsenWangKernel,
                                WolffKernel)
    from ..mcmc.hmc import HMC
    from ..mcmc.kernels import HMCKernel

    _check(ctx)
    s, h, theory = ctx.cfg.sample, ctx.cfg.hmc, ctx.theory
    if s.amplitude_update == "hmc":
        amplitude, tune = HMCKernel(HMC.from_config(theory, h)), h.tune
    else:
        amplitude, tune = LocalMetropolisKernel(theory, s.metropolis_step, s.metropolis_acceptance), True
    cluster = WolffKernel() if s.cluster_update == "wolff" else SwendsenWangKernel()
    return ClusterChains(theory, ClusterStep(amplitude, cluster, s.updates_per_step), s.chains, seed=s.seed,
                         thermalization=s.thermalization, tune=tune, start=s.fresh_start,
                         start_fields=ctx.start_fields, store_configs=ctx.store_configs,
                         progress=ctx.progress, device=ctx.device, name="cluster")


def keeps(cfg, theory) -> dict:
    """The seed, every option, and with HMC the integrator's settings."""
    s = cfg.sample
    own = {f"sample.{k}": v for k, v in s.options}
    hmc = integrator_keeps(cfg, theory) if s.amplitude_update == "hmc" else {}
    return {"sample.seed": s.seed} | own | hmc


register_sampler(SamplerKind(
    "cluster", "cluster (embedded Ising)", build, Weighting("log_weight"),
    "phi4: Wolff or Swendsen-Wang flips of the signs between HMC or Metropolis updates (no flow)",
    options=Options, needs_flow=False, keeps=keeps, applies=applies, baseline=True))
