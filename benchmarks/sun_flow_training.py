"""SU(N) flow training study: learning curves of `latticeflow train` runs and the quality of
their final weights (docs/sun_flow_training.md).

For each run directory: KL(q‖p) = loss + log Z (log Z exact, from the character expansion
on the torus, normalised Haar measure) and the Metropolis acceptance against wall time,
read from ``metrics.jsonl``; then the acceptance and ESS of 8192 fresh float32 proposals
(seed 123, log w in float64), as in models/README.md.  Writes one PNG with both curves.

Not part of CI.  Example (the commands behind the shipped models):
    OMP_NUM_THREADS=1 latticeflow train models/su2_L8_b2.toml --out runs/sun/su2
    OMP_NUM_THREADS=1 latticeflow train models/su3_L8_b4.toml --out runs/sun/su3
    python benchmarks/sun_flow_training.py runs/sun/su2 runs/sun/su3 --png docs/images/sun_flow_training.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latticeflow.config import load_config  # noqa: E402
from latticeflow.mcmc.independence import independence_acceptance  # noqa: E402
from latticeflow.theories import exact  # noqa: E402
from latticeflow.training import load_flow  # noqa: E402


def sun_log_z(beta: float, N: int, volume: int) -> float:
    """log Z = log Σ_λ (c_λ/d_λ)^V (normalised Haar measure); the coefficients come scaled
    by e^{−β}, which is put back."""
    coeffs = exact.sun_character_coefficients(beta, N)
    ratio = np.array([c / d for _, d, c, _ in coeffs])
    top = ratio.max()
    return float(volume * (beta + np.log(top)) + np.log(np.sum((ratio / top) ** volume)))


def final_quality(run: Path, n: int = 8192, seed: int = 123):
    cfg = load_config(run / "config.toml")
    theory = cfg.theory.build()
    flow = load_flow(run, cfg).float()
    with torch.no_grad():
        x, log_q = flow.sample(n, generator=torch.Generator().manual_seed(seed))
        log_w = -theory.action(x.to(torch.complex128)) - log_q.double()
    w = torch.exp(log_w - log_w.max())
    ess = float(w.sum() ** 2 / (n * (w**2).sum()))
    return independence_acceptance(log_w, rng=seed), ess, float(-log_q.double().mean() - theory.action(x.to(torch.complex128)).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_kl, ax_acc) = plt.subplots(1, 2, figsize=(10, 5))
    for run in args.runs:
        cfg = load_config(run / "config.toml")
        th = cfg.theory
        log_z = sun_log_z(th.beta, th.N, int(np.prod(th.shape)))
        rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
        label = f"SU({th.N}) β={th.beta:g}: {' + '.join(cfg.flow.loops)}"
        minutes = np.array([r["seconds"] for r in rows]) / 60
        ax_kl.plot(minutes, [r["loss"] + log_z for r in rows], label=label)
        evals = [(r["seconds"] / 60, r["acceptance"]) for r in rows if r.get("acceptance") is not None]
        if evals:
            ax_acc.plot(*zip(*evals), "o-", label=label)
        acc, ess, minus_loss = final_quality(run)
        print(f"{run}: {label}  log Z = {log_z:.4f}  steps = {rows[-1]['step']}  "
              f"minutes = {rows[-1]['seconds'] / 60:.1f}  final KL = {log_z - minus_loss:.3f}  "
              f"acceptance = {acc:.3f}  ESS = {ess:.3f}  (8192 proposals, seed 123)")
    ax_kl.set(xlabel="training time [min, one thread]", ylabel="KL(q‖p) = loss + log Z", yscale="log")
    ax_acc.set(xlabel="training time [min, one thread]", ylabel="Metropolis acceptance (1024 proposals)",
               ylim=(0, 1))
    for ax in (ax_kl, ax_acc):
        ax.grid(alpha=0.3)
    handles, labels = ax_kl.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, title="L = 8, conditioner inputs")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
