"""Will it fit?  Memory and disk estimates made before a run allocates anything.

A hostile or mistyped size (``L = 100000``, ``dim = 100``, ``chains = 1e9``,
``batch_size = 1e12``, ``layers = 1e8``, ``-n 1e12``) must be refused with the estimate and
what the machine has, not met with an allocator error, an overflow or a swapping machine.
The estimates are deliberately rough upper bounds (a constant factor for temporaries):

- HMC: ``chains × field × itemsize × 24`` (fields, momenta, forces and the integrator's
  temporaries, all float64/complex128);
- a flow pass over ``batch`` configurations: ``batch × sites × (widest layer) × 4 bytes``
  per layer kept for the backward pass (training) or ×3 (sampling), plus the parameters;
- an ensemble file: ``n × (observables + mcmc columns) × 8`` bytes, plus the
  configurations when they are stored.

Memory is compared with ``MemAvailable`` (``/proc/meminfo``), disk with the free space of
the file system that will hold the file.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from .errors import LatticeflowError

__all__ = ["available_memory", "free_disk", "check_memory", "check_disk", "gib",
           "hmc_bytes", "flow_bytes", "ensemble_bytes", "MEMORY_FRACTION"]

#: a run may plan to use at most this fraction of the available memory
MEMORY_FRACTION = 0.8
_HMC_FACTOR = 24


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable, else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk(path) -> int:
    """Free bytes on the file system that holds (or will hold) ``path``."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def field_bytes(theory_cfg) -> int:
    """Bytes of one configuration in float64 (complex128 for SU(N) links)."""
    theory = theory_cfg.build() if hasattr(theory_cfg, "build") else theory_cfg
    return math.prod(theory.field_shape) * (16 if theory.field_dtype.is_complex else 8)


def hmc_bytes(theory_cfg, chains: int) -> int:
    return chains * field_bytes(theory_cfg) * _HMC_FACTOR


def flow_bytes(theory_cfg, flow_cfg, batch: int, training: bool) -> int:
    """Activations of one flow pass over ``batch`` configurations, and the parameters."""
    sites = math.prod(theory_cfg.shape)
    width = max([*flow_cfg.hidden, 8])
    per_layer = batch * sites * width * 4 * 2  # the conditioner's activations
    layers = flow_cfg.layers
    params = layers * width * width * flow_cfg.kernel_size ** len(theory_cfg.shape) * 4 * 4
    return (per_layer * layers if training else per_layer * 3) + params * (4 if training else 1)


def ensemble_bytes(theory_cfg, n: int, columns: int, configs: bool) -> int:
    return n * (columns * 8 + (field_bytes(theory_cfg) if configs else 0))


def check_memory(need: int, what: str) -> None:
    have = available_memory()
    if need > MEMORY_FRACTION * have:
        raise LatticeflowError(f"{what} needs about {gib(need)} of memory; this machine has "
                               f"{gib(have)} available (reduce the lattice, chains or batch size)")


def check_disk(need: int, path, what: str) -> None:
    have = free_disk(path)
    if need > have:
        raise LatticeflowError(f"{what} needs about {gib(need)} of disk at {path}; "
                               f"{gib(have)} are free (use --no-configs, a smaller -n, or another --out)")
