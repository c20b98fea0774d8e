"""Errors a user can cause.  The CLI turns these into one line on stderr and exit code 2.

Also the stop request of an interrupted run: the CLI's SIGINT/SIGTERM handler sets
:data:`STOP_REQUESTED` and raises ``KeyboardInterrupt``.  Python drops an exception raised
while it runs a finaliser or a weakref callback, so long loops also check the event at
their safe points (between blocks) and stop there.
"""

import threading

__all__ = ["LatticeflowError", "ConfigError", "EnsembleError", "STOP_REQUESTED"]

#: set when the user asked an interruptible run to stop (Ctrl-C, ``kill``)
STOP_REQUESTED = threading.Event()


class LatticeflowError(Exception):
    """Bad input: an unknown theory, an impossible parameter, a file that is not ours."""


class ConfigError(LatticeflowError, ValueError):
    """A TOML file (or a hand-made config) whose content does not validate; the message
    names the key."""


class EnsembleError(LatticeflowError):
    """An HDF5 file that is not a (readable, compatible) latticeflow ensemble."""
