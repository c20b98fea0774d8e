"""TOML → validated, typed configuration objects, and back.

A model or study file has a ``[theory]`` table (docs/design.md §5) and optional ``[flow]``,
``[train]``, ``[hmc]`` and ``[sample]`` tables.  Every key is declared once, as a
:func:`latticeflow.schema.key` field: the tables below, each theory's ``couplings``
(``theories/``) and each flow architecture's options and bijection parameters
(``flows/``).  ``docs/config.md`` is generated from those declarations
(:func:`reference_markdown`, ``python -m latticeflow.config``).  Unknown keys, wrong types,
non-finite numbers and impossible values raise :class:`ConfigError` with a message that
names the key, e.g. ``theory.beta: must be > 0 (got -1.0)``.

``Config.text`` is the file as written; ``Config.toml`` is the *effective* configuration
rendered from the fields (defaults filled in, overrides applied), which is what every run
directory and ensemble records.

Example:
    >>> cfg = parse_config('[theory]\\nname = "u1"\\nL = 8\\nbeta = 2.0\\n')
    >>> cfg.theory.shape, cfg.hmc.integrator
    ((8, 8), 'omelyan')
"""

from __future__ import annotations

import sys
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ConfigError, LatticeflowError
from ..files import read_text
from ..flows.registry import FlowConfig, architecture
from ..schema import (Check, at_least, between, key, nonnegative, one_of, open_unit, positive,
                     render_table, render_value, seed_range, table_fields, validate)
from ..theories import theory_class
from ..devices import DEVICE_CHECK, DEVICE_DOC
from ..samplers.registry import sampler_kind, sampler_names
from .theory import TheoryConfig, _idle_anneal_key, _theory, anneal_problem

__all__ = ["Config", "TheoryConfig", "FlowConfig", "TrainConfig", "HMCConfig", "SampleConfig",
           "load_config", "parse_config", "reference_markdown", "anneal_problem", "with_options"]


# --- [flow] -------------------------------------------------------------------------------
def _flow(table, theory: TheoryConfig, legacy: bool) -> FlowConfig:
    if not isinstance(table, dict):
        raise ConfigError("flow: must be a table")
    common = [f.name for f in table_fields(FlowConfig)]
    values = validate("flow", table, FlowConfig, ignore=tuple(k for k in table if k not in common))
    params = {k: v for k, v in table.items() if k not in common}
    arch = architecture(theory.name)
    if legacy and isinstance(params.get("loops"), list):  # written before duplicates were refused
        params["loops"] = list(dict.fromkeys(params["loops"]))
    if legacy:  # files written by latticeflow 0.1.0 may carry keys of another bijection
        spec = arch.resolve(FlowConfig(**values), theory.shape)
        own = set(spec.values())
        params = {k: v for k, v in params.items() if k in own}
    spec = arch.resolve(FlowConfig(**values, params=params), theory.shape)
    return FlowConfig(**{k: v for k, v in spec.values().items() if k in common},
                      params=tuple((k, v) for k, v in spec.values().items() if k not in common))


# --- [train], [hmc], [sample] ---------------------------------------------------------------
class _Registered:
    """The check of ``[sample] sampler``: a name the sampler registry knows when it is read
    (``hmc`` is the ``latticeflow hmc`` baseline's)."""

    def fn(self, value) -> bool:
        return value in sampler_names()

    @property
    def doc(self) -> str:
        return "one of " + ", ".join(map(repr, sampler_names()))

    def problem(self, value) -> str | None:
        if self.fn(value):
            return None
        other = value in sampler_names(None) and sampler_kind(value).command
        return f"must be {self.doc}" + (f" ({value} ensembles are made by `latticeflow {other}`)" if other else "")


