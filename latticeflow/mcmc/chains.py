"""The one chain runner: C Markov chains of any kernel as a chain sampler.

:class:`KernelChains` owns what every Markov-chain sampler needs around its kernel — the
fields of the C chains, their generator, the fresh start (hot, cold, or ``[sample] start``
fields) and its thermalisation, one ``kernel.step`` per row, the measurement of every row,
the ``mcmc/`` columns, the stored configurations and the typed resume state
(:class:`~latticeflow.mcmc.state.ChainState`) — so that a sampler is its kernel plus a few
hooks.  HMC (:class:`~latticeflow.mcmc.hmc_chains.HMCChains`), the mixed kernel
(:mod:`~latticeflow.mcmc.mixed`), flow HMC (:mod:`~latticeflow.mcmc.flow_hmc`), the
classical samplers and a kernel composed in a script (docs/kernels.md) all run here, and
:func:`~latticeflow.mcmc.driver.run_ensemble` writes them to an ensemble file in blocks.

The samplers of independent proposals (flow-MCMC's batched accept/reject scan, flow i.i.d.,
direct draws) are not Markov kernels applied step by step: they draw whole blocks at once,
vectorised over rows, and keep their own classes (:mod:`~latticeflow.mcmc.flow_samplers`,
:mod:`~latticeflow.mcmc.direct`).

Hooks a subclass may override (each has a default):

- :meth:`initial_field`: the fields a fresh start thermalises from.
- :meth:`thermalize`: the thermalisation (default: ``thermalization`` kernel steps).
- :meth:`record`: a step's ``mcmc/`` columns from its state and info.
- :meth:`measure` (per row), or :attr:`measure_each_step` = False and :meth:`measure_block`
  (observables and configurations of a whole block at once).
- :meth:`check`: refuse a block before it is written (e.g. every energy non-finite).
- :meth:`save_settings` / :meth:`load_settings`: the sampler's own resume settings.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..devices import to_numpy
from ..ensemble.format import Weighting
from .driver import Block, generator_state, restore_generator
from .hmc import initial_field
from .kernels import KernelState, start_tensor
from .state import ChainState

__all__ = ["KernelChains"]


def streams(kernel) -> list:
    """The proposal streams inside a kernel (each once), in order."""
    found = []
    for k in getattr(kernel, "kernels", [kernel]):
        stream = getattr(k, "stream", None)
        if stream is not None and all(stream is not s for s in found):
            found.append(stream)
    return found


class KernelChains:
    """C chains of a kernel as a chain sampler (the protocol of :mod:`.driver`).

    Each row is one ``kernel.step``; it records the observables of the fields and the
    ``columns`` of :meth:`record` (by default taken from the step's info — of a composite
    kernel, the last info that has the column — plus ``log_weight`` where the state knows
    it).  The resume state is the fields, the generator, the kernel's proposal streams and
    what :meth:`save_settings` adds.

    Arguments:
        theory: the theory whose observables are measured (and whose fields start the chains).
        kernel: a kernel (:class:`~.kernels.HMCKernel`, :class:`~.kernels.Composite`, …).
        n_chains: C.
        columns: the ``mcmc/`` columns; ``accepted`` and the weight column among them.
        weight_column: the column that weights the rows (``delta_h`` or ``log_weight``).
        name: the ensemble's ``sampler`` attribute.
        seed: seeds the chains' generator (momenta, accept/reject, hot starts).
        thermalization: steps before the first stored one.
        start: ``"hot"`` or ``"cold"``; ``start_fields`` (``[sample] start``) override it.
        store_configs: keep every step's fields.
        device: where the chains live (the generator stays on the CPU).
        progress: show a bar during thermalisation.
    """

    measure_each_step = True  #: measure every row as it is made (else :meth:`measure_block`)

    def __init__(self, theory, kernel, n_chains: int, columns=("accepted", "delta_h"), weight_column="delta_h",
                 name: str = "kernels", seed: int = 0, thermalization: int = 0, start: str = "hot",
                 start_fields=None, store_configs: bool = True, device="cpu", progress: bool = False):
        if "accepted" not in columns or weight_column not in columns:
            raise ValueError(f"columns must include 'accepted' and the weight column {weight_column!r}")
        self.theory, self.kernel, self.n_chains = theory, kernel, int(n_chains)
        self.sampler, self.mcmc_columns = name, list(columns)
        self.weights = Weighting(weight_column)
        self.thermalization, self.start_kind, self.start_fields = int(thermalization), start, start_fields
        self.store_configs, self.device, self.progress = store_configs, torch.device(device), progress
        self.generator = torch.Generator().manual_seed(int(seed))

    # --- hooks ---------------------------------------------------------------------------
    def initial_field(self) -> torch.Tensor:
        """The fields a fresh start thermalises from: ``start_fields``, else ``start``."""
        if self.start_fields is not None:
            return self.given_fields()
        return initial_field(self.theory, self.n_chains, self.start_kind, self.generator).to(self.device)

    def given_fields(self) -> torch.Tensor:
        """``start_fields`` as a tensor of the theory's field dtype on the chains' device."""
        return start_tensor(self.start_fields, self.theory, self.device)

    def thermalize(self, x: torch.Tensor, callback) -> torch.Tensor:
        """``thermalization`` kernel steps from ``x`` (``callback()`` after each)."""
        for _ in range(self.thermalization):
            x = self.kernel.step(KernelState(x), self.generator)[0].x
            callback()
        return x

    def record(self, state: KernelState, infos) -> dict[str, torch.Tensor]:
        """The ``mcmc/`` columns of one step, ``{name: (C,)}``."""
        merged = {}
        for info in infos if isinstance(infos, list) else [infos]:
            merged |= info
        if state.log_weight is not None:
            merged.setdefault("log_weight", state.log_weight)
        return {name: merged[name] for name in self.mcmc_columns}

    def measure(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The observables of one row of fields, ``{name: (C,)}``."""
        return self.theory.observables(x)

    def measure_block(self, fields: torch.Tensor):
        """``(observables {name: (rows, C) array}, configurations or None)`` of a block's
        fields ``(rows, C, *field)``; used when :attr:`measure_each_step` is False."""
        raise NotImplementedError

    def check(self, mcmc: dict[str, np.ndarray], rows: int) -> None:
        """Refuse a block (raise) before it is written; default: accept every block."""

    def save_settings(self) -> dict[str, np.ndarray]:
        """The sampler's own resume settings (default: the kernel's proposal streams)."""
        settings = {}
        for i, stream in enumerate(streams(self.kernel)):
            saved = stream.state()
            settings |= {f"stream{i}_rng": saved["rng"], f"stream{i}_offset": np.array(saved["offset"])}
        return settings

    def load_settings(self, settings: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`save_settings` saved."""
        for i, stream in enumerate(streams(self.kernel)):
            stream.load_state(settings[f"stream{i}_rng"], int(settings[f"stream{i}_offset"]))

    # --- the chain-sampler protocol ------------------------------------------------------
    def start(self, state: ChainState | None) -> None:
        if state:
            self.load_settings(state.settings)
            restore_generator(self.generator, state.rng)
            self.x = torch.from_numpy(state.field).to(self.device)
            return
        x = self.initial_field()
        with tqdm(total=self.thermalization, desc="thermalising", unit="step",
                  disable=not self.progress, dynamic_ncols=True) as bar:
            self.x = self.thermalize(x, lambda: bar.update(1))

    def advance(self, rows: int) -> Block:
        columns = {name: [] for name in self.mcmc_columns}
        observables, fields = {}, []
        keep = self.store_configs or not self.measure_each_step
        x = self.x
        for _ in range(rows):
            state, infos = self.kernel.step(KernelState(x), self.generator)
            x = state.x
            for name, value in self.record(state, infos).items():
                columns[name].append(value)
            if self.measure_each_step:
                with torch.no_grad():
                    for name, value in self.measure(x).items():
                        observables.setdefault(name, []).append(value)
            if keep:
                fields.append(x.clone())
        self.x = x
        mcmc = {name: to_numpy(torch.stack(v)) for name, v in columns.items()}
        self.check(mcmc, rows)
        if not self.measure_each_step:
            obs, configs = self.measure_block(torch.stack(fields))
            return Block(obs, mcmc, configs)
        obs = {name: to_numpy(torch.stack(v)) for name, v in observables.items()}
        return Block(obs, mcmc, to_numpy(torch.stack(fields)) if self.store_configs else None)

    def state(self) -> ChainState:
        return ChainState(field=to_numpy(self.x), rng=generator_state(self.generator),
                          settings=self.save_settings())

    def extra(self) -> dict:
        return {"kernels": [type(k).__name__ for k in getattr(self.kernel, "kernels", [self.kernel])]}
