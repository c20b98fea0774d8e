"""Lattice theories: actions, observables, field spaces, gauge transformations, exact results.

Every module of this package is imported here, and each theory class in it registers itself
(:func:`~latticeflow.theories.base.register_theory`), so adding a theory means adding its
module and nothing else.  ``make_theory(name, shape, **couplings)`` builds one from the
names used in TOML files and ensemble metadata.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import LatticeflowError
from .base import THEORIES, Derived, Theory, coupling_names, register_theory

_INFRASTRUCTURE = {"base", "field_space", "exact", "fermions", "defect"}  # defect: no theory of its own
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

from .phi4 import Phi4  # noqa: E402  (re-exported names; the loop above registered them)
from .schwinger import Schwinger  # noqa: E402
from .sun import SUN  # noqa: E402
from .u1 import U1  # noqa: E402

__all__ = ["Theory", "Derived", "coupling_names", "THEORIES", "register_theory", "theory_class",
           "make_theory", "theory_from_params", "Phi4", "U1", "SUN", "Schwinger"]


def theory_class(name: str) -> type[Theory]:
    """The registered class of theory ``name``."""
    try:
        return THEORIES[name]
    except KeyError:
        raise LatticeflowError(f"unknown theory {name!r} (expected one of: "
                               f"{', '.join(THEORIES)})") from None


def make_theory(name: str, shape, **couplings) -> Theory:
    """Build a theory from its TOML name and couplings (validated by ``config``)."""
    cls = theory_class(name)
    names = coupling_names(cls)
    if set(couplings) != set(names):
        raise LatticeflowError(f"{name}: couplings {sorted(couplings)} given, it has: {', '.join(names)}")
    try:
        return cls(tuple(shape), **couplings)
    except ValueError as exc:  # e.g. a lattice the theory is not implemented for
        raise LatticeflowError(f"{name}: {exc}") from None


def theory_from_params(params: dict) -> Theory:
    """Inverse of ``Theory.params()`` (e.g. the JSON stored in an ensemble file); the
    couplings are checked like the ``[theory]`` keys they came from."""
    from ..schema import validate

    p = dict(params)
    name = p.pop("name")
    shape = tuple(p.pop("shape"))
    cls = theory_class(name)
    if cls.couplings is not None:
        p = validate("theory", p, cls.couplings)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in shape):
        raise LatticeflowError(f"theory.shape: must be a list of integers >= 2 (got {list(shape)})")
    return make_theory(name, shape, **p)
