"""Cluster updates for φ⁴: embedded-Ising Swendsen–Wang and Wolff moves of the signs, and a
checkerboard local Metropolis update of the field, as kernels of :mod:`.kernels`.

The embedded Ising model (R. C. Brower and P. Tamayo, Phys. Rev. Lett. 62 (1989) 1087).
Write φ_x = s_x |φ_x| with s_x = ±1.  In S = Σ_x [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴]
(docs/design.md §1) the square expands to φ_{x+μ}² + φ_x² − 2 φ_x φ_{x+μ}, so at fixed |φ|
the signs see the Ising action −Σ_{x,μ} J_{x,μ} s_x s_{x+μ} with J_{x,μ} = 2 |φ_x φ_{x+μ}|;
every other term depends on |φ| alone.  Flipping one of two aligned signs relative to the
other costs ΔS_bond = 2 J = 4 |φ_x φ_{x+μ}|, so the Fortuin–Kasteleyn bond on the link
(x, μ) is active with probability

    p_{x,μ} = 1 − exp(−4 φ_x φ_{x+μ})   if φ_x φ_{x+μ} > 0,   else 0

(anti-aligned neighbours are never bonded; links of a lattice with extent 2 are separate
bonds even when they join the same two sites).  Clusters are the connected components of
the active bonds.  Swendsen–Wang (R. H. Swendsen and J.-S. Wang, Phys. Rev. Lett. 58 (1987)
86) flips every cluster with probability ½; Wolff (U. Wolff, Phys. Rev. Lett. 62 (1989) 361)
flips the cluster of one uniformly chosen site.  Both leave e^{−S} invariant at fixed |φ|,
but never change |φ|: composed with an ergodic update of the field (HMC trajectories, or
:class:`LocalMetropolisKernel` sweeps) they sample e^{−S} exactly.

Clusters are found for all chains and sites at once (:func:`cluster_labels`), with no loop
over sites: every site starts with its own index as label; each round takes the minimum
label over the active bonds of every site, lets the owner of each label take the minimum
of the sites pointing to it (hooking), then jumps pointers (label ← label[label]), until no
label changes.  The fixed point labels each cluster by its smallest site index
(row-major), so the result does not depend on how it was computed; the rounds grow like
the log of a cluster's diameter (docs/cluster.md has the measured alternatives).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from ..lattice import checkerboard, shift
from .accept import metropolis
from .chains import KernelChains
from .hmc import MAX_STEP_REDUCTION, _DualAveraging
from .kernels import HMCKernel, KernelState

__all__ = ["bond_probabilities", "draw_bonds", "cluster_labels", "SwendsenWangKernel", "WolffKernel",
           "LocalMetropolisKernel", "ClusterStep", "ClusterChains"]


def bond_probabilities(phi: torch.Tensor) -> torch.Tensor:
    """p_{x,μ} = 1 − exp(−4 max(φ_x φ_{x+μ}, 0)) of the link from x to x + μ̂, ``(C, d, *L)``
    float64 for fields ``(C, *L)`` (the module docstring derives it)."""
    phi = phi.to(torch.float64)
    links = torch.stack([phi * shift(phi, mu) for mu in range(phi.dim() - 1)], dim=1)
    return -torch.expm1(-4 * links.clamp(min=0))


def draw_bonds(phi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Active bonds ``(C, d, *L)`` bool: link (x, μ) with probability p_{x,μ}; the uniforms
    are drawn on the CPU (every link, always)."""
    p = bond_probabilities(phi)
    u = torch.rand(p.shape, dtype=torch.float64, generator=generator).to(p.device)
    return u < p


def _neighbours(shape, device) -> torch.Tensor:
    """Flat (row-major) indices of the 2d neighbours of every site, ``(2d, V)``: x + μ̂ for
    μ < d, then x − μ̂."""
    index = torch.arange(math.prod(shape), device=device).view(shape)
    d = len(shape)
    return torch.stack([shift(index, mu, s, axis0=0).reshape(-1) for s in (1, -1) for mu in range(d)])


