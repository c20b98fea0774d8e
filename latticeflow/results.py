"""Reading ensembles back: ``analyze``, ``compare`` and the theory's exact values.

``latticeflow.analyze``, ``compare`` and ``exact`` are these functions (re-exported by
:mod:`latticeflow.pipeline`); the ``latticeflow`` command prints what they return.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from . import ensemble
from .config.overrides import as_config, as_path
from .errors import LatticeflowError
from .files import check_writable

__all__ = ["reference_values", "exact", "analyze", "ensemble_theory", "compare", "write_comparison"]


def reference_values(theory) -> tuple[dict, list[str]]:
    """The theory's exact values that are finite, and the names of those that overflowed
    (e.g. Bessel sums at an extreme β); never a NaN passed on as a reference."""
    import math

    import numpy as np

    try:
        with np.errstate(all="ignore"):
            values = theory.exact()
    except MemoryError:
        return {}, ["all of them (they need more memory than this machine has)"]
    good = {k: v for k, v in values.items() if math.isfinite(v)}
    return good, sorted(set(values) - set(good))


def exact(config) -> dict:
    """``{"theory": params, "observables": {name: value}}``: analytic reference values."""
    theory = as_config(config).theory.build()
    values, bad = reference_values(theory)
    if bad:
        raise LatticeflowError(f"exact: {', '.join(bad)} cannot be computed at {theory!r} (the "
                               "couplings or the lattice are too extreme for the exact formulas)")
    return {"theory": theory.params(), "observables": values}


def analyze(path) -> dict:
    """The ``analyze --json`` object of one ensemble file (exact values included)."""
    import numpy as np

    from .analysis.summary import summarize

    with ensemble.open(as_path(path, "analyze")) as ens:
        theory = ensemble_theory(ens)
        for name, values in ens.observables.items():
            if not np.all(np.isfinite(values)):
                raise ensemble.EnsembleError(f"{path}: observables/{name} holds non-finite values "
                                             "in committed rows (the file is damaged)")
        for name in ("log_weight", "proposal_log_weight"):  # −inf is a NaN proposal; NaN, +inf never
            weights = ens.mcmc.get(name)
            if weights is not None and weights.size and (np.isnan(weights).any() or np.isposinf(weights).any()
                                                         or not np.isfinite(weights).any()):
                raise ensemble.EnsembleError(f"{path}: mcmc/{name} holds NaN or +inf, or no finite "
                                             "weight at all (the file is damaged)")
        return summarize(ens, reference_values(theory)[0], theory.derived_observables())


def ensemble_theory(ens):
    """The theory of an open ensemble; an EnsembleError if its metadata describe none."""
    from .errors import EnsembleError
    from .theories import theory_from_params

    try:
        return theory_from_params(ens.theory)
    except (ValueError, TypeError, KeyError, LatticeflowError) as exc:
        raise EnsembleError(f"{ens.path}: its theory attribute does not describe a known theory "
                            f"({exc})") from None


def compare(paths, labels: list[str] | None = None, out=None):
    """Side-by-side table of ensembles of one theory, and with ``out`` its files there:
    ``comparison.md``, ``comparison.json`` and one PNG per stored observable.

    Returns ``(table, markdown, figures)``.
    """

    if len(paths) < 2:
        raise LatticeflowError("compare: give at least two ensemble files")
    if labels is not None and len(labels) != len(paths):
        raise LatticeflowError(f"--labels: expected {len(paths)} comma-separated names")
    if out is not None:
        check_writable(out, directory=True)
    with ExitStack() as stack:
        ensembles = [stack.enter_context(ensemble.open(p)) for p in paths]
        return write_comparison(ensembles, labels, out)


def write_comparison(ensembles, labels=None, out=None):
    """:func:`compare` for open ensembles."""
    import json

    from .analysis.compare import compare_ensembles, comparison_markdown
    from .analysis.plots import plot_comparison
    from .files import atomic_write_text

    theories = {json.dumps(e.theory, sort_keys=True) for e in ensembles}
    if len(theories) > 1:
        raise LatticeflowError("compare: the files hold different theories: " + " vs ".join(sorted(theories)))
    theory = ensemble_theory(ensembles[0])
    reference = reference_values(theory)[0]
    table = compare_ensembles(ensembles, reference, labels, theory.derived_observables())
    markdown = comparison_markdown(table)
    figures = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", markdown + "\n")
        atomic_write_text(out / "comparison.json", json.dumps(table, indent=2) + "\n")
        figures = plot_comparison(ensembles, [e["label"] for e in table["ensembles"]], out,
                                  list(table["observables"]), reference, theory.exact_distributions())
    return table, markdown, figures