#: more molecular-dynamics steps than this per trajectory is always a mistake (and a hang)
md_steps = between(1, 100_000)
#: moves of one kernel in one step of the mixed kernel (a step is one stored row)
per_step = between(1, 100_000)
#: a file or directory name (an empty one would name the current directory)
a_path = Check(lambda v: bool(v.strip()), "a non-empty path")
#: proposals for one acceptance measurement during training (chunked, so only a time limit)
eval_proposals = between(2, 1 << 20)

def _option(table, name: str, section: str, whose: str):
    """A key of ``table.options`` (the keys a sampler or a theory declares) as an attribute."""
    for k, v in table.__dict__.get("options", ()):
        if k == name:
            return v
    raise AttributeError(f"{section} has no key {name!r} for {whose}")


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: reverse-KL training."""

    steps: int = key(2000, "optimiser steps", at_least(1))
    batch_size: int = key(256, "samples per step", at_least(1))
    lr: float = key(1e-3, "Adam learning rate", positive)
    schedule: str = key("cosine", "`constant` or `cosine` (decay to 0 over `steps`)",
                        one_of("constant", "cosine"))
    warmup: int = key(0, "linear warm-up steps", nonnegative)
    grad_clip: float = key(10.0, "gradient-norm clipping (0 disables)", nonnegative)
    estimator: str = key("reparam", "`reparam`, or `path` (path gradients, arXiv:2207.08219)",
                         one_of("reparam", "path"))
    objective: str = key("kl", "the loss: `kl` (reverse KL of the flow's samples), `work` (⟨W⟩ of the "
                               "transports of the `snf` sampler: a stochastic normalizing flow) or `jump-work` "
                               "(⟨W⟩ of the `flow-jump` sampler's moves)", one_of("kl", "work", "jump-work"))
    path_after: int | None = key(None, "two-phase training: `estimator` for the first N steps, "
                                       "`path` from step N on", nonnegative)
    seed: int = key(0, "RNG seed", seed_range)
    minutes: float | None = key(None, "wall-time budget; training stops cleanly when it is spent",
                                positive)
    log_every: int = key(10, "metrics written every this many steps", at_least(1))
    eval_every: int = key(100, "Metropolis acceptance measured every this many steps", at_least(1))
    eval_batch: int = key(1024, "proposals used for that measurement", eval_proposals)
    checkpoint_every: int = key(200, "checkpoint interval", at_least(1))
    anneal_from: float | None = key(None, "a schedule of the training target: `anneal_coupling` "
                                          "runs linearly from this value to the model's over the "
                                          "first `anneal_steps` steps (e.g. β from 4 to 6)")
    anneal_coupling: str = key("beta", "the coupling that `anneal_from` schedules")
    anneal_steps: int = key(1000, "length of that schedule in steps", nonnegative)
    init: str | None = key(None, "start from these weights (a `.pt` model file or a run directory) "
                                 "instead of fresh ones: the same architecture at another L or "
                                 "coupling (volume or β transfer); a relative path is looked up "
                                 "from the current directory, then beside the model file", a_path)
    device: str = key("cpu", DEVICE_DOC + "; a checkpoint resumes on any device", DEVICE_CHECK)


@dataclass(frozen=True)
class HMCConfig:
    """``[hmc]``: Hybrid Monte Carlo baseline."""

    integrator: str = key("omelyan", "`leapfrog` or `omelyan` (2nd-order minimum norm)",
                          one_of("leapfrog", "omelyan"))
    trajectory_length: float = key(1.0, "molecular-dynamics time per trajectory", positive)
    steps: int = key(10, "integration steps per trajectory (initial value if tuned)", md_steps)
    target_acceptance: float = key(0.8, "tuning target", open_unit)
    tune: bool = key(True, "tune the step size during thermalisation, then freeze it")
    thermalization: int = key(200, "trajectories discarded before storing", nonnegative)
    chains: int = key(8, "independent chains advanced as one batch", at_least(1))
    force: str = key("analytic", "`analytic` or `autograd`", one_of("analytic", "autograd"))
    start: str = key("hot", "`hot` (random) or `cold` (unit links / zero field)", one_of("hot", "cold"))
    seed: int = key(0, "RNG seed", seed_range)
    block: int = key(100, "trajectories per chain written per HDF5 block", at_least(1))
    device: str = key("cpu", DEVICE_DOC, DEVICE_CHECK)
    #: the theory's own molecular-dynamics keys (``Theory.md_options``), read as attributes
    options: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, name):
        return _option(self, name, "[hmc]", "this theory")


@dataclass(frozen=True)
class SampleConfig:
    """``[sample]``: exact sampling with the flow (docs/design.md §7 names the samplers)."""

    sampler: str = key("flow-mcmc", "a registered sampler (the table below): `flow-mcmc` "
                                     "(Metropolis independence with the flow) by default",
                       _Registered())
    hmc_per_step: int = key(1, "`mixed`: HMC trajectories per step", per_step)
    flow_per_step: int = key(1, "`mixed`: flow independence proposals per step", per_step)
    thermalization: int = key(100, "the Markov-chain samplers (`mixed`, `flow-hmc`, the classical "
                                   "ones): steps from the start before the first stored one (HMC "
                                   "tunes its step size there); `latticeflow sample` notes when the sampler does not use it",
                              nonnegative)
    chains: int = key(4, "independent chains", at_least(1))
    start: str = key("flow", "where a new file's chains start: `flow` (a flow sample; `mixed` and "
                             "`flow-hmc` thermalise from it) or an ensemble file holding "
                             "configurations of this lattice (e.g. an HMC run, so the chains start "
                             "in equilibrium): chain c starts from its chain c's last stored "
                             "configuration (β may differ); a relative path is looked up from the "
                             "current directory, then beside the model file; not for `flow-iid`",
                      a_path)
    batch_size: int = key(1024, "flow proposals drawn per batch", at_least(1))
    seed: int = key(0, "RNG seed", seed_range)
    block: int = key(1000, "rows written per HDF5 block", at_least(1))
    configs: bool = key(True, "store configurations (observables are always stored)")
    dtype: str = key("float32", "precision the flow runs in while sampling; the action, log w and "
                                "accept/reject are always float64 (see below)",
                     one_of("float32", "float64"))
    device: str = key("cpu", DEVICE_DOC + " (`mixed` and `flow-hmc` run their HMC there too)",
                      DEVICE_CHECK)
    #: the chosen sampler's own keys (its registered ``options``), read as attributes
    options: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, name):
        return _option(self, name, "[sample]", f"the {self.__dict__.get('sampler')} sampler")


def _sample(table, legacy: bool = False) -> SampleConfig:
    """``[sample]``: the keys every sampler has, then the chosen sampler's own (validated
    against its registered options, like a flow architecture's keys)."""
    if not isinstance(table, dict):
        raise ConfigError("sample: must be a table")
    common = [f.name for f in table_fields(SampleConfig)]
    values = validate("sample", table, SampleConfig, ignore=tuple(k for k in table if k not in common))
    return with_options(SampleConfig(**values), {k: v for k, v in table.items() if k not in common}, legacy)


