"""How plain NE-MCMC and stochastic normalizing flows scale with the volume at fixed N/L
(docs/nonequilibrium.md, "Scaling with the volume").

For each model file (default: ``models/snf_u1_L{8,16,32}_b8_N{1,2,4}.toml``: pure U(1) at
β = 8, a one-plaquette defect switched on in N = L/8 heat-bath sweeps, one trained map before
each sweep) it runs ``--transports`` transports with the trained maps and as many without
(the same protocol, exact starts and seeds; ``benchmarks/snf.py``'s ``transports``) and
records the acceptance (of independence chains over the works: the sampler's, its starts
being exact and independent), the ESS of e^{−W}, the dissipation ⟨W⟩ − ΔF, the seconds per
transport and the training seconds of the shipped weights (``--train-seconds``). The figure
puts beside them the plain NE-MCMC chains at N = 4L, ℓ = L/2 (``docs/nonequilibrium.json``)
and the independence flows at β = 6 (``docs/critical_slowing_down_L{8,16}.json``), whose
acceptance falls exponentially with V.

    OMP_NUM_THREADS=1 python benchmarks/snf_scaling.py --transports 2048 --json docs/snf_scaling.json
    python benchmarks/snf_scaling.py --replot docs/snf_scaling.json     # tables and figure only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

MODELS = [ROOT / "models" / f"snf_u1_L{L}_b8_N{N}.toml" for L, N in ((8, 1), (16, 2), (32, 4))]
FIGURE = ROOT / "docs" / "images" / "snf_scaling.png"


def measure(models: list[Path], n: int, batch: int, seed: int, train_seconds: list[float]) -> list[dict]:
    from snf import transports  # benchmarks/snf.py

    rows = []
    for model, seconds in zip(models, train_seconds):
        r = transports(model, model.with_suffix(".pt"), n, batch, seed)
        r |= {"model": str(model.relative_to(ROOT)), "train_seconds": seconds}
        rows.append(r)
        print(line(r), flush=True)
    return rows


def line(r: dict) -> str:
    p, s = r["plain"], r["snf"]
    return (f"L = {r['L']:>2}, N = {r['protocol_steps']}: acceptance {p['acceptance_estimate']:.3f} -> "
            f"{s['acceptance_estimate']:.3f}, ESS {p['ess']:.3f} -> {s['ess']:.3f}, <W> - dF {p['dissipation']:.2f} -> "
            f"{s['dissipation']:.2f}, ms/transport {1e3 * p['seconds_per_transport']:.2f} -> "
            f"{1e3 * s['seconds_per_transport']:.2f}")


def table(rows: list[dict]) -> str:
    out = ["| L | N | plain acceptance | SNF acceptance | ratio | ESS plain / SNF | ⟨W⟩ − ΔF plain / SNF "
           "| ms per transport plain / SNF | training s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, s = r["plain"], r["snf"]
        out.append(f"| {r['L']} | {r['protocol_steps']} | {p['acceptance_estimate']:.3f} | "
                   f"{s['acceptance_estimate']:.3f} | {s['acceptance_estimate'] / p['acceptance_estimate']:.2f} | "
                   f"{p['ess']:.3f} / {s['ess']:.3f} | {p['dissipation']:.2f} / {s['dissipation']:.2f} | "
                   f"{1e3 * p['seconds_per_transport']:.2f} / {1e3 * s['seconds_per_transport']:.2f} | "
                   f"{r['train_seconds']:.0f} |")
    return "\n".join(out)


def references() -> dict:
    """The comparison curves: plain NE-MCMC chains at N = 4L (docs/nonequilibrium.json) and
    the independence flow at β = 6 (docs/critical_slowing_down_L{8,16}.json)."""
    out = {"ne_mcmc_4L": [], "flow_mcmc_b6": []}
    ne = json.loads((ROOT / "docs" / "nonequilibrium.json").read_text())
    for r in ne["chains"]["results"]:
        out["ne_mcmc_4L"].append((r["L"], r["acceptance"]))
    for L in (8, 16):
        d = json.loads((ROOT / "docs" / f"critical_slowing_down_L{L}.json").read_text())
        out["flow_mcmc_b6"].append((L, d["results"]["6"]["flow-mcmc"]["acceptance"]))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = references()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    L = [r["L"] for r in rows]
    a.plot(L, [r["plain"]["acceptance_estimate"] for r in rows], "o-", label="plain NE-MCMC, N = L/8, ℓ = 1")
    a.plot(L, [r["snf"]["acceptance_estimate"] for r in rows], "s-", label="SNF, N = L/8, ℓ = 1")
    if ref["ne_mcmc_4L"]:
        x, y = zip(*ref["ne_mcmc_4L"])
        a.plot(x, y, "^--", label="plain NE-MCMC, N = 4L, ℓ = L/2 (chains)")
    x, y = zip(*ref["flow_mcmc_b6"])
    a.plot(x, y, "x:", color="k", label="independence flow (flow-mcmc), β = 6")
    a.set(xscale="log", yscale="log", xlabel="L", ylabel="acceptance", title="2D U(1), β = 8 (flows: β = 6)")
    a.set_xticks([8, 16, 32], ["8", "16", "32"])
    a.set_xticks([], minor=True)
    a.legend(fontsize=7)
    b.plot(L, [1e3 * r["plain"]["seconds_per_transport"] for r in rows], "o-", label="plain NE-MCMC")
    b.plot(L, [1e3 * r["snf"]["seconds_per_transport"] for r in rows], "s-", label="SNF")
    b.set(xscale="log", yscale="log", xlabel="L", ylabel="ms per transport (one thread)", title="cost, N = L/8")
    b.set_xticks([8, 16, 32], ["8", "16", "32"])
    b.set_xticks([], minor=True)
    b.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, nargs="+", default=MODELS)
    p.add_argument("--transports", type=int, default=2048, help="transports per sampler and model")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-seconds", type=float, nargs="+", default=None,
                   help="training seconds of each model's shipped weights (recorded, one per model)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--replot", type=Path, help="redraw the table and figure from this JSON; measure nothing")
    p.add_argument("--figure", type=Path, default=FIGURE)
    a = p.parse_args()
    if a.replot:
        rows = json.loads(a.replot.read_text())["rows"]
    else:
        seconds = a.train_seconds or [float("nan")] * len(a.models)
        if len(seconds) != len(a.models):
            p.error("--train-seconds: one value per model")
        rows = measure([m.resolve() for m in a.models], a.transports, a.batch, a.seed, seconds)
        if a.json:
            command = " ".join(["benchmarks/snf_scaling.py", *sys.argv[1:]])
            a.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1, default=float) + "\n")
    print(table(rows))
    plot(rows, a.figure)


if __name__ == "__main__":
    main()
