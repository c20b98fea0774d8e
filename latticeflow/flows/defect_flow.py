"""The maps of a stochastic normalizing flow on a defect: the U(1) gauge-equivariant couplings
of a flow, restricted to the links near the defect (arXiv:2201.08862 for stochastic flows,
arXiv:2412.00200 and arXiv:2510.25704 for defects in gauge theories).

Conventions
-----------
- Links ``(batch, 2, L_0, L_1)`` and plaquettes ``(L_0, L_1)`` as in
  :mod:`~latticeflow.flows.gauge_coupling`; the defect is a boolean plaquette mask
  (:func:`latticeflow.theories.defect.defect_mask`).
- The *patch* of width p (:func:`patch_plaquettes`): the plaquettes at periodic Chebyshev
  distance ≤ p from a defect plaquette (p = 0: the defect itself).  A link is *in the patch*
  when one of its two plaquettes is.
- :class:`PatchCoupling` is a :class:`~latticeflow.flows.gauge_coupling.GaugeEquivariantCoupling`
  whose active links are only those in the patch; every other link is frozen (the
  conditioner still reads the frozen loops anywhere).  It stays gauge equivariant,
  invertible, and ``log|det J| = Σ_{active in patch} log h'(P)``.  The conditioner runs on
  the smallest periodic window of the lattice that holds the patch plus the network's
  receptive radius (the same parameters as on the whole lattice, bit for bit in exact
  arithmetic: the window's own wrap-around never reaches the patch).
- :class:`DefectMap` is a sequence of patch couplings ``f(x) -> (y, log|det J|)``, run in
  the dtype of the flow's parameters; only the moved links change, added to the input in
  its own precision.
- :func:`defect_maps`: the ``layers`` couplings of a U(1) flow cut into K consecutive groups
  (K = ``maps``), one :class:`DefectMap` each; protocol step n = 1 … N uses map
  ⌊(n − 1) K / N⌋, so K = N gives every step a map of its own and K = 1 one map shared by
  all.  The flow's prior is not used: a stochastic flow starts from the c = 0 theory.
"""

from __future__ import annotations

import math

import torch

from .gauge_coupling import GaugeEquivariantCoupling, U1Loops
from .nets import PeriodicConv

__all__ = ["patch_plaquettes", "PatchCoupling", "DefectMap", "defect_maps", "receptive_radius", "map_problem"]

F64 = torch.float64


def patch_plaquettes(defect: torch.Tensor, patch: int) -> torch.Tensor:
    """The plaquettes within periodic Chebyshev distance ``patch`` (≥ 0) of the ``defect``
    plaquettes, ``(L_0, L_1)`` bool."""
    if int(patch) != patch or patch < 0:
        raise ValueError(f"the patch is a distance >= 0 in lattice units (got {patch})")
    region = defect.clone()
    for axis in (0, 1):
        grown = region.clone()
        for step in range(1, min(int(patch), defect.shape[axis]) + 1):
            grown |= torch.roll(region, step, axis) | torch.roll(region, -step, axis)
        region = grown
    return region


