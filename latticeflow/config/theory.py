"""``[theory]``: which theory, on which lattice, at which couplings; and the checks of a
training's coupling schedule (``[train] anneal_from``), which need the theory's couplings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..schema import at_least, check_value, convert, key, one_of, render_table, validate
from ..theories import THEORIES, coupling_names, theory_class

__all__ = ["TheoryConfig", "anneal_problem"]


# --- [theory] -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    """The ``[theory]`` keys every theory has."""

    name: str = key(doc="the theory: " + ", ".join(f"`{n!r}`" for n in THEORIES))
    L: int | None = key(None, "extent in every direction (give `L` or `shape`)", at_least(2))
    shape: tuple[int, ...] | None = key(None, "explicit extents, e.g. `[8, 16]`")
    dim: int | None = key(None, "number of dimensions with `L` (default 2)", at_least(1))


@dataclass(frozen=True)
class TheoryConfig:
    """``[theory]``: which theory, on which lattice, at which couplings.

    The couplings read as attributes: ``cfg.theory.beta``.
    """

    name: str
    shape: tuple[int, ...]
    coupling_values: tuple[tuple[str, Any], ...] = ()

    @property
    def dim(self) -> int:
        return len(self.shape)

    def couplings(self) -> dict[str, Any]:
        return dict(self.coupling_values)

    def __getattr__(self, name):
        for k, v in self.__dict__.get("coupling_values", ()):
            if k == name:
                return v
        raise AttributeError(f"the {self.__dict__.get('name')} theory has no coupling {name!r}")

    def build(self):
        """The :class:`latticeflow.theories.Theory` this table describes."""
        return theory_class(self.name)(self.shape, **self.couplings())

    def toml_lines(self) -> list[str]:
        if len(set(self.shape)) == 1:
            geometry = {"L": self.shape[0], "dim": self.dim}
        else:
            geometry = {"shape": self.shape}
        return render_table({"name": self.name, **geometry, **self.couplings()})


def _theory(table, legacy: bool = False) -> TheoryConfig:
    """``legacy`` (a file latticeflow wrote): couplings it accepted then are not refused now."""
    if not isinstance(table, dict):
        raise ConfigError("theory: must be a table")
    if "name" not in table:
        raise ConfigError("theory.name: required key is missing")
    name = check_value("theory.name", convert("theory.name", table["name"], str), one_of(*THEORIES))
    cls = theory_class(name)
    mine = coupling_names(cls)
    for k in table:
        if k not in mine and any(k in coupling_names(c) for c in THEORIES.values()):
            raise ConfigError(f"theory.{k}: not a parameter of the {name} theory")
    g = validate("theory", table, _Geometry, ignore=tuple(mine))
    couplings = validate("theory", {k: table[k] for k in mine if k in table}, cls.couplings)
    if g["shape"] is not None:
        if g["L"] is not None:
            raise ConfigError("theory.shape: give either L or shape, not both")
        if not g["shape"] or any(n < 2 for n in g["shape"]):
            raise ConfigError(f"theory.shape: must be a list of integers >= 2 (got {list(g['shape'])!r})")
        shape = g["shape"]
        if g["dim"] is not None and g["dim"] != len(shape):
            raise ConfigError(f"theory.dim: {g['dim']} does not match shape {list(shape)}")
    else:
        if g["L"] is None:
            raise ConfigError("theory.L: required key is missing (or give shape)")
        shape = (g["L"],) * (g["dim"] or 2)
    problem = cls.geometry_problem(tuple(shape)) or (None if legacy else cls.couplings_problem(couplings))
    if problem:
        raise ConfigError(f"theory.{problem[0]}: {problem[1]}")
    return TheoryConfig(name, tuple(shape), tuple(couplings.items()))


def anneal_problem(theory: TheoryConfig, tc, steps: int | None = None) -> tuple[str, str] | None:
    """Why ``[train] anneal_from`` cannot schedule this theory's training: ``(key, reason)``
    naming the ``[train]`` key, or None (also without a schedule).  ``steps``: the length of
    the training about to start (``train.steps`` or ``--steps``), which must hold the whole
    schedule; None skips that check (a model file's ``steps`` may be overridden)."""
    cls = theory_class(theory.name)
    names = coupling_names(cls)
    if tc.anneal_from is None and tc.anneal_coupling in (type(tc).anneal_coupling, *names):
        return None
    if tc.anneal_coupling not in names:
        return "anneal_coupling", (f"the {theory.name} theory has no coupling {tc.anneal_coupling!r} "
                                   f"(it has {', '.join(names)})")
    start = {**theory.couplings(), tc.anneal_coupling: tc.anneal_from}
    try:
        start = validate("theory", start, cls.couplings)
    except ConfigError as exc:
        return "anneal_from", str(exc)
    problem = cls.couplings_problem(start)
    if problem:
        return "anneal_from", f"at the start of the schedule, {problem[1]}"
    if tc.anneal_steps == 0:
        return "anneal_steps", "must be >= 1 with anneal_from (0 steps would drop the schedule)"
    if steps is not None and tc.anneal_steps > steps:
        return "anneal_steps", (f"{tc.anneal_steps} is more than the {steps} steps of this training "
                                f"(train.steps or --steps): it would end before {tc.anneal_coupling} "
                                "reaches the model's value")
    return None


def _idle_anneal_key(table: dict, tc) -> tuple[str, str] | None:
    """A schedule key given without ``anneal_from``, where it would do nothing (a value equal
    to the default is what latticeflow's own effective configurations write)."""
    if tc.anneal_from is not None:
        return None
    for name in ("anneal_coupling", "anneal_steps"):
        if name in table and getattr(tc, name) != getattr(type(tc), name):
            return name, "has no effect without train.anneal_from (give the schedule's start, or remove it)"
    return None
