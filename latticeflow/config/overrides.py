"""Configurations from what a caller gives: a path or a :class:`Config`, and command-line
overrides checked like the TOML keys they replace (an error names the flag)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import LatticeflowError
from ..schema import check_value, convert, table_fields

if TYPE_CHECKING:
    from . import Config

__all__ = ["as_config", "as_path", "check_n", "override", "on_device"]


def as_config(config) -> "Config":
    """``config`` itself, or the model file it names, loaded and validated."""
    from . import Config, load_config

    if isinstance(config, Config):
        return config
    if not isinstance(config, (str, Path)):
        raise LatticeflowError(f"expected a model file path or a Config, got {type(config).__name__}")
    return load_config(config)


def as_path(value, what: str) -> Path:
    """``value`` as a path (``what`` names the argument in the error)."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise LatticeflowError(f"{what}: expected a file path, got {value!r}")
    return Path(value)


def check_n(n, minimum: int = 1) -> int:
    """``-n``: a whole number of configurations, at least ``minimum``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise LatticeflowError(f"-n: must be an integer >= {minimum} (got {n!r})")
    return n


def override(cfg, section: str, flag_names: dict[str, str] | None = None, **values) -> "Config":
    """``cfg`` with keys of ``[section]`` replaced (None: keep), each checked like the TOML
    key; an error names the command-line flag (``flag_names``) or the key."""
    table = getattr(cfg, section)
    fields = {f.name: f for f in table_fields(type(table))}
    changes = {}
    for key, value in values.items():
        if value is None:
            continue
        name = (flag_names or {}).get(key, f"{section}.{key}")
        changes[key] = check_value(name, convert(name, value, fields[key].type), fields[key].check)
    if not changes:
        return cfg
    return dataclasses.replace(cfg, **{section: dataclasses.replace(table, **changes)})


def on_device(cfg, device: str | None, sections=("train", "sample", "hmc")) -> "Config":
    """``cfg`` with ``device`` (``--device``) in each of ``sections`` (None: unchanged)."""
    for section in sections:
        cfg = override(cfg, section, {"device": "--device"}, device=device)
    return cfg
