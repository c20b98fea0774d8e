"""Cost per independent sample, and a flow against the best classical sampler.

The cost of a sampler is measured on one observable (the theory's first headline
observable, e.g. Q for U(1) and the Schwinger model, χ₂ for φ⁴): seconds of generation per
independent sample,

    c = T_gen / N_eff,   N_eff = N / (2 τ_int)   (reweighting losses included for flow-iid),

from the ``compare`` table (Γ-method τ_int, ``generation_seconds`` of each file).  A chain
whose observable never changed (Γ-method error 0) has no measurable cost (``frozen``); one
shorter than 20 τ_int gives a lower bound of its cost (``lower_bound``).

A flow sampler with cost c_f, trained for T seconds, against the best classical sampler
(cost c_b, the lowest of the baselines measured in the same run):

- generation ratio c_f / c_b;
- with the training counted, for N = 10⁴ independent samples: (T + N c_f) / (N c_b);
- break-even ensemble size N* = T / (c_b − c_f) independent samples (``"never"`` when
  c_f ≥ c_b: the flow's generation alone is dearer); where T is unknown (shipped weights)
  the training that would still pay off at N, N (c_b − c_f), is given instead.
"""

from __future__ import annotations

import math

__all__ = ["INDEPENDENT", "cost_observable", "sample_costs", "against_best", "cost_markdown",
           "verdict_lines"]

#: the ensemble size (independent samples) at which the training is counted
INDEPENDENT = 10_000


def cost_observable(table: dict, headline) -> str | None:
    """The first of ``headline`` (names) that the table holds a result of, else None."""
    for name in headline:
        row = table["observables"].get(name)
        if row and any(isinstance(v, dict) and v.get("tau_int") is not None for k, v in row.items() if k != "exact"):
            return name
    return None


def sample_costs(table: dict, observable: str) -> dict[str, dict]:
    """Per ensemble label: ``seconds_per_config``, ``tau_int``, ``tau_int_error``,
    ``seconds_per_independent`` (None: unmeasured or frozen), ``lower_bound``, ``frozen``."""
    out = {}
    row = table["observables"].get(observable, {})
    for e in table["ensembles"]:
        r = row.get(e["label"])
        per_config = e["generation_seconds"] / e["n"] if e["n"] else None
        cost = {"seconds_per_config": per_config, "tau_int": None, "tau_int_error": None,
                "seconds_per_independent": None, "lower_bound": False, "frozen": False}
        if r and r.get("tau_int") is not None:
            frozen = not r.get("error")  # never changed: τ_int = 1/2 of constant data means nothing
            rate = r.get("n_eff_per_second")
            cost.update(tau_int=r["tau_int"], tau_int_error=r.get("tau_int_error"), frozen=frozen,
                        lower_bound=bool(r.get("too_short")),
                        seconds_per_independent=None if frozen or not rate else 1.0 / rate)
        out[e["label"]] = cost
    return out


def against_best(costs: dict[str, dict], flow: str, classical: list[str],
                 training_seconds: float | None, independent: int = INDEPENDENT) -> dict:
    """The flow ``flow`` (a label of ``costs``) against the cheapest of ``classical``.

    Returns ``{"best_classical", "best_seconds_per_independent", "flow_seconds_per_independent",
    "generation_ratio", "training_seconds", "independent", "ratio_with_training",
    "break_even_independent", "training_that_pays_off"}`` (None where unmeasured)."""
    measured = [k for k in classical if costs.get(k, {}).get("seconds_per_independent")]
    best = min(measured, key=lambda k: costs[k]["seconds_per_independent"], default=None)
    c_b = costs[best]["seconds_per_independent"] if best else None
    c_f = costs.get(flow, {}).get("seconds_per_independent")
    out = {"flow": flow, "best_classical": best, "best_seconds_per_independent": c_b,
           "flow_seconds_per_independent": c_f, "generation_ratio": None, "training_seconds": training_seconds,
           "independent": independent, "ratio_with_training": None, "break_even_independent": None,
           "training_that_pays_off": None,
           "lower_bound": bool(best and costs[best]["lower_bound"]) or bool(costs.get(flow, {}).get("lower_bound"))}
    if c_b is None or c_f is None:
        return out
    out["generation_ratio"] = c_f / c_b
    saving = c_b - c_f
    out["training_that_pays_off"] = max(0.0, independent * saving)
    if training_seconds is not None:
        out["ratio_with_training"] = (training_seconds + independent * c_f) / (independent * c_b)
        out["break_even_independent"] = training_seconds / saving if saving > 0 else "never"
    return out


