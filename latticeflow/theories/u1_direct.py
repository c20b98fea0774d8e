"""Exact, independent configurations of pure 2D U(1) gauge theory on the torus.

On an ``L_0 × L_1`` torus the Wilson action depends on the links only through the V
plaquette angles, and these are independent von Mises(β) variables except for one global
constraint: their principal values sum to 2π × an integer (the topological charge Q).
So (arXiv:2106.14234 and the classic strong-coupling construction):

1. draw V − 1 plaquette angles from von Mises(0, β), fix the last one by the constraint,
   ``θ_V = arg e^{−i Σ θ_p}``, and accept the whole set with probability
   ``e^{β (cos θ_V − 1)}`` (≤ 1; a rejection sampler, exact; its acceptance is about
   ``1/√(2πβ)`` at large β);
2. rebuild links with those plaquettes in a maximal-tree gauge — every link of the tree
   (the direction-0 links of row x_1 = 0 but the last, and the direction-1 links of every
   column but those leaving the last row) is 0 —, with the two holonomies (the last
   direction-0 link of row 0 and the direction-1 link of column 0 leaving the last row)
   uniform in [0, 2π);
3. apply a uniform random gauge transformation.

The links then follow the Wilson measure with Haar measure exactly: the plaquettes and
holonomies are an integer unimodular change of variables of the links modulo gauge.

Conventions as in :mod:`latticeflow.theories.u1`: links ``(batch, 2, L_0, L_1)``,
``θ_01(x) = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["draw_plaquettes", "links_from_plaquettes", "draw_links", "MAX_BETA"]

#: beyond this β the rejection step accepts fewer than 1 in 2500 proposals
MAX_BETA = 1e6
#: proposals × plaquettes drawn at once (32 MB of angles): memory stays bounded at any β
_CHUNK = 1 << 22


def _wrap(a: np.ndarray) -> np.ndarray:
    """The principal angle in (−π, π]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def draw_plaquettes(volume: int, beta: float, n: int, rng: np.random.Generator):
    """``n`` sets of plaquette angles ``(n, volume)`` in (−π, π] with the torus constraint,
    and the proposals each accepted set took ``(n,)`` (its cost)."""
    out, tries, pending, accepted = [], [], 0, 0
    rate = min(1.0, 1.0 / math.sqrt(2 * math.pi * max(beta, 1e-300)))  # about the acceptance at large β
    while accepted < n:
        k = min(math.ceil(1.25 * (n - accepted) / rate) + 4, max(1, _CHUNK // volume))
        free = rng.vonmises(0.0, beta, size=(k, volume - 1))
        last = _wrap(-free.sum(1))
        keep = rng.random(k) < np.exp(beta * (np.cos(last) - 1.0))
        index = np.flatnonzero(keep)[: n - accepted]
        if len(index):  # proposals since the previous accepted set, those of earlier rounds included
            gaps = np.diff(index, prepend=-1).astype(np.float64)
            gaps[0] += pending
            pending = k - 1 - index[-1]
        else:
            gaps, pending = np.zeros(0), pending + k
        out.append(np.concatenate([free[index], last[index, None]], axis=1))
        tries.append(gaps)
        accepted += len(index)
    return np.concatenate(out), np.concatenate(tries)


def links_from_plaquettes(p: np.ndarray, holonomies: np.ndarray) -> np.ndarray:
    """Links ``(n, 2, L_0, L_1)`` in the maximal-tree gauge whose plaquette angles are
    ``p`` ``(n, L_0, L_1)`` (mod 2π; their sum must be a multiple of 2π), with the two
    holonomy links ``holonomies`` ``(n, 2)``."""
    n, l0, l1 = p.shape
    theta0 = np.zeros((n, l0, l1))
    theta1 = np.zeros((n, l0, l1))
    theta0[:, l0 - 1, 0] = holonomies[:, 0]
    # rows x_1 = 1 … L_1 − 1: the plaquette below fixes the next direction-0 link (θ_1 = 0 there)
    theta0[:, :, 1:] = theta0[:, :, :1] - np.cumsum(p[:, :, : l1 - 1], axis=2)
    # the last row's plaquettes fix the direction-1 links leaving it, up to the holonomy
    r = p[:, :, l1 - 1] - theta0[:, :, l1 - 1] + theta0[:, :, 0]
    theta1[:, :, l1 - 1] = holonomies[:, 1:2] + np.concatenate([np.zeros((n, 1)), np.cumsum(r[:, :-1], axis=1)],
                                                                axis=1)
    return np.stack([theta0, theta1], axis=1)


def draw_links(shape: tuple[int, int], beta: float, n: int, rng: np.random.Generator):
    """``n`` exact configurations ``(n, 2, L_0, L_1)`` in [0, 2π), float64, and the
    proposals each took ``(n,)``."""
    l0, l1 = shape
    p, tries = draw_plaquettes(l0 * l1, beta, n, rng)
    links = links_from_plaquettes(p.reshape(n, l0, l1), 2 * math.pi * rng.random((n, 2)))
    alpha = 2 * math.pi * rng.random((n, l0, l1))  # gauge: θ_μ(x) + α(x) − α(x+μ)
    links[:, 0] += alpha - np.roll(alpha, -1, axis=1)
    links[:, 1] += alpha - np.roll(alpha, -1, axis=2)
    return np.mod(links, 2 * math.pi), tries
