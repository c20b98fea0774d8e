"""TOML → validated, typed configuration objects.

A model or study file has a ``[theory]`` table (DESIGN.md §5) and optional ``[flow]``,
``[train]``, ``[hmc]`` and ``[sample]`` tables; the keys, types, defaults and limits of
every table are in ``docs/config.md`` and in the ``_SCHEMAS`` below.  Unknown keys, wrong
types and impossible values raise :class:`ConfigError` with a message that names the key,
e.g. ``theory.beta: must be > 0 (got -1.0)``.

Example:
    >>> cfg = parse_config('[theory]\\nname = "u1"\\nL = 8\\nbeta = 2.0\\n')
    >>> cfg.theory.shape, cfg.hmc.integrator
    ((8, 8), 'omelyan')
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

__all__ = [
    "Config",
    "TheoryConfig",
    "FlowConfig",
    "TrainConfig",
    "HMCConfig",
    "SampleConfig",
    "load_config",
    "parse_config",
]


# --- small validators ---------------------------------------------------------------------
def _positive(v):
    return None if v > 0 else "must be > 0"


def _nonneg(v):
    return None if v >= 0 else "must be >= 0"


def _at_least(n):
    return lambda v: None if v >= n else f"must be >= {n}"


def _one_of(*choices):
    return lambda v: None if v in choices else "must be one of " + ", ".join(map(repr, choices))


def _open_unit(v):
    return None if 0 < v < 1 else "must be in (0, 1)"


def _odd_positive(v):
    return None if v >= 1 and v % 2 == 1 else "must be an odd integer >= 1"


def _int_list(v):
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v):
        return "must be a list of integers >= 1"
    return None


def _loops(v):
    ok = {"plaquette", "rectangle"}
    if not v or not all(isinstance(s, str) and s in ok for s in v) or "plaquette" not in v:
        return 'must be a list containing "plaquette" and optionally "rectangle"'
    return None


_REQUIRED = object()


@dataclass(frozen=True)
class _Key:
    type: type | tuple
    default: Any = _REQUIRED
    check: Callable[[Any], str | None] | None = None


def _check_section(section: str, table: dict, schema: dict[str, _Key]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: must be a table")
    for key in table:
        if key not in schema:
            raise ConfigError(f"{section}.{key}: unknown key (allowed: {', '.join(schema)})")
    out = {}
    for key, spec in schema.items():
        name = f"{section}.{key}"
        if key not in table:
            if spec.default is _REQUIRED:
                raise ConfigError(f"{name}: required key is missing")
            out[key] = spec.default
            continue
        value = table[key]
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{name}: {problem} (got {value!r})")
        out[key] = value
    return out


# --- the sections ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TheoryConfig:
    """``[theory]``: which theory, on which lattice, at which couplings."""

    name: str
    shape: tuple[int, ...]
    beta: float | None = None
    m2: float | None = None
    lam: float | None = None
    N: int | None = None

    @property
    def dim(self) -> int:
        return len(self.shape)

    def couplings(self) -> dict[str, Any]:
        keys = {"phi4": ("m2", "lam"), "u1": ("beta",), "sun": ("beta", "N")}[self.name]
        return {k: getattr(self, k) for k in keys}

    def build(self):
        """The :class:`latticeflow.theories.Theory` this table describes."""
        from .theories import make_theory

        return make_theory(self.name, self.shape, **self.couplings())


_THEORY_KEYS = {
    "name": _Key(str, check=_one_of("phi4", "u1", "sun")),
    "L": _Key(int, None, _at_least(2)),
    "shape": _Key(list, None),
    "dim": _Key(int, None, _at_least(1)),
    "beta": _Key(float, None, _positive),
    "m2": _Key(float, None),
    "lam": _Key(float, None, _nonneg),
    "N": _Key(int, None, _one_of(2, 3)),
}
_COUPLINGS = {"phi4": ("m2", "lam"), "u1": ("beta",), "sun": ("beta", "N")}


def _theory(table: dict) -> TheoryConfig:
    t = _check_section("theory", table, _THEORY_KEYS)
    name = t["name"]
    for key in ("beta", "m2", "lam", "N"):
        if t[key] is not None and key not in _COUPLINGS[name]:
            raise ConfigError(f"theory.{key}: not a parameter of the {name} theory")
    for key in _COUPLINGS[name]:
        if t[key] is None:
            raise ConfigError(f"theory.{key}: required for the {name} theory")
    if t["shape"] is not None:
        if t["L"] is not None:
            raise ConfigError("theory.shape: give either L or shape, not both")
        if _int_list(t["shape"]) or any(n < 2 for n in t["shape"]):
            raise ConfigError(f"theory.shape: must be a list of integers >= 2 (got {t['shape']!r})")
        shape = tuple(t["shape"])
        if t["dim"] is not None and t["dim"] != len(shape):
            raise ConfigError(f"theory.dim: {t['dim']} does not match shape {list(shape)}")
    else:
        if t["L"] is None:
            raise ConfigError("theory.L: required key is missing (or give shape)")
        shape = (t["L"],) * (t["dim"] or 2)
    if name in ("u1", "sun") and len(shape) < 2:
        raise ConfigError(f"theory.dim: a gauge theory needs dim >= 2 (got {len(shape)})")
    return TheoryConfig(name, shape, t["beta"], t["m2"], t["lam"], t["N"])


@dataclass(frozen=True)
class FlowConfig:
    """``[flow]``: the architecture.  φ⁴: checkerboard affine/spline couplings;
    U(1): gauge-equivariant couplings with NCP-mixture or circular-spline kernels."""

    layers: int = 16
    bijection: str = "affine"
    hidden: tuple[int, ...] = (8, 8)
    kernel_size: int = 3
    bins: int = 8
    components: int = 6
    z2: bool = True
    loops: tuple[str, ...] = ("plaquette",)
    activation: str = "leaky_relu"
    bound: float = 5.0
    momentum_scaling: bool = False


_FLOW_KEYS = {
    "layers": _Key(int, 16, _at_least(1)),
    "bijection": _Key(str, None, _one_of("affine", "spline", "ncp")),
    "hidden": _Key(list, [8, 8], _int_list),
    "kernel_size": _Key(int, 3, _odd_positive),
    "bins": _Key(int, 8, _at_least(2)),
    "components": _Key(int, 6, _at_least(1)),
    "z2": _Key(bool, None),
    "loops": _Key(list, ["plaquette"], _loops),
    "activation": _Key(str, "leaky_relu", _one_of("leaky_relu", "tanh", "gelu", "silu")),
    "bound": _Key(float, 5.0, _positive),
    "momentum_scaling": _Key(bool, False),
}


def _flow(table: dict, theory: TheoryConfig) -> FlowConfig:
    f = _check_section("flow", table, _FLOW_KEYS)
    scalar = theory.name == "phi4"
    allowed = ("affine", "spline") if scalar else ("ncp", "spline")
    bijection = f["bijection"] or allowed[0]
    if bijection not in allowed:
        raise ConfigError(f"flow.bijection: {bijection!r} is not available for the "
                          f"{theory.name} theory (use {' or '.join(allowed)})")
    if not scalar and f["z2"] is not None:
        raise ConfigError("flow.z2: only meaningful for the phi4 theory")
    if scalar and "loops" in table:
        raise ConfigError("flow.loops: only meaningful for gauge theories")
    if "bound" in table and not (scalar and bijection == "spline"):
        raise ConfigError("flow.bound: only meaningful for the phi4 spline bijection")
    if "momentum_scaling" in table and not scalar:
        raise ConfigError("flow.momentum_scaling: only meaningful for the phi4 theory")
    if scalar and any(n % 2 for n in theory.shape):
        raise ConfigError(f"theory.L: the checkerboard mask needs even extents (got {list(theory.shape)})")
    if theory.name == "u1":
        if theory.dim != 2:
            raise ConfigError("theory.dim: gauge-equivariant U(1) flows are implemented in 2D")
        if any(n % 4 for n in theory.shape):
            raise ConfigError(f"theory.L: the gauge-equivariant masks need L divisible by 4 "
                              f"(got {list(theory.shape)})")
    if theory.name == "sun":
        raise ConfigError("flow: flows for SU(N) are not implemented yet (HMC only)")
    z2 = True if f["z2"] is None else f["z2"]
    return FlowConfig(f["layers"], bijection, tuple(f["hidden"]), f["kernel_size"], f["bins"],
                      f["components"], z2, tuple(f["loops"]), f["activation"], f["bound"],
                      f["momentum_scaling"])


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: reverse-KL training."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int = 0
    grad_clip: float = 10.0
    estimator: str = "reparam"
    path_after: int | None = None
    seed: int = 0
    minutes: float | None = None
    log_every: int = 10
    eval_every: int = 100
    eval_batch: int = 1024
    checkpoint_every: int = 200


_TRAIN_KEYS = {
    "steps": _Key(int, 2000, _at_least(1)),
    "batch_size": _Key(int, 256, _at_least(1)),
    "lr": _Key(float, 1e-3, _positive),
    "schedule": _Key(str, "cosine", _one_of("constant", "cosine")),
    "warmup": _Key(int, 0, _nonneg),
    "grad_clip": _Key(float, 10.0, _nonneg),
    "estimator": _Key(str, "reparam", _one_of("reparam", "path")),
    "path_after": _Key(int, None, _nonneg),
    "seed": _Key(int, 0, _nonneg),
    "minutes": _Key(float, None, _positive),
    "log_every": _Key(int, 10, _at_least(1)),
    "eval_every": _Key(int, 100, _at_least(1)),
    "eval_batch": _Key(int, 1024, _at_least(1)),
    "checkpoint_every": _Key(int, 200, _at_least(1)),
}


@dataclass(frozen=True)
class HMCConfig:
    """``[hmc]``: Hybrid Monte Carlo baseline."""

    integrator: str = "omelyan"
    trajectory_length: float = 1.0
    steps: int = 10
    target_acceptance: float = 0.8
    tune: bool = True
    thermalization: int = 200
    chains: int = 8
    force: str = "analytic"
    start: str = "hot"
    seed: int = 0
    block: int = 100


_HMC_KEYS = {
    "integrator": _Key(str, "omelyan", _one_of("leapfrog", "omelyan")),
    "trajectory_length": _Key(float, 1.0, _positive),
    "steps": _Key(int, 10, _at_least(1)),
    "target_acceptance": _Key(float, 0.8, _open_unit),
    "tune": _Key(bool, True),
    "thermalization": _Key(int, 200, _nonneg),
    "chains": _Key(int, 8, _at_least(1)),
    "force": _Key(str, "analytic", _one_of("analytic", "autograd")),
    "start": _Key(str, "hot", _one_of("hot", "cold")),
    "seed": _Key(int, 0, _nonneg),
    "block": _Key(int, 100, _at_least(1)),
}


@dataclass(frozen=True)
class SampleConfig:
    """``[sample]``: flow sampling (Metropolis independence chains or i.i.d. with weights)."""

    chains: int = 4
    batch_size: int = 1024
    seed: int = 0
    block: int = 1000
    configs: bool = True
    dtype: str = "float32"


_SAMPLE_KEYS = {
    "chains": _Key(int, 4, _at_least(1)),
    "batch_size": _Key(int, 1024, _at_least(1)),
    "seed": _Key(int, 0, _nonneg),
    "block": _Key(int, 1000, _at_least(1)),
    "configs": _Key(bool, True),
    "dtype": _Key(str, "float32", _one_of("float32", "float64")),
}


@dataclass(frozen=True)
class Config:
    """A whole model/study file.  ``text`` is the TOML source, echoed into every output."""

    theory: TheoryConfig
    flow: FlowConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    hmc: HMCConfig = field(default_factory=HMCConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    description: str = ""
    text: str = ""
    path: Path | None = None

    @property
    def name(self) -> str:
        """The file stem (``u1_L8_b2``), used to name run directories."""
        return self.path.stem if self.path else self.theory.name


_TOP_LEVEL = {"theory", "flow", "train", "hmc", "sample", "description"}


def parse_config(text: str, path: Path | None = None) -> Config:
    """Validate TOML text; raises :class:`ConfigError` naming the offending key."""
    where = f"{path}: " if path else ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}not valid TOML: {exc}") from None
    try:
        for key in data:
            if key not in _TOP_LEVEL:
                raise ConfigError(f"{key}: unknown section (allowed: {', '.join(sorted(_TOP_LEVEL))})")
        if "theory" not in data:
            raise ConfigError("theory: the [theory] table is required")
        theory = _theory(data["theory"])
        flow = _flow(data["flow"], theory) if "flow" in data else None
        train = TrainConfig(**_check_section("train", data.get("train", {}), _TRAIN_KEYS))
        hmc = HMCConfig(**_check_section("hmc", data.get("hmc", {}), _HMC_KEYS))
        sample = SampleConfig(**_check_section("sample", data.get("sample", {}), _SAMPLE_KEYS))
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ConfigError("description: expected str")
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return Config(theory, flow, train, hmc, sample, description, text, path)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return parse_config(path.read_text(), path)