def cluster_labels(bonds: torch.Tensor) -> torch.Tensor:
    """The cluster of every site as the smallest flat site index in it, ``(C, V)`` int64, for
    bonds ``(C, d, *L)`` (bond (x, μ) joins x and x + μ̂).

    Each round: m(x) = the smallest label of x and its bonded neighbours; the label's owner
    r = label(x) takes the smallest m of the sites that point to it (hooking); then two
    pointer jumps, label ← label[label].  A label is always a site of the same cluster and
    never grows, so the rounds end (in a few, growing like the log of a cluster's
    diameter) at the cluster's smallest index."""
    c, d, shape = bonds.shape[0], bonds.shape[1], bonds.shape[2:]
    volume = math.prod(shape)
    nbr = _neighbours(shape, bonds.device)
    fwd = bonds.reshape(c, d, volume)
    joined = [fwd[:, mu] for mu in range(d)] + [fwd[:, mu].gather(1, nbr[d + mu].expand(c, volume))
                                                for mu in range(d)]  # x bonded to x + μ̂, to x − μ̂
    labels = torch.arange(volume, device=bonds.device).expand(c, volume).contiguous()
    for _ in range(volume):
        m = labels
        for k, bonded in enumerate(joined):
            m = torch.minimum(m, torch.where(bonded, labels[:, nbr[k]], volume))
        new = torch.minimum(labels.scatter_reduce(1, labels, m, "amin"), m)
        new = new.gather(1, new)
        new = new.gather(1, new)
        if torch.equal(new, labels):
            return labels
        labels = new
    raise RuntimeError("cluster labels did not converge")  # never: each round lowers a label


class SwendsenWangKernel:
    """Swendsen–Wang: draw the bonds, flip every cluster with probability ½ (a uniform per
    site index, read at each cluster's label).  Info: ``cluster_size`` (the fraction of
    sites flipped), ``accepted`` (always true)."""

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        labels = cluster_labels(draw_bonds(x, generator))
        coins = (torch.rand(labels.shape, dtype=torch.float64, generator=generator) < 0.5).to(x.device)
        flip = coins.gather(1, labels).view(x.shape)
        return _flipped(x, flip)


class WolffKernel:
    """Wolff: draw the bonds, flip the cluster of one uniformly chosen site per chain.  Info:
    ``cluster_size`` (the fraction of sites flipped), ``accepted`` (always true)."""

    def step(self, state: KernelState, generator: torch.Generator):
        x = state.x
        labels = cluster_labels(draw_bonds(x, generator))
        seed = torch.randint(labels.shape[1], (x.shape[0], 1), generator=generator).to(x.device)
        flip = (labels == labels.gather(1, seed)).view(x.shape)
        return _flipped(x, flip)


def _flipped(x: torch.Tensor, flip: torch.Tensor):
    """φ → −φ where ``flip``; info: the fraction flipped, and ``accepted`` (always)."""
    size = flip.flatten(1).to(torch.float64).mean(1)
    info = {"cluster_size": size, "accepted": torch.ones_like(size, dtype=torch.bool)}
    return KernelState(torch.where(flip, -x, x)), info


class LocalMetropolisKernel:
    """One checkerboard sweep of local Metropolis updates of φ⁴: on each parity every site
    proposes φ′ = φ + δ (2u − 1), u uniform in [0, 1), and is accepted with min(1, e^{−ΔS}),
    ΔS = (2d + m²)(φ′² − φ²) + λ(φ′⁴ − φ⁴) − 2 (φ′ − φ) Σ_{y ~ x} φ_y exactly (sites of one
    parity do not interact; needs even extents).  Info: ``acceptance`` (fraction of sites
    accepted), ``accepted`` (some site accepted).

    Arguments:
        theory: a :class:`~latticeflow.theories.phi4.Phi4` theory.
        step_size: δ.
        target_acceptance: what :class:`ClusterChains` tunes δ toward.
    """

    def __init__(self, theory, step_size: float = 0.5, target_acceptance: float = 0.5):
        if any(n % 2 for n in theory.shape):
            raise ValueError(f"a checkerboard needs even extents (lattice {tuple(theory.shape)})")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0 (got {step_size})")
        self.theory, self.step_size, self.target_acceptance = theory, float(step_size), float(target_acceptance)
        self.masks = [checkerboard(theory.shape, parity) for parity in (0, 1)]

    def step(self, state: KernelState, generator: torch.Generator):
        x, t = state.x, self.theory
        quadratic = 2 * t.dim + t.m2
        n_accepted = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for mask in self.masks:
            u = torch.rand((2, *x.shape), dtype=torch.float64, generator=generator).to(x.device)
            around = sum(shift(x, mu) + shift(x, mu, -1) for mu in range(t.dim))
            y = x + self.step_size * (2 * u[0] - 1)
            delta_s = quadratic * (y**2 - x**2) + t.lam * (y**4 - x**4) - 2 * (y - x) * around
            accept = metropolis(-delta_s, torch.log(u[1])) & mask.to(x.device)
            x = torch.where(accept, y, x)
            n_accepted += accept.flatten(1).sum(1)
        fraction = n_accepted / t.volume
        return KernelState(x), {"acceptance": fraction, "accepted": n_accepted > 0}


