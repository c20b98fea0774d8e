"""Lattice theories: actions, observables, gauge transformations and exact results.

``make_theory(name, shape, **couplings)`` builds one from the names used in TOML files.
"""

from __future__ import annotations

from ..errors import LatticeflowError
from .base import Theory
from .phi4 import Phi4
from .sun import SUN
from .u1 import U1

__all__ = ["Theory", "Phi4", "U1", "SUN", "make_theory", "theory_from_params"]

THEORIES = {"phi4": Phi4, "u1": U1, "sun": SUN}


def make_theory(name: str, shape, *, beta=None, m2=None, lam=None, N=None) -> Theory:
    """Build a theory from its TOML name and couplings (validated by ``config``)."""
    if name == "phi4":
        return Phi4(shape, m2=m2, lam=lam)
    if name == "u1":
        return U1(shape, beta=beta)
    if name == "sun":
        return SUN(shape, beta=beta, N=N)
    raise LatticeflowError(f"unknown theory {name!r} (expected one of: phi4, u1, sun)")


def theory_from_params(params: dict) -> Theory:
    """Inverse of ``Theory.params()`` (e.g. the JSON stored in an ensemble file)."""
    p = dict(params)
    name = p.pop("name")
    shape = tuple(p.pop("shape"))
    return make_theory(name, shape, **p)
