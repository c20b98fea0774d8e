"""Stopping a long run cleanly: Ctrl-C, ``kill`` (SIGTERM), and the safe points that honour them.

- :func:`stop_on_signals` (the CLI's ``main`` runs every command inside it): SIGINT and
  SIGTERM set :data:`STOP_REQUESTED` and raise ``KeyboardInterrupt``.  The command then exits
  with code 130, keeping every committed block and checkpoint.
- :func:`check_stop`: long loops call it at their safe points (between ensemble blocks,
  between training steps).  Python drops an exception raised while it runs a finaliser or
  a weakref callback, so a swallowed interrupt still stops the run there (and inside
  :func:`stop_on_signals` such a dropped interrupt is not reported as an error).
- :func:`deferred_signals`: a block that must not be cut in half (an ensemble commit)
  holds SIGINT/SIGTERM until it is done, then delivers them.

SIGKILL cannot be caught; what survives it is the commit discipline of each file kind
(ensembles: rows, then state, then ``n_rows``; training: atomic checkpoints).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

__all__ = ["STOP_REQUESTED", "check_stop", "stop_on_signals", "deferred_signals"]

#: set when the user asked an interruptible run to stop (Ctrl-C, ``kill``)
STOP_REQUESTED = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested (a safe point of a long loop)."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt


def _stop(signum, frame):
    STOP_REQUESTED.set()  # seen at the next safe point even if this exception gets swallowed
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM stop the run (see the module docstring); the
    previous handlers come back afterwards (``main()`` may be called from Python)."""
    STOP_REQUESTED.clear()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _stop) for sig in _SIGNALS}
    previous_hook = sys.unraisablehook

    def quiet(unraisable):  # the stop landed in a finaliser or weakref callback: check_stop has it
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and STOP_REQUESTED.is_set()):
            previous_hook(unraisable)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        STOP_REQUESTED.clear()  # the stop ended this block; later loops in the process go on
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred_signals(signums=_SIGNALS) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block exits, then deliver them to the old handlers.

    Ctrl-C during a write therefore lands after the block is committed.  Outside the main
    thread Python cannot install handlers, and the block runs undeferred.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(received):
            signal.raise_signal(s)
