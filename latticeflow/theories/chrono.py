"""Initial guesses for the molecular-dynamics solves of pseudofermion HMC: the previous
solution (``"last"``) or the minimal-residual extrapolation of the last few
(``"chrono"``, Brower, Ivanenko, Levi, Orginos, arXiv:hep-lat/9509012).

Conventions
-----------
- Solutions ``χ`` are batched complex tensors ``(batch, ...)``, one system per chain; every
  coefficient below is per chain, so the chains never mix.
- ``"chrono"`` with the last ``N`` solutions: orthonormalise them (Gram–Schmidt, per chain)
  into ``Q``, then take ``x₀ = Q c`` with ``(Q†AQ) c = Q†b``, the guess in span(Q) of least
  ``A``-norm error ``(x − x₀)†A(x − x₀)`` for ``A x = b``.  It costs ``N`` applications
  of ``A``, and hands CG the residual ``b − A x₀`` without another one.  ``N = 1`` is the
  best multiple of the last solution.
- ``"last"``: ``x₀`` = the previous solution, as it is (CG then applies ``A`` once for its
  residual).
- The history belongs to one pseudofermion field: it is cleared at every heat bath
  (``reset``), so a trajectory never sees another trajectory's solutions and a resumed run
  needs no history.

A guess makes the force depend on the history at the level of the solver's residual: the
molecular dynamics is then reversible only to about that level, which is why the force
tolerance must stay tight with a guess (``Schwinger.md_action`` enforces it).
"""

from __future__ import annotations

import torch

__all__ = ["GUESSES", "SolutionHistory"]

#: ``[hmc] cg_guess``
GUESSES = ("zero", "last", "chrono")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a† b`` per batch entry, ``(batch,)``."""
    return (a.conj() * b).flatten(1).sum(1)


class SolutionHistory:
    """The last ``depth`` solutions of one pseudofermion field's solves, and guesses made
    from them (module docstring).

    Arguments:
        kind: ``"zero"`` (no guess), ``"last"`` or ``"chrono"``.
        depth: how many solutions ``"chrono"`` extrapolates from (``"last"``: 1).
    """

    def __init__(self, kind: str = "zero", depth: int = 3):
        if kind not in GUESSES:
            raise ValueError(f"cg_guess must be one of {GUESSES} (got {kind!r})")
        if int(depth) < 1:
            raise ValueError(f"the chronological guess needs depth >= 1 (got {depth})")
        self.kind = kind
        self.depth = 1 if kind == "last" else int(depth)
        self.solutions: list[torch.Tensor] = []

    def reset(self) -> None:
        """Forget every solution (a new pseudofermion field)."""
        self.solutions = []

    def push(self, x: torch.Tensor) -> None:
        """Remember the solution of the latest solve."""
        if self.kind != "zero":
            self.solutions = [x, *self.solutions[: self.depth - 1]]

    def guess(self, apply, b: torch.Tensor):
        """``(x0, r0, applications)`` for ``A x = b`` (``apply(v) = A v``): the start and,
        where known without another application of ``A``, its residual ``b − A x0``
        (else None), and how many times ``A`` was applied here.  ``(None, None, 0)``:
        start from zero."""
        if self.kind == "zero" or not self.solutions:
            return None, None, 0
        if self.kind == "last":
            return self.solutions[0], None, 0
        q = self._orthonormal()
        aq = [apply(v) for v in q]
        n = len(q)
        gram = torch.stack([torch.stack([_dot(q[i], aq[j]) for j in range(n)], -1) for i in range(n)], -2)
        empty = torch.stack([(v.flatten(1).abs().sum(1) == 0) for v in q], -1)  # (batch, n)
        gram = gram + torch.diag_embed(empty.to(gram.dtype))  # a dropped direction: c_j = 0
        rhs = torch.stack([_dot(v, b) for v in q], -1)
        c = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)  # (batch, n)
        shape = (-1,) + (1,) * (b.dim() - 1)
        x0 = sum(c[:, j].view(shape) * q[j] for j in range(n))
        r0 = b - sum(c[:, j].view(shape) * aq[j] for j in range(n))
        return x0, r0, n

    def _orthonormal(self) -> list[torch.Tensor]:
        """The solutions, newest first, orthonormalised per chain (modified Gram–Schmidt,
        twice for stability); a direction already spanned (relative norm below 1e-12) is
        dropped as a zero vector."""
        out = []
        for v in self.solutions:
            norm0 = _dot(v, v).real.sqrt()
            for _ in range(2):
                for q in out:
                    v = v - _dot(q, v).view((-1,) + (1,) * (v.dim() - 1)) * q
            norm = _dot(v, v).real.sqrt()
            keep = norm > 1e-12 * norm0
            scale = torch.where(keep, 1 / norm.clamp(min=1e-300), torch.zeros_like(norm))
            out.append(v * scale.view((-1,) + (1,) * (v.dim() - 1)))
        return out