def with_options(sample: SampleConfig, own: dict, legacy: bool = False) -> SampleConfig:
    """``sample`` with its sampler's options taken from ``own`` (defaults filled in); keys of
    no option of that sampler are refused, or dropped for files latticeflow wrote itself
    (``legacy``) and for a sampler chosen on the command line (``--sampler``)."""
    kind = sampler_kind(sample.sampler)
    options = _own_keys("sample", own, kind.options, f"the {kind.name} sampler", legacy)
    return dataclasses.replace(sample, options=tuple(options.items()))


def _hmc(table, theory: TheoryConfig, legacy: bool = False) -> HMCConfig:
    """``[hmc]``: the integrator's keys, then the theory's molecular-dynamics keys."""
    if not isinstance(table, dict):
        raise ConfigError("hmc: must be a table")
    common = [f.name for f in table_fields(HMCConfig)]
    values = validate("hmc", table, HMCConfig, ignore=tuple(k for k in table if k not in common))
    own = _own_keys("hmc", {k: v for k, v in table.items() if k not in common},
                    theory_class(theory.name).md_options, f"the {theory.name} theory's molecular dynamics",
                    legacy)
    return HMCConfig(**values, options=tuple(own.items()))


def _own_keys(section: str, own: dict, cls: type, whose: str, legacy: bool) -> dict:
    """``own`` validated against ``cls`` (a dataclass of keys: a sampler's options, a
    theory's molecular dynamics); other keys are refused, or dropped for files latticeflow
    wrote itself (``legacy``)."""
    names = [f.name for f in table_fields(cls)]
    if legacy:
        own = {k: v for k, v in own.items() if k in names}
    for k in own:
        if k not in names:
            mine = f"its own keys: {', '.join(names)}" if names else "it has no keys of its own"
            raise ConfigError(f"{section}.{k}: unknown key for {whose} ({mine})")
    return validate(section, own, cls)