class ClusterStep:
    """One step of the cluster sampler: ``updates_per_step`` updates of the field by
    ``amplitude`` (an :class:`~.kernels.HMCKernel` or a :class:`LocalMetropolisKernel`), then
    one ``cluster`` update.  Info, ``(C,)`` each: ``accepted`` (some field update accepted),
    ``amplitude_acceptance`` (the fraction of trajectories, or of site proposals, accepted),
    ``cluster_size``, ``log_weight`` (0: every row weighs 1) and, for HMC, ``delta_h`` (of the
    last trajectory)."""

    def __init__(self, amplitude, cluster, updates_per_step: int = 1):
        if int(updates_per_step) < 1:
            raise ValueError("updates_per_step must be >= 1 (the cluster move alone never changes |φ|)")
        self.amplitude, self.cluster, self.k = amplitude, cluster, int(updates_per_step)

    def step(self, state: KernelState, generator: torch.Generator):
        infos = []
        for _ in range(self.k):
            state, info = self.amplitude.step(state, generator)
            infos.append(info)
        state, flipped = self.cluster.step(state, generator)
        rates = [i["acceptance"] if "acceptance" in i else i["accepted"].to(torch.float64) for i in infos]
        out = {"accepted": torch.stack([i["accepted"] for i in infos]).any(0),
               "amplitude_acceptance": torch.stack(rates).mean(0), "cluster_size": flipped["cluster_size"],
               "log_weight": torch.zeros_like(flipped["cluster_size"])}
        if "delta_h" in infos[-1]:
            out["delta_h"] = infos[-1]["delta_h"]
        return KernelState(state.x), out


class _HMCStep:
    """The HMC step size as a tunable knob: dual averaging of ε, frozen to τ/⌈τ/ε⌉ (as
    :meth:`~.hmc.HMC.thermalize` does)."""

    def __init__(self, hmc):
        self.hmc, self.target = hmc, hmc.target_acceptance

    @property
    def value(self) -> float:
        return self.hmc.step_size

    def bounds(self) -> tuple[float, float]:
        return self.hmc.step_size / MAX_STEP_REDUCTION, self.hmc.trajectory_length

    def set(self, eps: float) -> None:
        self.hmc.step_size, self.hmc.steps = eps, max(1, round(self.hmc.trajectory_length / eps))

    def freeze(self, eps: float) -> None:
        tau = self.hmc.trajectory_length
        self.hmc.steps = max(1, math.ceil(tau / eps - 1e-6))
        self.hmc.step_size, self.hmc.tuned = tau / self.hmc.steps, True

    def state_dict(self) -> dict:
        return {"hmc": self.hmc.state_dict(), "reunitarize_count": self.hmc._count}

    def load_state_dict(self, state: dict) -> None:
        self.hmc.load_state_dict(state["hmc"])
        self.hmc._count = int(state["reunitarize_count"])


