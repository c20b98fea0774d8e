"""Coupling annealing during training (a β schedule): ``[train] anneal_from``.

With ``anneal_from = a`` the coupling ``anneal_coupling`` (default ``beta``) of the training
target runs linearly from ``a`` at step 0 to the model's value at step ``anneal_steps`` and
stays there; the loss at step t is the reverse KL to the theory at that step's coupling.
Starting where the flow is already good (small β, or the β of ``[train] init``) and moving
toward the continuum keeps the flow from collapsing onto one topological sector, which
training at large β from scratch does (arXiv:2003.06413 §V).  Acceptance and ESS during
training are always measured at the model's own coupling.
"""

from __future__ import annotations

import math

from ..config import anneal_problem
from ..errors import ConfigError
from ..theories import theory_class

__all__ = ["CouplingSchedule"]


class CouplingSchedule:
    """``theory_at(step)``: the training target at a step (the model's theory without a
    schedule).  Raises :class:`ConfigError` for a coupling the theory does not have or a
    starting value it does not accept."""

    def __init__(self, cfg, theory):
        self.theory, tc = theory, cfg.train
        self.start, self.name, self.steps = tc.anneal_from, tc.anneal_coupling, tc.anneal_steps
        if self.start is None:
            return
        problem = anneal_problem(cfg.theory, tc)  # checked when a model file is read; configs
        if problem:                               # made in Python are checked here
            raise ConfigError(f"train.{problem[0]}: {problem[1]}")
        cls = theory_class(cfg.theory.name)
        couplings = cfg.theory.couplings()
        self.cls, self.shape, self.couplings = cls, cfg.theory.shape, couplings
        self.end = float(couplings[self.name])
        self._cache: tuple[float, object] | None = None

    def value_at(self, step: int) -> float | None:
        """The scheduled coupling at ``step`` (None without a schedule)."""
        if self.start is None:
            return None
        if self.steps == 0 or step >= self.steps:
            return self.end
        value = self.start + (self.end - self.start) * step / self.steps
        if not math.isfinite(value):  # end − start overflowed (|couplings| near 1e308)
            t = step / self.steps
            value = self.start * (1 - t) + self.end * t
        return value

    def theory_at(self, step: int):
        value = self.value_at(step)
        if value is None or value == self.end:
            return self.theory
        if self._cache is None or self._cache[0] != value:
            self._cache = (value, self.cls(self.shape, **{**self.couplings, self.name: value}))
        return self._cache[1]
