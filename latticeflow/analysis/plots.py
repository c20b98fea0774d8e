"""PNG plots: ensembles (histories, histograms, Γ(t)/Γ(0), τ_int(W)) and training curves.

One figure per observable with four panels, every ensemble drawn in each:

- history of the first chain,
- histogram over all chains (with the exact mean as a line, where known),
- normalised autocorrelation ρ(t) = Γ(t)/Γ(0) with its error band (Wolff eq. E.11),
- τ_int(W) with the automatically chosen window marked.

Matplotlib runs on the Agg backend: no display needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .gamma import ShortChainWarning, gamma_method

__all__ = ["load_matplotlib", "plot_observable", "plot_comparison", "plot_training", "histogram_bins"]

_MAX_HISTORY = 5000  # points of history drawn per ensemble


def histogram_bins(values: np.ndarray):
    """Unit bins for integer data (Q), one bin around data that is constant up to round-off
    (χ_Q = Q²/V of chains frozen at one |Q|: 60 bins across a spread of 1e-17 cannot be
    drawn), else 60."""
    scale = max(float(np.abs(values).max()), 1.0)
    if np.allclose(values, np.round(values)) and np.ptp(values) < 60:
        return np.arange(values.min() - 0.5, values.max() + 1.5)
    if np.ptp(values) <= 1e-9 * scale:
        return values.mean() + 1e-3 * scale * np.array([-1.0, 1.0])
    return 60


def plot_observable(name: str, ensembles, labels, path, exact: float | None = None,
                    distribution: dict | None = None) -> Path:
    """Write the four-panel figure of ``name`` for the given ensembles to ``path``.

    ``distribution`` ({value: probability}, e.g. the exact P(Q)) is drawn over the histogram.
    """
    fig = _figure((11, 7.5))
    axes = fig.subplots(2, 2)
    (ax_hist, ax_dist), (ax_rho, ax_tau) = axes
    for i, (ens, label) in enumerate(zip(ensembles, labels)):
        colour = f"C{i}"
        data = ens.observable(name)  # (rows, chains)
        if data.size == 0:  # a file stopped before its first block: nothing to draw
            continue
        chain = data[:_MAX_HISTORY, 0]
        ax_hist.plot(np.arange(chain.size), chain, lw=0.6, color=colour, label=label,
                     alpha=0.85 if i == 0 else 0.65)
        values = data.ravel()
        bins = histogram_bins(values)
        weights = None
        if ens.reweighted:
            lw = ens.log_weight.ravel()
            weights = np.exp(lw - lw.max())
        ax_dist.hist(values, bins=bins, weights=weights, density=True, histtype="step",
                     color=colour, lw=1.4, label=label)
        try:
            with warnings.catch_warnings():  # a too-short chain is marked in the legend
                warnings.simplefilter("ignore", ShortChainWarning)
                r = gamma_method(np.ascontiguousarray(data.T))
        except ValueError:
            continue
        t = np.arange(r.rho.size)
        bound = "≥ " if r.too_short else ""
        ax_rho.plot(t, r.rho, color=colour, label=f"{label}: τ_int {bound or '= '}{r.tau_int:.3g}")
        ax_rho.fill_between(t, r.rho - r.rho_error, r.rho + r.rho_error, color=colour, alpha=0.2)
        ax_tau.plot(t, r.tau_int_of_w, color=colour, label=label)
        ax_tau.axvline(r.window, color=colour, ls="--", lw=0.8)
        ax_tau.errorbar([r.window], [r.tau_int], yerr=[r.tau_int_error], fmt="o", color=colour)
    if exact is not None:
        ax_dist.axvline(exact, color="k", ls=":", lw=1, label=f"exact mean {exact:.6g}")
    if distribution:
        keys = sorted(k for k, p in distribution.items() if p > 1e-4)
        ax_dist.plot(keys, [distribution[k] for k in keys], "k.", ms=7, label="exact")
    ax_hist.set(title=f"{name}: Monte Carlo history (chain 0)", xlabel="Monte Carlo time",
                ylabel=name)
    ax_dist.set(title="distribution (all chains)", xlabel=name, ylabel="density")
    ax_rho.set(title="normalised autocorrelation Γ(t)/Γ(0)", xlabel="t", ylabel="ρ(t)")
    ax_rho.axhline(0, color="k", lw=0.5)
    ax_tau.set(title="τ_int(W) (dashed: chosen window)", xlabel="W", ylabel="τ_int")
    for ax in axes.ravel():
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, path, dpi=110)
    return path


def load_matplotlib():
    """Import what the plots need (``(Figure, FigureCanvasAgg)``).  Commands that draw call
    it before their long work: an import cut short by Ctrl-C or SIGTERM leaves matplotlib
    half-initialised, and the figure of an interrupted training is drawn after the signal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _figure(size):
    """A figure drawn by the Agg canvas, without pyplot (no global state, and matplotlib is
    imported only by the commands that draw)."""
    figure, canvas = load_matplotlib()
    fig = figure(figsize=size)
    canvas(fig)
    return fig


def save_png(fig, path, dpi: int) -> None:
    """Write a figure under a temporary name, then rename it into place (a full disk is
    one line, and leaves no temporary file)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi), ".png")


def plot_comparison(ensembles, labels, out_dir, names, exact: dict | None = None,
                    distributions: dict | None = None) -> list[Path]:
    """One PNG per stored observable in ``names`` under ``out_dir``; returns the paths.

    ``distributions`` maps observable names to exact distributions ({value: probability}).
    """
    exact, distributions = exact or {}, distributions or {}
    stored = [n for n in names if all(n in e.observables for e in ensembles)]  # not derived ones
    return [plot_observable(n, ensembles, labels, Path(out_dir) / f"{n}.png", exact.get(n),
                            distributions.get(n)) for n in stored]


def plot_training(records: list[dict], out) -> None:
    """Loss, batch ESS and acceptance of training metrics records against step, as a PNG
    (written under a temporary name, then renamed)."""
    fig = _figure((7, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    for ax, key, label in zip(axes, ("loss", "ess", "acceptance"),
                              ("loss = KL − log Z", "batch ESS", "Metropolis acceptance")):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="." if key == "acceptance" else None, lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("symlog", linthresh=10)  # the first steps are orders of magnitude above the rest
    axes[1].set_ylim(0, 1.02)
    axes[2].set_ylim(0, 1.02)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    save_png(fig, out, dpi=90)
