"""The Markdown report of a flow-vs-classical run (``latticeflow run``).

Built from the ``compare`` table and a few facts about the run; every number in it comes
from the HDF5 files beside it, and the commands to reproduce it are written at the end.
The section "Cost against the best classical sampler" names the classical sampler with the
lowest cost per independent sample and the flow's ratio to it (:mod:`.cost`).
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

from ..files import atomic_write_text
from .compare import comparison_markdown
from .cost import verdict_lines

__all__ = ["consistency", "agreement", "write_report"]


def consistency(table: dict, threshold: float = 4.0) -> dict[str, dict]:
    """For each ensemble: the largest |deviation| from an exact value (σ), and whether all
    deviations are below ``threshold``."""
    out = {}
    for e in table["ensembles"]:
        devs = {name: row[e["label"]]["deviation_sigma"]
                for name, row in table["observables"].items()
                if row.get("exact") is not None and row[e["label"]] is not None
                and row[e["label"]]["deviation_sigma"] is not None}
        worst = max(devs, key=lambda k: abs(devs[k]), default=None)
        out[e["label"]] = {"max_abs_deviation": abs(devs[worst]) if worst else None,
                           "worst": worst, "consistent": all(abs(d) < threshold for d in devs.values()),
                           "n_compared": len(devs)}
    return out


def agreement(table: dict, a: str, b: str, threshold: float = 4.0) -> dict:
    """Whether ensembles ``a`` and ``b`` agree: per observable (mean_a − mean_b)/√(σ_a² + σ_b²),
    the largest |pull|, and whether every |pull| is below ``threshold``.  What a run can
    check where no exact values exist (e.g. the Schwinger model at κ > 0)."""
    pulls = {}
    for name, row in table["observables"].items():
        ra, rb = row.get(a), row.get(b)
        if not ra or not rb or ra.get("error") is None or rb.get("error") is None:
            continue
        sigma = (ra["error"] ** 2 + rb["error"] ** 2) ** 0.5
        if sigma > 0:
            pulls[name] = (ra["mean"] - rb["mean"]) / sigma
    worst = max(pulls, key=lambda k: abs(pulls[k]), default=None)
    return {"pairs": [a, b], "n_compared": len(pulls), "worst": worst,
            "max_abs_pull": abs(pulls[worst]) if worst else None,
            "consistent": all(abs(v) < threshold for v in pulls.values()), "pulls": pulls}


def _speedup_lines(table: dict, flow: str, hmc: str) -> list[str]:
    lines = []
    for name in ("topological_charge", "chi_Q", "chiral_condensate", "plaquette", "chi2",
                 "abs_magnetization"):
        row = table["observables"].get(name)
        if not row or not row.get(flow) or not row.get(hmc):
            continue
        f, h = row[flow], row[hmc]
        ratio = h["tau_int"] / f["tau_int"]
        per_s = (f["n_eff_per_second"] / h["n_eff_per_second"]
                 if f["n_eff_per_second"] and h["n_eff_per_second"] else None)
        text = (f"- `{name}`: τ_int = {f['tau_int']:.3g} ± {f['tau_int_error']:.2g} (flow) vs "
                f"{h['tau_int']:.3g} ± {h['tau_int_error']:.2g} (HMC), ratio HMC/flow = {ratio:.3g}")
        if per_s is not None:
            text += f"; effective samples per second of generation, flow/HMC = {per_s:.3g}"
        lines.append(text)
    return lines


def write_report(path, *, title: str, theory: dict, description: str, table: dict,
                 figures: list[str], flow_info: dict, commands: list[str], seed: int,
                 flow_label: str = "flow-mcmc", hmc_label: str = "hmc", cost: dict | None = None) -> Path:
    """Write ``report.md``; ``figures`` are PNG names relative to the report's folder; ``cost``:
    the flow against the best classical sampler (``study._cost``: ``observable`` and the keys
    of :func:`~latticeflow.analysis.cost.against_best`)."""
    from .. import __version__

    checks = consistency(table)
    lines = [f"# {title}", ""]
    if description:
        lines += [description, ""]
    couplings = ", ".join(f"{k} = {v}" for k, v in theory.items() if k != "name")
    lines += [f"Theory: **{theory['name']}**, {couplings}.", ""]
    lines += ["## Flow", ""]
    for key, value in flow_info.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Results", "", comparison_markdown(table), ""]
    lines += ["Errors and τ_int from the Γ-method (S = 1.5, chains as replicas); "
              "N_eff/N = 1/(2τ_int); deviations are (mean − exact)/error.", ""]
    verdicts = []
    for label, c in checks.items():
        if c["n_compared"] == 0:
            continue
        state = "consistent with" if c["consistent"] else "NOT consistent with"
        verdicts.append(f"- **{label}** is {state} the exact values "
                        f"({c['n_compared']} observables, largest deviation "
                        f"{c['max_abs_deviation']:.1f}σ in `{c['worst']}`).")
    if verdicts:
        lines += ["### Exactness", ""] + verdicts + [""]
    pair = agreement(table, flow_label, hmc_label)
    if pair["n_compared"]:
        state = "agree" if pair["consistent"] else "do NOT agree"
        lines += ["### Agreement between the samplers", "",
                  f"- **{flow_label}** and **{hmc_label}** {state} within 4σ on {pair['n_compared']} "
                  f"observables (largest |mean difference| / combined error: "
                  f"{pair['max_abs_pull']:.1f} in `{pair['worst']}`).", ""]
    if cost:
        lines += ["### Cost against the best classical sampler", "",
                  f"Seconds of generation per independent `{cost['observable']}` (the table above); "
                  f"training counted for {cost['independent']} independent samples.", ""]
        lines += verdict_lines(cost, cost["observable"]) + [""]
    speedups = _speedup_lines(table, flow_label, hmc_label)
    if speedups:
        lines += ["### Autocorrelation", ""] + speedups + [""]
    if figures:
        lines += ["## Figures", ""]
        for fig in figures:
            lines += [f"![{Path(fig).stem}]({fig})", ""]
    lines += ["## Reproduce", "", "```bash"] + commands + ["```", ""]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines += [f"latticeflow {__version__}, Python {platform.python_version()}, seed {seed}, "
              f"written {now}.", ""]
    path = Path(path)
    atomic_write_text(path, "\n".join(lines))
    return path
