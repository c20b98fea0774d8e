"""latticeflow: symmetry-respecting normalizing flows for lattice field theory.

Sample φ⁴, U(1) and SU(N) lattice theories with flows that respect their symmetries,
make every flow ensemble exact (Metropolis independence or reweighting), and compare
against HMC with Γ-method error bars.  Conventions: ``docs/conventions.md``.
"""

__version__ = "0.1.0"

from .errors import LatticeflowError, ConfigError  # noqa: E402

__all__ = ["__version__", "LatticeflowError", "ConfigError"]
