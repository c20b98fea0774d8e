"""The figures of the critical-slowing-down study (``critical_slowing_down.py``): τ_int(Q)
and the cost per independent Q against β, for the flow study (``figure``) and for every
baseline (``baseline_figure``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latticeflow.analysis.plots import save_png


def figure(results: dict, iq: int, path: Path, targets: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    L = next(iter(next(iter(results.values())).values())).get("L", 16)
    kinds = sorted({k for per in results.values() for k in per},
                   key=["hmc", "flow-mcmc", "mixed", "flow-hmc"].index)
    for kind in kinds:
        betas = [b for b in results if kind in results[b]]
        rs = [results[b][kind] for b in betas]
        taus = np.array([r["tau_Q"]["tau"] for r in rs])
        lower = np.array([r["tau_Q"]["lower_bound"] for r in rs])
        line, = axes[0].semilogy(betas, taus, "o-", label=kind)
        axes[0].scatter(np.array(betas)[lower], taus[lower], marker="^", s=90,
                        facecolors="none", edgecolors=line.get_color())
        total = [r[f"seconds_for_{iq}_independent_Q"] / iq for r in rs]
        gen = [r["seconds_per_independent_Q"] for r in rs]
        axes[1].semilogy(betas, total, "o-", color=line.get_color(),
                         label=kind if kind == "hmc" else f"{kind} (incl. training)")
        if kind != "hmc":
            axes[1].semilogy(betas, gen, "o:", color=line.get_color(), alpha=0.6,
                             label=f"{kind} (generation only)")
    if targets and "hmc" in results.get(int(targets["beta"]), {}):
        # the targets: HMC's value times the target ratio, at the target β
        hmc = results[int(targets["beta"])]["hmc"]
        goals = (hmc["tau_Q"]["tau"] * targets["tau_ratio"],
                 hmc[f"seconds_for_{iq}_independent_Q"] / iq * targets["cost_ratio"])
        for ax, goal, ratio in zip(axes, goals, (targets["tau_ratio"], targets["cost_ratio"])):
            ax.scatter([targets["beta"]], [goal], marker="*", s=220, color="black", zorder=5,
                       label=f"target: {ratio:.3g} × HMC")
    axes[0].set(xlabel="β", ylabel="τ_int(Q) [steps of the sampler]",
                title=f"U(1), L = {L}: autocorrelation of Q (△: lower bound)")
    axes[1].set(xlabel="β", ylabel="CPU seconds per independent Q",
                title=f"cost per independent Q, for {iq} of them")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, 130)
    plt.close(fig)


def baseline_figure(points: dict, path: Path, order, iq: int) -> None:
    """τ_int(Q) and seconds per independent Q against β for every sampler of ``points``
    (``csd_baselines``): lines at L = 16, squares at L = 32; open triangles: lower bounds;
    dotted: flow rows carried over from the committed flow study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = dict(zip(order, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for L, style in ((16, "o"), (32, "s")):
        at = {p["beta"]: p["results"] for p in points.values() if p["L"] == L}
        for kind in order:
            betas = sorted(b for b, res in at.items() if kind in res)
            if not betas:
                continue
            rs = [at[b][kind] for b in betas]
            carried = any("from_committed_run" in r for r in rs)
            label = f"{kind}{' (committed run)' if carried else ''}" if L == 16 else None
            for ax, values in ((axes[0], [r["tau_Q"]["tau"] for r in rs]),
                               (axes[1], [r["seconds_per_independent_Q"] for r in rs])):
                line = "" if L == 32 else ":" if carried else "-"
                ax.semilogy(betas, values, style + line, color=colours[kind], label=label,
                            markersize=7 if L == 32 else 5)
                lower = [r["tau_Q"]["lower_bound"] for r in rs]
                ax.scatter(np.array(betas)[lower], np.array(values)[lower], marker="^", s=110,
                           facecolors="none", edgecolors=colours[kind])
    axes[0].set(xlabel="β", ylabel="τ_int(Q) [steps of the sampler]",
                title="2D U(1): L = 16 (lines), L = 32 (squares); △ lower bound")
    axes[1].set(xlabel="β", ylabel="seconds per independent Q (generation)",
                title="cost per independent Q, generation only")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_png(fig, path, 130)
    plt.close(fig)
