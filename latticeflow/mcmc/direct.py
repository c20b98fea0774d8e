"""Exact, independent draws as a chain sampler: ``direct`` (where the theory can draw them,
``Theory.draw_exact``; pure 2D U(1), :mod:`latticeflow.theories.u1_direct`).

Every row holds C independent exact configurations: ``accepted`` is always true,
``log_weight`` is 0 (each draw has weight p/p = 1: no reweighting, no autocorrelation)
and ``tries`` is the number of proposals the rejection sampler spent on it (its cost).
Row r draws from its own numpy Generator, PCG64 seeded by ``(seed, r)``: a row's
configurations do not depend on how the rows were split into blocks or runs, so a resumed
or extended file is bit-identical to one written in one go (the resume state is the row
count).
"""

from __future__ import annotations

import numpy as np
import torch

from ..ensemble.format import Weighting
from .driver import Block
from .state import ChainState

__all__ = ["DirectSamples"]


class DirectSamples:
    """``C`` columns of independent exact configurations (see the module docstring).

    Arguments:
        theory: a theory whose ``exact_sampling_problem()`` is None.
        n_chains: C (the row width; the draws are independent anyway).
        seed: seeds the numpy generator.
        store_configs: keep the configurations.
        batch_size: configurations measured at once.
    """

    sampler = "direct"
    mcmc_columns = ["accepted", "log_weight", "tries"]
    weights = Weighting("log_weight")  #: every draw has weight 1: no reweighting

    def __init__(self, theory, n_chains: int, seed: int = 0, store_configs: bool = True,
                 batch_size: int = 1024):
        problem = theory.exact_sampling_problem()
        if problem:
            raise ValueError(problem)
        self.theory, self.n_chains, self.seed = theory, int(n_chains), int(seed)
        self.store_configs, self.batch_size = store_configs, int(batch_size)

    def start(self, state: ChainState | None) -> None:
        self.rows = int(state.settings["rows"]) if state else 0

    def advance(self, rows: int) -> Block:
        c = self.n_chains
        draws = [self.theory.draw_exact(c, np.random.Generator(np.random.PCG64([self.seed, row])))
                 for row in range(self.rows, self.rows + rows)]
        self.rows += rows
        x = torch.cat([d[0] for d in draws]).to(self.theory.field_dtype)
        tries = np.concatenate([d[1] for d in draws])
        obs: dict[str, list] = {}
        with torch.no_grad():
            for start in range(0, rows * c, self.batch_size):
                for name, value in self.theory.observables(x[start : start + self.batch_size]).items():
                    obs.setdefault(name, []).append(value)
        observables = {k: torch.cat(v).view(rows, c).numpy() for k, v in obs.items()}
        mcmc = {"accepted": np.ones((rows, c), dtype=bool), "log_weight": np.zeros((rows, c)),
                "tries": np.asarray(tries, dtype=np.float64).reshape(rows, c)}
        configs = x.view(rows, c, *x.shape[1:]).numpy() if self.store_configs else None
        return Block(observables, mcmc, configs)

    def state(self) -> ChainState:
        return ChainState(settings={"rows": np.array(self.rows)})

    def extra(self) -> dict:
        return {"batch_size": self.batch_size}
