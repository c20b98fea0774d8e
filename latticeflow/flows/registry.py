"""Flow architectures by theory, and the ``[flow]`` table they are built from.

A module of ``flows/`` registers one architecture per theory (:func:`register_architecture`)
with everything the rest of the package needs to know about it:

- ``options``: a dataclass of the ``[flow]`` keys only this architecture has (``z2``,
  ``loops``, …), declared once with :func:`latticeflow.schema.key`;
- ``bijections``: name → dataclass of that bijection's own keys (``bins``, ``bound``,
  ``components``), whose ``make()`` builds the elementwise map;
- ``check_lattice(shape)``: why the masks cannot tile a lattice (or None);
- ``check_keys(spec)``: why keys that are valid one by one do not go together (or None);
- ``build(theory, spec)``: the :class:`~latticeflow.flows.flow.Flow`.

:class:`FlowConfig` holds the keys every architecture has plus the others by name; the
architecture validates them (a key of another bijection is an error, never silently
unused) in :meth:`FlowArchitecture.resolve`, for TOML files and hand-made configs alike.

Example:
    >>> from latticeflow.theories import Phi4
    >>> flow = build_flow(Phi4((8, 8), m2=-4.0, lam=8.0), FlowConfig(layers=4))
    >>> x, log_q = flow.sample(5)
    >>> x.shape, log_q.shape
    (torch.Size([5, 8, 8]), torch.Size([5]))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..schema import Check, at_least, key, odd_positive, one_of, render_table, table_fields, validate

__all__ = ["FlowConfig", "FlowArchitecture", "FlowSpec", "register_architecture", "architecture",
           "ARCHITECTURES", "build_flow"]

ACTIVATIONS = ("leaky_relu", "tanh", "gelu", "silu")
_channels = Check(lambda v: all(h >= 1 for h in v), "each >= 1")


@dataclass(frozen=True, init=False)
class FlowConfig:
    """``[flow]``: the architecture.  The keys below exist for every theory; the others
    (``params``) belong to the theory's architecture or to the chosen bijection.

    Example:
        >>> FlowConfig(layers=8, bijection="spline", bins=4).bins
        4
    """

    layers: int = key(16, "coupling layers", at_least(1))
    bijection: str | None = key(None, "the elementwise map of each coupling (default: the "
                                      "architecture's first; see below)")
    hidden: tuple[int, ...] = key((8, 8), "hidden channels of each conditioner CNN", _channels)
    kernel_size: int = key(3, "convolution kernel extent", odd_positive)
    activation: str = key("leaky_relu", "activation of the conditioner CNNs", one_of(*ACTIVATIONS))
    params: tuple[tuple[str, Any], ...] = ()

    def __init__(self, layers: int = 16, bijection: str | None = None, hidden=(8, 8),
                 kernel_size: int = 3, activation: str = "leaky_relu", params=(), **more):
        for name, value in (("layers", layers), ("bijection", bijection), ("hidden", tuple(hidden)),
                            ("kernel_size", kernel_size), ("activation", activation),
                            ("params", tuple(sorted((dict(params) | more).items())))):
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # architecture and bijection keys: cfg.bins, cfg.z2, ...
        for k, v in self.__dict__.get("params", ()):
            if k == name:
                return v
        raise AttributeError(f"FlowConfig has no key {name!r}")


@dataclass(frozen=True)
class FlowSpec:
    """A :class:`FlowConfig` resolved by its architecture: what a builder reads."""

    config: FlowConfig
    bijection: str
    options: Any  # the architecture's options dataclass
    kernel: Any  # the bijection's parameters dataclass (``kernel.make()``)

    def __getattr__(self, name):
        for part in ("options", "kernel"):
            if hasattr(self.__dict__[part], name):
                return getattr(self.__dict__[part], name)
        return getattr(self.__dict__["config"], name)

    def values(self) -> dict[str, Any]:
        """Every key of the effective ``[flow]`` table, in declaration order."""
        common = {f.name: getattr(self.config, f.name) for f in table_fields(FlowConfig)}
        common["bijection"] = self.bijection
        return (common | dataclasses.asdict(self.options) | dataclasses.asdict(self.kernel))

    def toml_lines(self) -> list[str]:
        return render_table(self.values())


@dataclass(frozen=True)
class FlowArchitecture:
    """One theory's flows; see the module docstring."""

    theory: str
    build: Callable[[Any, FlowSpec], Any]
    options: type
    bijections: dict[str, type]
    check_lattice: Callable[[tuple[int, ...]], tuple[str, str] | None]
    bijection_kind: str = "elementwise maps"
    doc: str = ""
    check_keys: Callable[[FlowSpec], tuple[str, str] | None] = lambda spec: None

    def resolve(self, flow: FlowConfig, shape=None) -> FlowSpec:
        """Validate ``flow`` (and the lattice ``shape``) for this architecture."""
        name = flow.bijection or next(iter(self.bijections))
        if name not in self.bijections:
            raise ConfigError(f"flow.bijection: {name!r} is not available for the {self.theory} "
                              f"theory (its flows use {self.bijection_kind}: "
                              f"{' or '.join(map(repr, self.bijections))})")
        params = dict(flow.params)
        kernel_cls = self.bijections[name]
        option_keys, kernel_keys = _keys(self.options), _keys(kernel_cls)
        for k in params.keys() - option_keys - kernel_keys:
            owner = [b for b, cls in self.bijections.items() if k in _keys(cls)]
            why = (f"a parameter of the {' and '.join(map(repr, owner))} bijection, not of {name!r}"
                   if owner else f"not a key of the {self.theory} flows")
            mine = ", ".join(sorted(option_keys | kernel_keys)) or "none"
            raise ConfigError(f"flow.{k}: {why} (keys here: {mine})")
        options = self.options(**validate("flow", {k: params[k] for k in params.keys() & option_keys},
                                          self.options))
        kernel = kernel_cls(**validate("flow", {k: params[k] for k in params.keys() & kernel_keys},
                                       kernel_cls))
        spec = FlowSpec(flow, name, options, kernel)
        problem = self.check_keys(spec)
        if problem:
            raise ConfigError(f"flow.{problem[0]}: {problem[1]}")
        if shape is not None:
            if flow.kernel_size > min(shape):
                raise ConfigError(f"flow.kernel_size: must be at most the smallest lattice extent "
                                  f"{min(shape)} (got {flow.kernel_size})")
            problem = self.check_lattice(tuple(shape))
            if problem:
                shown = list(shape) if len(shape) <= 8 else f"{len(shape)} extents"
                raise ConfigError(f"theory.{problem[0]}: {problem[1]} (got {shown})")
        return spec


