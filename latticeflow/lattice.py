"""Lattice geometry: periodic shifts, coordinates, checkerboard and gauge-layer masks.

Conventions
-----------
- A lattice has shape ``(L_1, ..., L_d)``; boundaries are periodic, spacing 1.
- Scalar fields are ``(batch, *lattice)``, links ``(batch, d, *lattice[, N, N])``; the
  lattice axes of a tensor start at ``axis0`` (1 for scalars, 2 for links).
- ``shift(x, mu)[..., s, ...] = x[..., s + mu_hat, ...]``: the field *at the neighbour in
  the forward mu direction* (a ``torch.roll`` by −1).
- Gauge-layer masks follow arXiv:2003.06413 (Fig. 2) and arXiv:2101.08176: in 2D the
  active ``mu``-links sit on every fourth line perpendicular to ``mu``; the plaquettes
  they start are *active*, the plaquettes just before them are *passive*, and the two
  lines of plaquettes after them are *frozen* (they contain no active link and feed the
  conditioner).  Cycling ``mu`` over {0, 1} and the offset over 0..3 updates every link
  once per 8 layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Sequence

import torch

from .errors import LatticeflowError

__all__ = [
    "Lattice",
    "extent_key",
    "shift",
    "coordinates",
    "checkerboard",
    "link_stripes_2d",
    "plaquette_masks_2d",
    "gauge_mask_schedule",
    "planes",
    "rectangular_loop",
]


@dataclass(frozen=True)
class Lattice:
    """A periodic hypercubic lattice of shape ``(L_1, ..., L_d)``.

    Example:
        >>> Lattice((8, 8)).volume
        64
    """

    shape: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if len(self.shape) < 1 or any(n < 2 for n in self.shape):
            raise LatticeflowError(f"lattice shape {self.shape}: every extent must be >= 2")

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return prod(self.shape)


def extent_key(shape: Sequence[int]) -> str:
    """The ``[theory]`` key an error about the lattice extents names: ``L`` for a hypercube
    (``L = 8``), ``shape`` for one with different extents (``shape = [8, 6]``)."""
    return "L" if len(set(shape)) == 1 else "shape"


def shift(x: torch.Tensor, mu: int, steps: int = 1, axis0: int = 1) -> torch.Tensor:
    """Field at the neighbour ``site + steps * mu_hat`` (periodic).

    Arguments:
        x: tensor whose lattice axes start at ``axis0``.
        mu: direction, 0 <= mu < d.
        steps: how many lattice units (negative: backwards).
    """
    return torch.roll(x, shifts=-steps, dims=axis0 + mu)


def planes(d: int) -> list[tuple[int, int]]:
    """The oriented planes (μ, ν), μ < ν, of a d-dimensional lattice, in a fixed order."""
    return [(mu, nu) for mu in range(d) for nu in range(mu + 1, d)]


def rectangular_loop(u_mu, u_nu, a: int, b: int, mu: int, nu: int, product, inverse):
    """The a×b Wilson loop starting at every site, counter-clockwise in the (μ, ν) plane,
    for any group: ``product(x, y)`` multiplies links (U(1) angles: +, SU(N): @) and
    ``inverse`` inverts them (−, †).  ``u_mu``, ``u_nu``: ``(batch, *lattice[, N, N])``.
    """
    def line(u, direction, length):
        out = u
        for k in range(1, length):
            out = product(out, shift(u, direction, k))
        return out

    bottom = line(u_mu, mu, a)
    right = shift(line(u_nu, nu, b), mu, a)
    top = shift(bottom, nu, b)
    left = line(u_nu, nu, b)
    return product(product(product(bottom, right), inverse(top)), inverse(left))


def coordinates(shape: Sequence[int]) -> torch.Tensor:
    """Integer site coordinates, shape ``(d, *shape)``."""
    grids = torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")
    return torch.stack(grids)


def checkerboard(shape: Sequence[int], parity: int = 0) -> torch.Tensor:
    """Boolean mask, True on sites with ``sum(coords) % 2 == parity``.

    Needs every extent even so that the pattern is consistent across the boundary.
    """
    if any(n % 2 for n in shape):
        raise LatticeflowError(f"lattice shape {tuple(shape)}: a checkerboard mask needs even L")
    return coordinates(shape).sum(0) % 2 == parity


def _require_2d_stripes(shape: Sequence[int]) -> None:
    if len(shape) != 2:
        raise LatticeflowError(
            f"lattice shape {tuple(shape)}: gauge-equivariant masks are implemented in 2D only")
    if any(n % 4 for n in shape):
        raise LatticeflowError(
            f"lattice shape {tuple(shape)}: gauge-equivariant masks need L divisible by 4")


def _stripes(shape: Sequence[int], mu: int, offset: int, width: int) -> torch.Tensor:
    """Lines perpendicular to ``nu = 1 - mu``: True where ``(x_nu - offset) % 4 < width``."""
    nu = 1 - mu
    x_nu = coordinates(shape)[nu]
    return (x_nu - offset) % 4 < width


def link_stripes_2d(shape: Sequence[int], mu: int, offset: int) -> torch.Tensor:
    """Active-link mask of shape ``(2, *shape)``: ``mu``-links with ``x_nu = offset (mod 4)``."""
    _require_2d_stripes(shape)
    mask = torch.zeros((2, *shape), dtype=torch.bool)
    mask[mu] = _stripes(shape, mu, offset, 1)
    return mask


def plaquette_masks_2d(shape: Sequence[int], mu: int, offset: int) -> dict[str, torch.Tensor]:
    """Plaquette masks ``{"active", "passive", "frozen"}``, each boolean of shape ``shape``.

    The plaquette at ``x`` is ``P_01(x)``.  An active ``mu``-link at ``x`` enters the
    plaquette at ``x`` (sign +1 for mu = 0, −1 for mu = 1: the coupling layer carries that
    sign into the link update) — the *active* plaquette — and the plaquette at
    ``x - nu_hat`` — *passive*, it changes but is not transformed.  The two lines of
    plaquettes at ``x_nu = offset + 1, offset + 2 (mod 4)`` contain no active link: *frozen*.
    """
    _require_2d_stripes(shape)
    active = _stripes(shape, mu, offset, 1)
    frozen = _stripes(shape, mu, offset + 1, 2)
    passive = ~(active | frozen)
    return {"active": active, "passive": passive, "frozen": frozen}


def gauge_mask_schedule(n_layers: int) -> list[tuple[int, int]]:
    """``(mu, offset)`` for each layer: mu alternates 0, 1; the offset cycles 0..3 every 2 layers."""
    return [(i % 2, (i // 2) % 4) for i in range(n_layers)]