_SECTIONS = {"train": TrainConfig, "hmc": HMCConfig, "sample": SampleConfig}


@dataclass(frozen=True)
class Config:
    """A whole model/study file.  ``text`` is the TOML source; ``toml`` the effective config."""

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

    @property
    def toml(self) -> str:
        """The effective configuration as TOML, derived from the fields (parses back to an
        equal ``Config``, up to ``text`` and ``path``)."""
        lines = [f"# effective configuration of {self.path or 'a model'} (defaults filled in)"]
        if self.description:
            lines.append(f"description = {render_value(self.description)}")
        lines += ["", "[theory]"] + self.theory.toml_lines()
        if self.flow is not None:
            spec = architecture(self.theory.name).resolve(self.flow)
            lines += ["", "[flow]"] + spec.toml_lines()
        for name in _SECTIONS:
            section = getattr(self, name)
            values = {f.name: getattr(section, f.name) for f in table_fields(type(section))}
            values |= dict(getattr(section, "options", ()))
            lines += ["", f"[{name}]"] + render_table(values)
        return "\n".join(lines) + "\n"


def parse_config(text: str, path: Path | None = None, legacy: bool = False) -> Config:
    """Validate TOML text; raises :class:`ConfigError` naming the offending key.

    ``legacy``: the text was written by latticeflow itself (a run directory, a checkpoint, a
    weights file); keys that belonged to another bijection, which latticeflow 0.1.0
    accepted and ignored, are dropped instead of refused.
    """
    where = f"{path}: " if path else ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}not valid TOML: {exc}") from None
    top = {"theory", "flow", "description", *_SECTIONS}
    try:
        for k in data:
            if k not in top:
                raise ConfigError(f"{k}: unknown section (allowed: {', '.join(sorted(top))})")
        if "theory" not in data:
            raise ConfigError("theory: the [theory] table is required")
        theory = _theory(data["theory"], legacy)
        flow = _flow(data["flow"], theory, legacy) if "flow" in data else None
        sections = {"train": TrainConfig(**validate("train", data.get("train", {}), TrainConfig)),
                    "hmc": _hmc(data.get("hmc", {}), theory, legacy),
                    "sample": _sample(data.get("sample", {}), legacy)}
        problem = None if legacy else (anneal_problem(theory, sections["train"])
                                       or _idle_anneal_key(data.get("train", {}), sections["train"]))
        if problem:
            raise ConfigError(f"train.{problem[0]}: {problem[1]}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ConfigError("description: expected str")
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return Config(theory, flow, description=description, text=text, path=path, **sections)


def load_config(path: str | Path, legacy: bool = False) -> Config:
    """Read and validate a TOML file (``legacy``: see :func:`parse_config`)."""
    path = Path(path)
    try:
        text = read_text(path, "TOML file")
    except LatticeflowError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(text, path, legacy)


def reference_markdown() -> str:
    """``docs/config.md``, generated from the key declarations."""
    from ..config_doc import reference

    return reference()

