"""The sampler registry: every name of ``[sample] sampler``, ``--sampler`` and the ensemble's
``sampler`` attribute is a :class:`SamplerKind` registered here, declaring what the rest of
the package needs to know about it — nothing outside this module branches on a sampler's
name.

A sampler is one module: a chain sampler (the protocol of :mod:`latticeflow.mcmc.driver`)
and one :func:`register_sampler` call.  The built-in kinds are the modules beside this one;
other packages register theirs at import, or through the entry-point group
``latticeflow.samplers`` (a module imported the first time a name is looked up).

Example:
    >>> from latticeflow.samplers import sampler_kind
    >>> kind = sampler_kind("flow-iid")
    >>> kind.title, kind.weights.reweighted, kind.needs_flow
    ('reweighted flow samples', True, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from ..ensemble.format import Weighting
from ..errors import ConfigError

__all__ = ["SamplerKind", "SamplerContext", "NoOptions", "register_sampler", "unregister_sampler",
           "sampler_kind", "sampler_names", "sampler_from_flags", "baseline_names", "IID"]

#: the sampler ``--iid`` names
IID = "flow-iid"


@dataclass(frozen=True)
class NoOptions:
    """The options table of a sampler without keys of its own."""


@dataclass(frozen=True)
class SamplerContext:
    """What :attr:`SamplerKind.build` gets: the validated configuration, the theory, the
    flow (None for samplers that need none), and where and how to run."""

    cfg: Any
    theory: Any
    flow: Any = None
    store_configs: bool = True
    progress: bool = True
    device: Any = "cpu"
    start_fields: Any = None  #: fields that start fresh chains (``[sample] start``), or None


#: the common ``[sample]`` keys that only some samplers read (``SamplerKind.reads``)
OPTIONAL_KEYS = ("hmc_per_step", "flow_per_step", "thermalization")


@dataclass(frozen=True)
class SamplerKind:
    """One sampler, as the configuration, the ensemble files and the reports see it.

    Arguments:
        name: ``[sample] sampler`` value and the ensemble's ``sampler`` attribute.
        title: how reports name it (``"flow-MCMC"``).
        build: ``build(ctx: SamplerContext) -> chain sampler``.
        weights: how its rows are weighted (:class:`~latticeflow.ensemble.format.Weighting`:
            the ``mcmc/`` weight column, whether averages are reweighted); recorded in files.
        doc: one line for ``--help`` and the docs.
        options: a dataclass of :func:`latticeflow.schema.key` fields: the kind's own keys of
            ``[sample]``, validated like ``[flow]`` keys (``cfg.sample.<key>``).
        needs_flow: sampled with a trained flow (False: a classical sampler, which runs on a
            model file without weights).
        has_chains: its chains can start from given fields (``[sample] start``).
        flow_gradients: it differentiates through the flow (memory estimate).
        keeps: ``keeps(cfg, theory) -> {key: value}``: the settings a resume must not change
            (default: ``sample.seed``, ``sample.dtype`` and every option).
        command: the command that makes its files when that is not ``latticeflow sample``.
        reads: the optional common ``[sample]`` keys (:data:`OPTIONAL_KEYS`) its build reads;
            a value other than the default of one it does not read is an idle key, which
            ``latticeflow sample`` points out (None: it may read all of them).
        applies: ``applies(theory) -> str | None``: why it cannot sample ``theory`` (one
            line), or None where it can; its build refuses with the same line (one source of
            truth; None: it applies to every theory).
        baseline: a classical sampler that ``latticeflow run`` measures a flow against.
    """

    name: str
    title: str
    build: Callable[[SamplerContext], Any]
    weights: Weighting
    doc: str = ""
    options: type = NoOptions
    needs_flow: bool = True
    has_chains: bool = True
    flow_gradients: bool = False
    keeps: Callable | None = None
    command: str = "sample"
    reads: tuple[str, ...] | None = None
    applies: Callable[[Any], str | None] | None = None
    baseline: bool = False

    def problem(self, theory) -> str | None:
        """Why this kind cannot sample ``theory`` (one line), or None (:attr:`applies`)."""
        return None if self.applies is None else self.applies(theory)

    def idle_key_problem(self, sample) -> str | None:
        """One line naming the first optional common key of ``sample`` (a ``SampleConfig``)
        set to a value other than its default although this kind does not read it, else None."""
        if self.reads is None:
            return None
        defaults = {f.name: f.default for f in dataclasses.fields(sample)}
        idle = next((k for k in OPTIONAL_KEYS if k not in self.reads and getattr(sample, k) != defaults[k]), None)
        if idle is None:
            return None
        users = [k for k in sampler_names(None) if idle in (sampler_kind(k).reads or ())]
        return (f"sample.{idle} = {getattr(sample, idle)} was not used: the {self.name} sampler does not read it "
                f"(only {', '.join(users) or 'other samplers'} do)")

    def resume_keeps(self, cfg, theory) -> dict:
        if self.keeps is not None:
            return self.keeps(cfg, theory)
        own = {f"sample.{k}": v for k, v in cfg.sample.options}
        return {"sample.seed": cfg.sample.seed, "sample.dtype": cfg.sample.dtype} | own


_KINDS: dict[str, SamplerKind] = {}
_plugins_loaded = False


def register_sampler(kind: SamplerKind, replace: bool = False) -> SamplerKind:
    """Add ``kind`` (a ValueError if its name is taken, unless ``replace``)."""
    if not isinstance(kind, SamplerKind) or not kind.name or "/" in kind.name:
        raise ValueError(f"not a SamplerKind with a name: {kind!r}")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"a sampler named {kind.name!r} is registered already")
    if not dataclasses.is_dataclass(kind.options):
        raise ValueError(f"{kind.name}: options must be a dataclass of schema.key fields")
    _KINDS[kind.name] = kind
    return kind


def unregister_sampler(name: str) -> None:
    """Remove a registered kind (e.g. a test's own)."""
    _KINDS.pop(name, None)


def _load_plugins() -> None:
    """Import the modules of the entry-point group ``latticeflow.samplers`` once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group="latticeflow.samplers"):
        point.load()


def sampler_names(command: str | None = "sample") -> tuple[str, ...]:
    """The registered names (those made by ``command``; None: all)."""
    _load_plugins()
    return tuple(n for n, k in _KINDS.items() if command is None or k.command == command)


def sampler_kind(name: str, what: str = "sample.sampler") -> SamplerKind:
    """The kind registered as ``name``; a one-line ConfigError naming the known ones."""
    _load_plugins()
    kind = _KINDS.get(name)
    if kind is None:
        raise ConfigError(f"{what}: unknown sampler {name!r} (registered: {', '.join(sampler_names())})")
    return kind


def baseline_names(theory, command: str | None = None) -> tuple[str, ...]:
    """The classical baselines (``baseline=True``) that apply to ``theory``, in registry
    order (those made by ``command``; None: all)."""
    return tuple(n for n in sampler_names(command) if _KINDS[n].baseline and _KINDS[n].problem(theory) is None)


def sampler_from_flags(sampler: str | None, iid: bool) -> str | None:
    """``--sampler`` and ``--iid`` as one name (None: the config's); both, naming different
    samplers, are refused."""
    if iid and sampler not in (None, IID):
        raise ConfigError(f"--iid means --sampler {IID}, which conflicts with --sampler {sampler}: "
                          "give one of them")
    return IID if iid else sampler
