"""The resume state of C chains: what every chain sampler saves with each block, typed and
versioned.

A :class:`ChainState` is what ``sampler.state()`` returns and what ``sampler.start(state)``
gets back on a resume (None for a fresh start); :func:`~latticeflow.mcmc.driver.run_ensemble`
alone turns it into the arrays of the ensemble's ``state`` group and back, checking the
fields and weights before a sampler sees them.  Its arrays in the file:

- ``field`` ``(C, *field_shape)`` (empty where a sampler keeps none), ``rng`` (a generator
  state as uint8), ``log_weight`` ``(C,)`` (chains that carry log w = −S − log q),
  ``obs__<name>`` ``(C,)`` (current observables that a sampler reuses), and the sampler's
  own ``settings`` under their names (a tuned HMC step size as JSON bytes, the position of
  a proposal stream, …);
- ``state_version``: :data:`VERSION`.  Files written before it was recorded hold version 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["ChainState", "VERSION"]

#: the layout of the resume arrays this release writes
VERSION = 1
_OBS = "obs__"
_NAMED = ("field", "rng", "log_weight", "state_version")


@dataclass
class ChainState:
    """See the module docstring; every entry is optional."""

    field: np.ndarray | None = None
    rng: np.ndarray | None = None
    log_weight: np.ndarray | None = None
    observables: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    settings: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    version: int = VERSION

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the ensemble's ``state`` group."""
        out = {"state_version": np.array(self.version)}
        for name in ("field", "rng", "log_weight"):
            if getattr(self, name) is not None:
                out[name] = np.asarray(getattr(self, name))
        out |= {_OBS + k: np.asarray(v) for k, v in self.observables.items()}
        clash = set(self.settings) & (set(out) | set(_NAMED))
        if clash or any(k.startswith(_OBS) for k in self.settings):
            raise ValueError(f"settings may not use the names {sorted(clash) or [_OBS + '…']}")
        return out | {k: np.asarray(v) for k, v in self.settings.items()}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "ChainState | None":
        """The state the arrays of a ``state`` group describe (None where there are none);
        a ValueError for a layout newer than this release reads."""
        if not arrays:
            return None
        version = int(arrays.get("state_version", 1))
        if version > VERSION:
            raise ValueError(f"resume state version {version} was written by a newer latticeflow "
                             f"(this one reads up to {VERSION})")
        return cls(field=arrays.get("field"), rng=arrays.get("rng"), log_weight=arrays.get("log_weight"),
                   observables={k[len(_OBS):]: v for k, v in arrays.items() if k.startswith(_OBS)},
                   settings={k: v for k, v in arrays.items() if k not in _NAMED and not k.startswith(_OBS)},
                   version=version)