def _num(x, spec=".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def cost_markdown(costs: dict[str, dict], observable: str, samplers: dict[str, str] | None = None,
                  classical: set[str] | frozenset = frozenset()) -> str:
    """A table of one row per ensemble: seconds per configuration, τ_int, seconds per
    independent sample and the ratio to the cheapest; ``samplers``: label → sampler name,
    ``classical``: the labels marked as classical baselines."""
    cheapest = min((c["seconds_per_independent"] for c in costs.values() if c["seconds_per_independent"]),
                   default=None)
    lines = [f"| ensemble | sampler | s per configuration | τ_int(`{observable}`) | s per independent sample "
             "| × cheapest |", "|---|---|---|---|---|---|"]
    for label, c in costs.items():
        name = (samplers or {}).get(label, label) + (" (classical)" if label in classical else "")
        if c["frozen"]:
            tau, cost, rel = "frozen", "– (never changed)", "–"
        else:
            bound = "≥ " if c["lower_bound"] else ""
            tau = "–" if c["tau_int"] is None else f"{bound}{c['tau_int']:.3g}"
            cost = "–" if c["seconds_per_independent"] is None else f"{bound}{c['seconds_per_independent']:.3g}"
            rel = ("–" if not (c["seconds_per_independent"] and cheapest)
                   else f"{bound}{c['seconds_per_independent'] / cheapest:.3g}")
        lines.append(f"| {label} | {name} | {_num(c['seconds_per_config'])} | {tau} | {cost} | {rel} |")
    if any(c["lower_bound"] for c in costs.values()):
        lines += ["", "≥: chains shorter than 20 τ_int; τ_int and the cost are lower bounds."]
    return "\n".join(lines)


def verdict_lines(v: dict, observable: str) -> list[str]:
    """Markdown bullet lines of :func:`against_best`."""
    best, flow, n = v["best_classical"], v["flow"], v["independent"]
    if best is None:
        return [f"- No classical sampler has a measured cost per independent `{observable}`."]
    lines = [f"- Best classical sampler: **{best}**, {v['best_seconds_per_independent']:.3g} s per "
             f"independent `{observable}` (lowest of the classical samplers of this run)."]
    if v["generation_ratio"] is None:
        return lines + [f"- **{flow}**: no measured cost per independent `{observable}` (too few data, or "
                        "its chains never changed it)."]
    g = v["generation_ratio"]
    lines.append(f"- **{flow}**: {v['flow_seconds_per_independent']:.3g} s per independent `{observable}` in "
                 f"generation, **{g:.3g}×** the best classical sampler's ({'cheaper' if g < 1 else 'dearer'}).")
    t = v["training_seconds"]
    if t is None:
        pay = v["training_that_pays_off"]
        lines.append(f"- Training time unknown (shipped weights): for {n} independent samples the flow "
                     + (f"wins if its training took less than {pay:.3g} s." if pay > 0
                        else "never wins, whatever its training took (its generation alone is dearer)."))
    else:
        b = v["break_even_independent"]
        lines.append(f"- With its {t:.3g} s of training, {n} independent samples cost **{v['ratio_with_training']:.3g}×** "
                     "the best classical sampler's; " + ("the training never pays off (generation alone is dearer)."
                                                         if b == "never" else
                                                         f"it pays off beyond {b:.3g} independent samples."))
    if v["lower_bound"]:
        lines.append("- (τ_int of a sampler above is from chains shorter than 20 τ_int: its cost is a lower bound.)")
    return lines