def receptive_radius(net: torch.nn.Module) -> int:
    """How far (in sites) the output of a stack of periodic convolutions can see."""
    return sum(m.kernel_size // 2 for m in net.modules() if isinstance(m, PeriodicConv))


def _window(occupied: torch.Tensor, margin: int) -> torch.Tensor | None:
    """Indices (periodic) of the smallest interval that holds the ``True`` entries of the 1D
    ``occupied`` widened by ``margin`` on both sides, or None where that is the whole axis."""
    n = occupied.numel()
    idx = torch.nonzero(occupied).flatten()
    if idx.numel() == 0:
        return None
    gaps = torch.diff(torch.cat([idx, idx[:1] + n]))  # free runs between occupied sites
    largest = int(torch.argmax(gaps))
    start, width = int(idx[(largest + 1) % idx.numel()]), n - int(gaps[largest]) + 1
    if width + 2 * margin >= n:
        return None
    return (start - margin + torch.arange(width + 2 * margin)) % n


class PatchCoupling:
    """A gauge-equivariant U(1) coupling ``layer`` acting only on the links in ``region``'s
    patch (module docstring); ``forward(x)`` and ``inverse(y)`` give ``(links, log|det|)``.
    Holds no parameters of its own: the layer's are used (and trained)."""

    def __init__(self, layer: GaugeEquivariantCoupling, region: torch.Tensor):
        if not isinstance(layer, GaugeEquivariantCoupling) or not isinstance(layer.group, U1Loops):
            raise ValueError(f"a defect map is made of U(1) gauge-equivariant couplings, not {type(layer).__name__}")
        self.layer, self.region = layer, region.to(torch.bool)
        masks = layer.masks(tuple(region.shape))
        nu = 1 - layer.mu  # the active mu-link at x borders P(x) (active) and P(x - nu) (passive)
        self.active = masks["active"] & (self.region | torch.roll(self.region, 1, nu))
        margin = receptive_radius(layer.net)
        self.rows = _window(self.active.any(1), margin)
        self.cols = _window(self.active.any(0), margin)
        self._on: dict = {}

    @property
    def empty(self) -> bool:
        """Whether no link of the patch is active in this layer (it is then the identity)."""
        return not bool(self.active.any())

    def _masks(self, device):
        if device not in self._on:
            self._on[device] = tuple(None if t is None else t.to(device) for t in (self.active, self.rows, self.cols))
        return self._on[device]

    def _params(self, features: torch.Tensor, active, rows, cols) -> torch.Tensor:
        """The conditioner's output at the active sites, ``(B, n_active, n_params)``, from the
        smallest window of ``features`` that determines it."""
        sub, mask = features, active
        if rows is not None:
            sub, mask = sub.index_select(2, rows), mask.index_select(0, rows)
        if cols is not None:
            sub, mask = sub.index_select(3, cols), mask.index_select(1, cols)
        return self.layer.net(sub).movedim(1, -1)[:, mask]

    def _couple(self, links: torch.Tensor, inverse: bool):
        layer = self.layer
        active, rows, cols = self._masks(links.device)
        if self.empty:
            return links, torch.zeros(links.shape[0], dtype=links.dtype, device=links.device)
        plaq = layer.group.plaquettes(links)
        old = plaq[:, active]
        # the active sites of a window are those of the lattice, in the same (row-major) order
        # only when the window does not wrap; sort back by the lattice's order otherwise
        params = self._params(layer.features(plaq, links), active, rows, cols)
        params = params[:, self._order(active, rows, cols)]
        new, logdet = layer.group.transform(layer.bijection, old, params, inverse)
        moved = layer.group.update_links(links[:, layer.mu], active, old, new, layer.sign)
        out = [moved, links[:, 1]] if layer.mu == 0 else [links[:, 0], moved]
        return torch.stack(out, dim=1), logdet.sum(-1)

    def _order(self, active, rows, cols) -> torch.Tensor:
        """Permutation from the window's row-major order of the active sites to the lattice's."""
        key = ("order", active.device)
        if key not in self._on:
            l0, l1 = active.shape
            r = torch.arange(l0, device=active.device) if rows is None else rows
            c = torch.arange(l1, device=active.device) if cols is None else cols
            flat = (r[:, None] * l1 + c[None, :])[active.index_select(0, r).index_select(1, c)]
            self._on[key] = torch.argsort(flat)
        return self._on[key]

    def forward(self, links: torch.Tensor):
        return self._couple(links, inverse=False)

    def inverse(self, links: torch.Tensor):
        return self._couple(links, inverse=True)


def _centred(d: torch.Tensor) -> torch.Tensor:
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


class DefectMap:
    """``f(x) -> (y, log|det ∂y/∂x|)``: patch couplings in sequence (module docstring).
    ``x`` of any float dtype; the couplings run in ``dtype`` (the flow's), y keeps x's dtype
    with only the moved links changed; the log-det is float64 ``(batch,)``."""

    def __init__(self, couplings: list[PatchCoupling], dtype: torch.dtype):
        self.couplings = [c for c in couplings if not c.empty]
        self.dtype = dtype

    def _run(self, x: torch.Tensor, inverse: bool):
        low = x.to(self.dtype)
        y, logdet = low, torch.zeros(x.shape[0], dtype=F64, device=x.device)
        for c in (reversed(self.couplings) if inverse else self.couplings):
            y, ld = c.inverse(y) if inverse else c.forward(y)
            logdet = logdet + ld.to(F64)
        return x + _centred(y.to(x.dtype) - low.to(x.dtype)), logdet  # unmoved links: exactly x

    def __call__(self, x: torch.Tensor):
        return self._run(x, inverse=False)

    def inverse(self, y: torch.Tensor):
        return self._run(y, inverse=True)


def map_problem(flow, maps: int, steps: int) -> str | None:
    """Why ``flow``'s couplings cannot be cut into ``maps`` maps for ``steps`` protocol steps."""
    layers = list(getattr(flow, "layers", ()))
    if not layers or not all(isinstance(layer, GaugeEquivariantCoupling) and isinstance(layer.group, U1Loops)
                             for layer in layers):
        return "a stochastic flow needs a flow of U(1) gauge-equivariant couplings (the u1 / schwinger [flow])"
    if maps > steps:
        return f"{maps} maps for a protocol of {steps} steps: at most one map per step"
    if len(layers) % maps:
        return f"the flow's {len(layers)} couplings do not split into {maps} maps of equal size"
    return None


def defect_maps(flow, defect: torch.Tensor, steps: int, maps: int = 1, patch: int = 1) -> list[DefectMap]:
    """The N = ``steps`` maps of a transport (module docstring) from ``flow.layers``, acting
    on the links within ``patch`` of the ``defect`` plaquettes; a ValueError (one line,
    :func:`map_problem`) if the flow does not fit."""
    problem = map_problem(flow, maps, steps)
    if problem:
        raise ValueError(problem)
    region = patch_plaquettes(defect.to(torch.bool).cpu(), patch)
    dtype = next(flow.parameters()).dtype
    size = len(flow.layers) // maps
    groups = [DefectMap([PatchCoupling(layer, region) for layer in flow.layers[k * size:(k + 1) * size]], dtype)
              for k in range(maps)]
    return [groups[n * maps // steps] for n in range(steps)]
