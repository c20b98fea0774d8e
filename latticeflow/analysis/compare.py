"""Side-by-side comparison of ensembles (e.g. flow-MCMC against HMC).

For every observable common to all files: mean ± error, τ_int ± error, N_eff per
configuration (N_eff/N = 1/(2τ_int), reweighting losses included for ``flow-iid``) and
per second of generation (N_eff / generation_seconds), and, where the theory has an
exact value, the deviation in units of the error.  Labels default to the sampler names.
Any number of files: a last table gives each one's cost per independent sample of the
theory's first headline observable (:mod:`.cost`: seconds per configuration, τ_int,
seconds / N_eff and the ratio to the cheapest file).
"""

from __future__ import annotations

import math

from .cost import cost_markdown, cost_observable, sample_costs
from .format import format_value_error
from .summary import SHORT_CHAINS_NOTE, acceptance_and_ess, observable_results, result_dict

__all__ = ["compare_ensembles", "comparison_markdown"]


def _labels(ensembles) -> list[str]:
    labels, seen = [], {}
    for ens in ensembles:
        base = ens.sampler
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return labels


def _headline(ensembles) -> tuple[str, ...]:
    """The headline observables of the files' theory (none if it is not registered)."""
    from ..errors import LatticeflowError
    from ..theories import theory_class

    try:
        return tuple(theory_class(ensembles[0].theory["name"]).headline_observables)
    except (LatticeflowError, KeyError, TypeError):  # a theory this installation does not know: no cost table
        return ()


def compare_ensembles(ensembles, exact: dict[str, float] | None = None,
                      labels: list[str] | None = None, derived: dict | None = None,
                      headline: tuple[str, ...] | None = None) -> dict:
    """The ``compare --json`` object; ``ensembles`` are open :class:`Ensemble` objects of one
    theory, ``derived`` its ``derived_observables()``; ``headline``: the observables whose
    first measured one gives ``cost`` (default: the theory's ``headline_observables``)."""
    labels = labels or _labels(ensembles)
    exact = exact or {}
    results = [observable_results(e, derived) for e in ensembles]
    common = [k for k in results[0] if all(k in r for r in results[1:])]
    table = {"ensembles": [], "observables": {}}
    for label, ens in zip(labels, ensembles):
        acceptance, ess_value = acceptance_and_ess(ens)
        table["ensembles"].append({
            "label": label, "path": str(ens.path), "sampler": ens.sampler, "n": int(ens.n),
            "n_chains": int(ens.n_chains), "acceptance": acceptance, "ess": ess_value,
            "generation_seconds": float(ens.generation_seconds),
            "seconds_per_config": float(ens.generation_seconds) / int(ens.n) if ens.n else None})
    for name in common:
        row = {"exact": exact.get(name)}
        for label, ens, res in zip(labels, ensembles, results):
            r = res[name]
            if r is None:
                row[label] = None
                continue
            seconds = float(ens.generation_seconds)
            dev = None
            if name in exact and r.error > 0:
                dev = (r.mean - exact[name]) / r.error
            row[label] = result_dict(r) | {
                "n_eff_per_config": r.n_eff / r.n if r.n else None,
                "n_eff_per_second": r.n_eff / seconds if seconds > 0 else None,
                "seconds_per_independent": seconds / r.n_eff if r.n_eff and seconds > 0 else None,
                "deviation_sigma": dev}
        table["observables"][name] = row
    observable = cost_observable(table, _headline(ensembles) if headline is None else headline)
    table["cost"] = None if observable is None else {"observable": observable,
                                                     "ensembles": sample_costs(table, observable)}
    return table


def _fmt(x, spec=".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def comparison_markdown(table: dict) -> str:
    """Markdown tables: one row per ensemble, then one row per (observable, ensemble)."""
    lines = ["| ensemble | sampler | N | chains | acceptance | ESS | generation time (s) |",
             "|---|---|---|---|---|---|---|"]
    for e in table["ensembles"]:
        lines.append(f"| {e['label']} | {e['sampler']} | {e['n']} | {e['n_chains']} | "
                     f"{_fmt(e['acceptance'], '.3f')} | {_fmt(e['ess'], '.3f')} | "
                     f"{_fmt(e['generation_seconds'], '.1f')} |")
    lines += ["", "| observable | ensemble | mean | τ_int | N_eff/N | N_eff/s | exact | deviation |",
              "|---|---|---|---|---|---|---|---|"]
    labels = [e["label"] for e in table["ensembles"]]
    for name, row in table["observables"].items():
        for label in labels:
            r = row[label]
            if r is None:
                lines.append(f"| {name} | {label} | (too few data) | | | | | |")
                continue
            dev = "–" if r["deviation_sigma"] is None else f"{r['deviation_sigma']:+.1f}σ"
            lines.append(
                f"| {name} | {label} | {format_value_error(r['mean'], r['error'])} | "
                f"{format_value_error(r['tau_int'], r['tau_int_error'])}{' *' if r['too_short'] else ''} | "
                f"{_fmt(r['n_eff_per_config'])} | {_fmt(r['n_eff_per_second'])} | "
                f"{_fmt(row['exact'], '.6g')} | {dev} |")
    if any(r and r["too_short"] for row in table["observables"].values() for r in
           (row[label] for label in labels)):
        lines += ["", SHORT_CHAINS_NOTE]
    cost = table.get("cost")
    if cost:
        samplers = {e["label"]: e["sampler"] for e in table["ensembles"]}
        lines += ["", f"Cost per independent `{cost['observable']}` (seconds of generation / N_eff):", "",
                  cost_markdown(cost["ensembles"], cost["observable"], samplers)]
    return "\n".join(lines)
