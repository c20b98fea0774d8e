"""The interface every theory implements, and the registry that finds a theory by name.

A theory is one module in ``theories/`` whose class is decorated with
:func:`register_theory`.  The class declares everything the rest of the package needs, so
that nothing outside ``theories/`` (and the flow registry) branches on a theory's name:

- ``name`` and ``couplings``: a dataclass of :func:`latticeflow.schema.key` fields, the
  ``[theory]`` keys beyond ``L``/``shape``/``dim`` with type, check and meaning; ``config``
  validates against it and ``docs/config.md`` is generated from it;
- ``min_dim``, ``max_dim``: the lattice dimensions it is defined in; ``max_volume``: the
  largest lattice it is implemented for (None: any);
- ``field_space``: how fields move (momenta, kinetic energy, drift, projection; see
  :mod:`latticeflow.theories.field_space`), which is all HMC talks to;
- ``action``, ``force`` (analytic), ``observables`` (stored per configuration),
  ``derived_observables`` (functions of means, e.g. a connected susceptibility),
  ``exact`` (reference values) and ``exact_distributions`` (e.g. P(Q));
- ``headline_observables``: the ones a report shows first;
- ``md_action(...)``: what HMC integrates (:class:`MDAction`: the action and its force, by
  default; a theory with fermions returns a pseudofermion action there, and sets
  ``has_fermions`` so that the ``[hmc]`` fermion keys apply to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..lattice import Lattice, extent_key
from ..schema import table_fields
from .field_space import FieldSpace, RealField

__all__ = ["NoMDOptions", "Theory", "Derived", "MDAction", "register_theory", "THEORIES", "coupling_names", "MAX_EXACT_VOLUME"]

#: the torus character sums lose precision beyond this many plaquettes (tested up to it)
MAX_EXACT_VOLUME = 10**6

#: theory name -> class; filled by :func:`register_theory` when ``theories`` is imported
THEORIES: dict[str, type["Theory"]] = {}


def register_theory(cls: type["Theory"]) -> type["Theory"]:
    """Class decorator: make ``cls`` available under ``cls.name`` (TOML, ensembles, CLI)."""
    if not cls.name or cls.name in THEORIES:
        raise ValueError(f"theory name {cls.name!r} is empty or registered twice")
    THEORIES[cls.name] = cls
    return cls


def coupling_names(cls: type["Theory"]) -> list[str]:
    """The coupling keys of a theory class, in declaration order."""
    return [f.name for f in table_fields(cls.couplings)] if cls.couplings else []


@dataclass(frozen=True)
class Derived:
    """An observable that is a function of means of stored ones (Γ-method error propagation).

    ``series(observables)`` maps the stored per-configuration arrays ``{name: (rows, C)}``
    to the list of series whose means enter ``value(*means)``; ``requires`` names the stored
    observables needed.  Not defined for reweighted (``flow-iid``) ensembles.
    """

    requires: tuple[str, ...]
    series: Callable[[dict], list]
    value: Callable[..., float]


@dataclass(frozen=True)
class NoMDOptions:
    """The molecular dynamics of a theory without options of its own."""


class MDAction:
    """What HMC integrates for a theory: by default its action and force as they are.

    ``refresh(x, generator)`` is called at the start of every trajectory (auxiliary fields
    such as pseudofermions are drawn there; nothing here), ``stats()`` gives per-chain
    diagnostics of the trajectory named by ``stat_names`` (stored as ``mcmc`` columns).
    Works for anything with ``action`` and ``force`` (e.g. flow HMC's latent theory).
    """

    stat_names: tuple[str, ...] = ()

    def __init__(self, theory):
        self.theory = theory

    def refresh(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        pass

    def action(self, x: torch.Tensor) -> torch.Tensor:
        return self.theory.action(x)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        return self.theory.force(x)

    def stats(self) -> dict[str, torch.Tensor]:
        return {}


class Theory:
    """A lattice field theory: its action, its observables and what is known exactly.

    Subclasses set the class attributes of the module docstring and implement
    ``field_shape``, ``action``, ``observables`` and ``params``.  All tensors carry a leading
    batch axis; actions and observables return ``(batch,)``.
    """

    name: str = ""
    couplings: type | None = None  # a dataclass of schema.key fields
    min_dim: int = 1
    max_dim: int | None = None  # e.g. 2 for theories whose gamma matrices are 2D ones
    max_volume: int | None = None  # e.g. where the action needs dense V × V linear algebra
    field_space: FieldSpace = RealField()
    #: observables whose per-configuration values are stored in ensembles
    observable_names: tuple[str, ...] = ()
    headline_observables: tuple[str, ...] = ()
    #: whether the theory has fermions (its molecular dynamics has options of its own)
    has_fermions: bool = False
    #: the ``[hmc]`` keys of this theory's molecular dynamics (a dataclass of
    #: :func:`~latticeflow.schema.key` fields, like ``couplings``; none by default)
    md_options: type = NoMDOptions

    def __init__(self, shape: tuple[int, ...]):
        self.lattice = Lattice(tuple(shape))
        problem = self.geometry_problem(self.shape)
        if problem:
            raise ValueError(problem[1])

    @classmethod
    def geometry_problem(cls, shape: tuple[int, ...]) -> tuple[str, str] | None:
        """Why the theory is not defined (``min_dim``, ``max_dim``) or not implemented
        (``max_volume``) on a lattice of ``shape``: ``(key, reason)``, or None."""
        dim = len(shape)
        if dim < cls.min_dim:
            return "dim", f"the {cls.name} theory needs dim >= {cls.min_dim} (got {dim})"
        if cls.max_dim is not None and dim > cls.max_dim:
            return "dim", f"the {cls.name} theory needs dim <= {cls.max_dim} (got {dim})"
        volume = math.prod(shape)
        if cls.max_volume is not None and volume > cls.max_volume:
            return extent_key(shape), (f"the {cls.name} theory is implemented up to {cls.max_volume} sites "
                         f"(its action is dense linear algebra); this lattice has {volume}")
        return None

    @classmethod
    def couplings_problem(cls, couplings: dict) -> tuple[str, str] | None:
        """Why couplings that are valid one by one do not define the theory together:
        ``(key, reason)``, or None."""
        return None

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
        return self.field_space.dtype

    # --- physics --------------------------------------------------------------------------
    def action(self, x: torch.Tensor) -> torch.Tensor:
        """S(x) per configuration, shape ``(batch,)``."""
        raise NotImplementedError

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """The analytic force (see :mod:`~latticeflow.theories.field_space`), shaped like x."""
        raise NotImplementedError(f"{type(self).__name__} has no analytic force")

    def md_action(self, **options) -> MDAction:
        """What HMC integrates (see :class:`MDAction`), given the ``[hmc]`` keys of
        :attr:`md_options` (all of them, defaults filled in)."""
        return MDAction(self)

    def md_keeps(self, options: dict) -> dict:
        """The molecular-dynamics options that define a chain (what a resume must keep):
        by default all of them."""
        return dict(options)

    def observables(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-configuration observables ``{name: (batch,)}`` in float64."""
        raise NotImplementedError

    def derived_observables(self) -> dict[str, Derived]:
        """Functions of means reported beside the stored observables (may be empty)."""
        return {}

    def exact(self) -> dict[str, float]:
        """Analytic reference values where the theory has them (may be empty)."""
        return {}

    def exact_distributions(self) -> dict[str, dict[float, float]]:
        """Exact distributions ``{observable: {value: probability}}`` (may be empty)."""
        return {}

    def exact_sampling_problem(self) -> str | None:
        """Why :meth:`draw_exact` cannot sample this theory, or None where it can."""
        return f"no exact (direct) sampler is known for the {self.name} theory"

    def draw_exact(self, n: int, rng):
        """``n`` independent exact configurations and the proposals each took ``(n,)``,
        where the theory is directly samplable (``rng``: a numpy Generator)."""
        raise NotImplementedError(self.exact_sampling_problem())

    def params(self) -> dict[str, Any]:
        """The physics as a JSON-able dict: ``name``, ``shape`` and couplings."""
        return {"name": self.name, "shape": list(self.shape),
                **{k: getattr(self, k) for k in coupling_names(type(self))}}

    def random_field(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A 'hot' start: random configurations (prior-like)."""
        raise NotImplementedError

    def cold_field(self, batch: int) -> torch.Tensor:
        """A 'cold' start: φ = 0, θ = 0 or U = 1 everywhere."""
        return self.field_space.identity(batch, self.field_shape)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Theory) and self.params() == other.params()

    def __hash__(self):
        return hash(repr(self))
