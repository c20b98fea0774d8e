"""Errors a user can cause.  The CLI turns these into one line on stderr and exit code 2.

(Interrupts — Ctrl-C, ``kill`` — are :mod:`latticeflow.interrupts`.)
"""

__all__ = ["LatticeflowError", "ConfigError", "EnsembleError"]


class LatticeflowError(Exception):
    """Bad input: an unknown theory, an impossible parameter, a file that is not ours."""


class ConfigError(LatticeflowError, ValueError):
    """A TOML file (or a hand-made config) whose content does not validate; the message
    names the key."""


class EnsembleError(LatticeflowError):
    """An HDF5 file that is not a (readable, compatible) latticeflow ensemble."""
