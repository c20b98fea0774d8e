"""latticeflow: symmetry-respecting normalizing flows for lattice field theory.

Sample φ⁴, U(1) and SU(N) lattice theories with flows that respect their symmetries,
make every flow ensemble exact (Metropolis independence or reweighting), and compare
against HMC with Γ-method error bars.  Conventions: ``docs/conventions.md``; the map of
the package: ``docs/architecture.md``.

The functions below are those of :mod:`latticeflow.pipeline` (and ``load_flow`` of
:mod:`latticeflow.training`), imported on first use so that ``import latticeflow`` stays
light.
"""

__version__ = "0.1.0"

from .errors import ConfigError, LatticeflowError  # noqa: E402

#: public name -> module that defines it (PEP 562 lazy re-export)
_LAZY = {
    "train": "latticeflow.pipeline",
    "sample": "latticeflow.pipeline",
    "hmc": "latticeflow.pipeline",
    "analyze": "latticeflow.pipeline",
    "compare": "latticeflow.pipeline",
    "exact": "latticeflow.pipeline",
    "load_model": "latticeflow.pipeline",
    "load_flow": "latticeflow.training",
}

__all__ = ["__version__", "LatticeflowError", "ConfigError", *_LAZY]


#: subpackages reachable as attributes after a plain ``import latticeflow``
_SUBMODULES = ("analysis", "ensemble", "flows", "lattice", "mcmc", "samplers", "theories",
               "training")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"latticeflow.{name}")
    raise AttributeError(f"module 'latticeflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
