"""Configuration keys declared once: type, default, check and meaning in one dataclass field.

A table of a model file (``[train]``, a theory's couplings, a bijection's parameters, …) is a
frozen dataclass whose fields are made with :func:`key`.  The annotation is the type, the
default is the default (none: required), ``check`` says which values are possible and
``doc`` what the key means.  From that one declaration:

- :func:`validate` checks a parsed TOML table and returns the values (one-line errors that
  name the key: ``train.lr: must be > 0 (got -1.0)``);
- :func:`render_table` writes the effective table back as TOML;
- :func:`markdown_table` writes the reference tables of ``docs/config.md``.

Types understood: ``int``, ``float`` (a TOML integer is accepted; inf and nan are refused
everywhere), ``bool``, ``str``, ``tuple[int, ...]`` and ``tuple[str, ...]`` (TOML arrays),
and ``X | None`` (unset by default; TOML cannot write None).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Table:
    ...     steps: int = key(10, "how many", at_least(1))
    >>> validate("t", {"steps": 0}, Table)
    Traceback (most recent call last):
    ...
    latticeflow.errors.ConfigError: t.steps: must be >= 1 (got 0)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["key", "Check", "at_least", "between", "positive", "nonnegative", "one_of", "open_unit",
           "odd_positive", "seed_range", "validate", "table_fields", "render_table", "render_value",
           "markdown_table"]


@dataclass(frozen=True)
class Check:
    """``fn(value) -> bool`` with the words for a failure (``must be > 0``) and for the docs."""

    fn: Callable[[Any], bool]
    doc: str

    def problem(self, value) -> str | None:
        return None if self.fn(value) else f"must be {self.doc}"


def at_least(n) -> Check:
    return Check(lambda v: v >= n, f">= {n}")


def between(low, high) -> Check:
    return Check(lambda v: low <= v <= high, f"between {low} and {high}")


positive = Check(lambda v: v > 0, "> 0")
nonnegative = Check(lambda v: v >= 0, ">= 0")
open_unit = Check(lambda v: 0 < v < 1, "in (0, 1)")
odd_positive = Check(lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1")


#: RNG seeds: what torch.Generator.manual_seed accepts
seed_range = Check(lambda v: 0 <= v < 2**63, "in [0, 2^63)")


def one_of(*choices) -> Check:
    return Check(lambda v: v in choices, "one of " + ", ".join(map(repr, choices)))


def key(default=dataclasses.MISSING, doc: str = "", check: Check | None = None):
    """A dataclass field that is a configuration key (see the module docstring)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "check": check})


@dataclass(frozen=True)
class Field:
    name: str
    type: Any
    default: Any
    doc: str
    check: Check | None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def table_fields(cls) -> list[Field]:
    """The keys of a table dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [Field(f.name, hints[f.name], f.default, f.metadata.get("doc", ""), f.metadata.get("check"))
            for f in dataclasses.fields(cls) if "doc" in f.metadata]


def _base(tp):
    """``X | None`` -> X."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None))
    return tp


def _type_name(tp) -> str:
    tp = _base(tp)
    if typing.get_origin(tp) is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def _is(value, tp) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def convert(name: str, value, tp):
    """Check ``value`` against the type ``tp``; returns it converted (float, tuple)."""
    tp = _base(tp)
    if typing.get_origin(tp) is tuple:
        element = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)) or not all(_is(v, element) for v in value):
            raise ConfigError(f"{name}: expected a list of {element.__name__}, got {value!r}")
        return tuple(value)
    if not _is(value, tp):
        raise ConfigError(f"{name}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if tp is int and not -2**62 < value < 2**62:
        raise ConfigError(f"{name}: {value} is out of range")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number (got {value!r})")
    return value


def check_value(name: str, value, check: Check | None):
    if check is not None:
        problem = check.problem(value)
        if problem:
            raise ConfigError(f"{name}: {problem} (got {_literal(value)})")
    return value


def _literal(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def validate(section: str, table, cls, *, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Values of the keys of ``cls`` from a TOML table (defaults filled in).

    Keys in ``ignore`` are left for the caller; any other key not in ``cls`` is an error.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: must be a table")
    fields = table_fields(cls)
    names = [f.name for f in fields]
    for k in table:
        if k not in names and k not in ignore:
            raise ConfigError(f"{section}.{k}: unknown key (allowed: {', '.join(names + list(ignore))})")
    out = {}
    for f in fields:
        name = f"{section}.{f.name}"
        if f.name not in table:
            if f.required:
                raise ConfigError(f"{name}: required key is missing")
            out[f.name] = f.default
            continue
        out[f.name] = check_value(name, convert(name, table[f.name], f.type), f.check)
    return out


def render_value(value) -> str:
    """A TOML literal for a config value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_table(values: dict[str, Any]) -> list[str]:
    """``key = value`` lines, skipping unset (None) values."""
    return [f"{k} = {render_value(v)}" for k, v in values.items() if v is not None]


def markdown_table(cls, default_text: dict[str, str] | None = None) -> list[str]:
    """The reference table of a table dataclass: key, type, default, meaning."""
    default_text = default_text or {}
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in table_fields(cls):
        kind = _type_name(f.type)
        if f.check:
            kind += (" " if f.check.doc[0] in "<>=" else ", ") + f.check.doc.replace(">=", "≥")
        if f.name in default_text:
            default = default_text[f.name]
        elif f.required:
            default = "required"
        elif f.default is None:
            default = "unset"
        else:
            default = f"`{render_value(f.default)}`"
        lines.append(f"| `{f.name}` | {kind} | {default} | {f.doc} |")
    return lines