class _MetropolisStep:
    """The local Metropolis step δ as a tunable knob, kept within [δ₀/50, 50 δ₀]."""

    def __init__(self, kernel: LocalMetropolisKernel):
        self.kernel, self.target, self.tuned = kernel, kernel.target_acceptance, False

    @property
    def value(self) -> float:
        return self.kernel.step_size

    def bounds(self) -> tuple[float, float]:
        return self.kernel.step_size / MAX_STEP_REDUCTION, self.kernel.step_size * MAX_STEP_REDUCTION

    def set(self, delta: float) -> None:
        self.kernel.step_size = delta

    def freeze(self, delta: float) -> None:
        self.kernel.step_size, self.tuned = delta, True

    def state_dict(self) -> dict:
        return {"metropolis_step": self.kernel.step_size, "tuned": self.tuned}

    def load_state_dict(self, state: dict) -> None:
        self.kernel.step_size, self.tuned = float(state["metropolis_step"]), bool(state["tuned"])


class ClusterChains(KernelChains):
    """C chains of :class:`ClusterStep` as a chain sampler (:class:`~.chains.KernelChains`
    with its hooks): the cluster sampler of φ⁴.

    A fresh start draws hot or cold fields (or takes ``start_fields``) and runs
    ``thermalization`` steps, tuning the field update's step (HMC's ε toward
    ``[hmc] target_acceptance``, the Metropolis δ toward its target) by dual averaging in
    two windows on the fraction accepted, then freezes it.  The resume state is the fields,
    the generator and the frozen step, so a resumed run continues bit for bit.  Columns:
    those of :class:`ClusterStep`; the weight column is ``log_weight`` (0: not reweighted).

    Arguments:
        theory: a φ⁴ theory.
        step: a :class:`ClusterStep`.
        n_chains, seed, thermalization, start, start_fields, store_configs, device, progress:
            as :class:`~.chains.KernelChains`.
        tune: tune the field update's step during thermalisation.
        name: the ensemble's ``sampler`` attribute.
    """

    def __init__(self, theory, step: ClusterStep, n_chains: int, seed: int = 0, thermalization: int = 100,
                 tune: bool = True, start: str = "hot", start_fields=None, store_configs: bool = True,
                 progress: bool = False, device="cpu", name: str = "cluster"):
        hmc = isinstance(step.amplitude, HMCKernel)
        columns = ["accepted", "log_weight", "amplitude_acceptance", "cluster_size"]
        columns += ["delta_h"] if hmc else []
        super().__init__(theory, step, n_chains, columns, "log_weight", name, seed, thermalization, start,
                         start_fields, store_configs, device, progress)
        self.tune = tune
        self.knob = _HMCStep(step.amplitude.hmc) if hmc else _MetropolisStep(step.amplitude)

    def thermalize(self, x: torch.Tensor, callback) -> torch.Tensor:
        """``thermalization`` steps from ``x``; with ``tune`` (and at least 2 steps) the
        field update's step is tuned in two windows (the second restarts the averaging, so
        that the hot-start transient does not bias it), then frozen."""
        n, knob = self.thermalization, self.knob
        tuning = self.tune and n >= 2
        value, bounds = knob.value, knob.bounds()
        for window in (n // 2, n - n // 2) if tuning else (n,):
            averager = _DualAveraging(value, knob.target, bounds)
            for _ in range(window):
                state, info = self.kernel.step(KernelState(x), self.generator)
                x = state.x
                if tuning:
                    value = averager.update(float(info["amplitude_acceptance"].mean()))
                    knob.set(value)
                callback()
            if tuning:
                value = averager.final
                knob.set(value)
        if tuning:
            knob.freeze(value)
        return x

    def save_settings(self) -> dict:
        saved = json.dumps(self.knob.state_dict()).encode()
        return {"amplitude": np.frombuffer(saved, dtype=np.uint8).copy()}

    def load_settings(self, settings: dict) -> None:
        self.knob.load_state_dict(json.loads(bytes(settings["amplitude"]).decode()))

    def extra(self) -> dict:
        step = self.kernel
        extra = {"amplitude": self.knob.state_dict(), "amplitude_update": type(step.amplitude).__name__,
                 "cluster_update": type(step.cluster).__name__, "updates_per_step": step.k,
                 "thermalization": self.thermalization}
        return extra | ({"start": self.start_fields.record} if self.start_fields is not None else {})
