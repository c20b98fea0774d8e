"""The interface every theory implements, and the registry that builds one from a config."""

from __future__ import annotations

from typing import Any

import torch

from ..lattice import Lattice

__all__ = ["Theory"]


class Theory:
    """A lattice field theory: its action, its observables and what is known exactly.

    Subclasses set ``name`` and implement ``field_shape``, ``action``, ``observables``.
    All tensors carry a leading batch axis; actions and observables return ``(batch,)``.
    """

    name: str = ""
    #: observables whose per-configuration values are stored in ensembles
    observable_names: tuple[str, ...] = ()

    def __init__(self, shape: tuple[int, ...]):
        self.lattice = Lattice(tuple(shape))

    # --- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.lattice.shape

    @property
    def dim(self) -> int:
        return self.lattice.dim

    @property
    def volume(self) -> int:
        return self.lattice.volume

    @property
    def field_shape(self) -> tuple[int, ...]:
        """Shape of one configuration (without the batch axis)."""
        raise NotImplementedError

    @property
    def field_dtype(self) -> torch.dtype:
        return torch.float64

    # --- physics --------------------------------------------------------------------------
    def action(self, x: torch.Tensor) -> torch.Tensor:
        """S(x) per configuration, shape ``(batch,)``."""
        raise NotImplementedError

    def observables(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-configuration observables ``{name: (batch,)}`` in float64."""
        raise NotImplementedError

    def exact(self) -> dict[str, float]:
        """Analytic reference values where the theory has them (may be empty)."""
        return {}

    def params(self) -> dict[str, Any]:
        """The physics as a JSON-able dict: ``name``, ``shape`` and couplings."""
        raise NotImplementedError

    def random_field(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A 'hot' start: random configurations (prior-like)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Theory) and self.params() == other.params()

    def __hash__(self):
        return hash(repr(self))
