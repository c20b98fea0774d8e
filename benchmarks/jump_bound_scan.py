"""Where could a transport after an instanton jump pay?  The plain jump's acceptance against
the sectors' bound along κ (docs/flow_jumps.md, "Where a flow jump could pay").

A move that proposes Q → Q ± 1 symmetrically and obeys detailed balance is accepted at most
Σ_Q P(Q) ½ Σ_± min(1, P(Q ± 1)/P(Q)) of the time.  Where the plain jump (exact determinant)
reaches that bound, annealed or flow-assisted jumps (``annealed-jump``, ``flow-jump``) can
only add cost; where it falls well below, a transport could lift it.  For each κ this runs
``latticeflow sample`` with ``instanton-jump`` (even–odd pseudofermion HMC, one trajectory and
one exact-determinant jump per step; ``benchmarks/schwinger_l16.py``'s model), and reports the
jump's acceptance, the bound from the chain's charges, χ_Q, the pion's cosh effective mass at
t = L/2 − 1 (m_π L) and the seconds per configuration.

    OMP_NUM_THREADS=1 python benchmarks/jump_bound_scan.py --kappa 0.24 0.25 0.26 -n 800 --json docs/jump_bound_scan.json
    python benchmarks/jump_bound_scan.py --replot docs/jump_bound_scan.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


def scan(kappas: list[float], L: int, beta: float, n: int, chains: int, out: Path) -> list[dict]:
    import schwinger_l16 as study  # benchmarks/schwinger_l16.py: the model text, pion, sectors

    from latticeflow import ensemble, pipeline

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kappa in kappas:
        model, path = out / f"jump_k{kappa}.toml", out / f"jump_k{kappa}.h5"
        model.write_text(study.model_text("jump-pf", chains, 7, beta, kappa, L))
        pipeline.sample(model, n, out=path, configs=False, progress=False)
        with ensemble.open(path) as ens:
            acc, seconds = float(ens.mcmc["jump_acceptance"].mean()), ens.generation_seconds / ens.n
            q = np.round(ens.observable("topological_charge"))
            cg = float(ens.mcmc["cg_iterations"].mean()) if "cg_iterations" in ens.mcmc else None
        m = study.pion(path, L)
        row = {"kappa": kappa, "L": L, "beta": beta, "n": n, "jump_acceptance": acc,
               "sector_bound": study.sectors(path), "chi_Q": float((q ** 2).mean() / L ** 2),
               "P(Q=0)": float((q == 0).mean()), "m_eff": m["m_eff"][-1], "m_eff_error": m["m_eff_error"][-1],
               "m_pi_L_at_most": L * m["m_eff"][-1], "seconds_per_config": seconds, "cg_iterations": cg}
        rows.append(row)
        print(line(row), flush=True)
    return rows


def line(r: dict) -> str:
    return (f"kappa = {r['kappa']}: jump acceptance {r['jump_acceptance']:.3f}, sectors' bound {r['sector_bound']:.3f}, "
            f"chi_Q {r['chi_Q']:.5f}, P(Q=0) {r['P(Q=0)']:.2f}, m_eff(L/2-1) {r['m_eff']:.3f}({1e3 * r['m_eff_error']:.0f}) "
            f"-> m_pi L <= {r['m_pi_L_at_most']:.1f}, {1e3 * r['seconds_per_config']:.0f} ms/config")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kappa", type=float, nargs="+", default=[0.24, 0.25, 0.26])
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--beta", type=float, default=6.0)
    p.add_argument("-n", type=int, default=800, help="configurations per kappa")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "jump_bound_scan")
    p.add_argument("--json", type=Path)
    p.add_argument("--replot", type=Path, help="print the table from this JSON; sample nothing")
    a = p.parse_args()
    if a.replot:
        rows = json.loads(a.replot.read_text())["rows"]
        for r in rows:
            print(line(r))
        return
    rows = scan(a.kappa, a.L, a.beta, a.n, a.chains, a.out)
    if a.json:
        command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/jump_bound_scan.py", *sys.argv[1:]])
        a.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