def _keys(table_cls) -> set[str]:
    return {f.name for f in table_fields(table_cls)}


#: theory name -> its flow architecture; filled when ``latticeflow.flows`` is imported
ARCHITECTURES: dict[str, FlowArchitecture] = {}


def register_architecture(arch: FlowArchitecture) -> FlowArchitecture:
    if arch.theory in ARCHITECTURES:
        raise ValueError(f"a flow architecture for {arch.theory!r} is registered twice")
    ARCHITECTURES[arch.theory] = arch
    return arch


def architecture(theory_name: str) -> FlowArchitecture:
    """The registered architecture of a theory (ConfigError if it has none)."""
    if theory_name not in ARCHITECTURES:
        have = ", ".join(ARCHITECTURES) or "none"
        raise ConfigError(f"flow: there are no flows for the {theory_name} theory yet "
                          f"(flows exist for: {have}); it can be sampled with HMC")
    return ARCHITECTURES[theory_name]


def build_flow(theory, flow_config: FlowConfig):
    """The :class:`~latticeflow.flows.flow.Flow` for ``theory`` with the architecture
    ``flow_config``.  Parameters start in torch's default dtype (float32 unless changed);
    every conditioner's last layer is zero, so a fresh flow is the identity map."""
    arch = architecture(theory.name)
    return arch.build(theory, arch.resolve(flow_config, theory.shape))
