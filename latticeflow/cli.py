"""The ``latticeflow`` command (also ``python -m latticeflow``).

Every subcommand is a function ``cmd_<name>(args) -> int``.  User errors
(:class:`LatticeflowError`) print one line on stderr and exit with code 2; ``--json``
output is exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import LatticeflowError

__all__ = ["main", "build_parser"]


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True))


# --- exact --------------------------------------------------------------------------------
def cmd_exact(args) -> int:
    from .config import load_config

    cfg = load_config(args.model)
    theory = cfg.theory.build()
    values = theory.exact()
    if args.json:
        _print_json({"theory": theory.params(), "observables": values})
        return 0
    print(f"{theory!r}")
    if not values:
        print("no exact results are known for this theory and these parameters")
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"  {key:<{width}}  {value:.10g}")
    return 0


# --- analyze ------------------------------------------------------------------------------
def _format_summary(summary: dict) -> str:
    from .analysis import format_value_error

    theory = summary["theory"]
    couplings = " ".join(f"{k}={v}" for k, v in theory.items() if k not in ("name", "shape"))
    shape = "x".join(map(str, theory["shape"]))
    lines = [f"{summary['path']}  ({summary['sampler']}; {theory['name']} {shape} {couplings})"]
    n, c = summary["n"], summary["n_chains"]
    head = f"  N = {n} ({c} chains x {n // max(c, 1)})"
    if summary["acceptance"] is not None:
        head += f", acceptance {summary['acceptance']:.3f}"
    if summary["ess"] is not None:
        head += f", ESS {summary['ess']:.3f}"
    head += f", generated in {summary['generation_seconds']:.1f} s"
    lines.append(head)
    exact = summary.get("exact", {})
    lines.append(f"  {'observable':<20} {'mean':>18} {'tau_int':>12} {'N_eff':>9} "
                 f"{'exact':>12} {'dev':>7}")
    for name, r in summary["observables"].items():
        if r["mean"] is None:
            lines.append(f"  {name:<20} {'(too few data)':>18}")
            continue
        mean = format_value_error(r["mean"], r["error"])
        tau = format_value_error(r["tau_int"], r["tau_int_error"])
        row = f"  {name:<20} {mean:>18} {tau:>12} {r['n_eff']:>9.0f}"
        if name in exact:
            dev = (r["mean"] - exact[name]) / r["error"] if r["error"] > 0 else float("nan")
            row += f" {exact[name]:>12.6g} {dev:>+6.1f}σ"
        lines.append(row)
    if "exp_minus_delta_h" in summary and summary["exp_minus_delta_h"]["mean"] is not None:
        r = summary["exp_minus_delta_h"]
        lines.append(f"  <exp(-dH)> = {format_value_error(r['mean'], r['error'])} (should be 1)")
    return "\n".join(lines)


def cmd_analyze(args) -> int:
    from . import ensemble
    from .analysis.summary import summarize
    from .theories import theory_from_params

    summaries = []
    for path in args.files:
        with ensemble.open(path) as ens:
            try:
                exact = theory_from_params(ens.theory).exact()
            except (ValueError, LatticeflowError):
                exact = {}
            summaries.append(summarize(ens, exact))
    if args.json:
        _print_json(summaries[0] if len(summaries) == 1 else {"ensembles": summaries})
    else:
        print("\n\n".join(_format_summary(s) for s in summaries))
    return 0


# --- hmc --------------------------------------------------------------------------------------
def _default_output(cfg, kind: str):
    from pathlib import Path

    return Path("runs") / f"{cfg.name}-{kind}.h5"


def _announce(result: dict, what: str) -> None:
    verb = "continued" if result["resumed"] else "wrote"
    print(f"{verb} {result['path']}: {result['n']} configurations ({what}, "
          f"{result['rows_added']} new rows in {result['seconds']:.1f} s)", file=sys.stderr)


def cmd_hmc(args) -> int:
    from .config import load_config
    from .mcmc.driver import run_ensemble
    from .mcmc.hmc import HMC
    from .mcmc.hmc_chains import HMCChains

    cfg = load_config(args.config)
    if args.n < 1:
        raise LatticeflowError(f"-n: must be >= 1 (got {args.n})")
    theory = cfg.theory.build()
    h = cfg.hmc
    chains = args.chains or h.chains
    seed = h.seed if args.seed is None else args.seed
    sampler = HMCChains(theory, HMC.from_config(theory, h), chains, h.thermalization, h.tune,
                        h.start, seed, store_configs=not args.no_configs,
                        progress=not args.quiet)
    out = args.out or _default_output(cfg, "hmc")
    result = run_ensemble(sampler, theory=theory, path=out, n=args.n, config_text=cfg.text,
                          seed=seed, block=h.block, store_configs=not args.no_configs,
                          progress=not args.quiet, desc="hmc")
    _announce(result, "hmc")
    return 0


# --- compare ----------------------------------------------------------------------------------
def _exact_distributions(params: dict) -> dict:
    """Exact distributions to draw over histograms: P(Q) for 2D U(1)."""
    if params.get("name") == "u1" and len(params["shape"]) == 2:
        from .theories.exact import u1_charge_distribution
        from math import prod

        return {"topological_charge": u1_charge_distribution(params["beta"], prod(params["shape"]))}
    return {}


def cmd_compare(args) -> int:
    from contextlib import ExitStack
    from pathlib import Path

    from . import ensemble
    from .analysis.compare import compare_ensembles, comparison_markdown
    from .analysis.plots import plot_comparison
    from .theories import theory_from_params

    if len(args.files) < 2:
        raise LatticeflowError("compare: give at least two ensemble files")
    with ExitStack() as stack:
        ensembles = [stack.enter_context(ensemble.open(p)) for p in args.files]
        theories = {json.dumps(e.theory, sort_keys=True) for e in ensembles}
        if len(theories) > 1:
            raise LatticeflowError("compare: the files hold different theories: "
                                   + " vs ".join(sorted(theories)))
        exact = theory_from_params(ensembles[0].theory).exact()
        labels = args.labels.split(",") if args.labels else None
        if labels is not None and len(labels) != len(ensembles):
            raise LatticeflowError(f"--labels: expected {len(ensembles)} comma-separated names")
        table = compare_ensembles(ensembles, exact, labels)
        markdown = comparison_markdown(table)
        written = []
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison.md").write_text(markdown + "\n")
            (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
            labels = [e["label"] for e in table["ensembles"]]
            written = plot_comparison(ensembles, labels, out, list(table["observables"]), exact,
                                      _exact_distributions(ensembles[0].theory))
    if args.json:
        _print_json(table)
    else:
        print(markdown)
        if args.out:
            print(f"\nwrote {Path(args.out) / 'comparison.md'} and {len(written)} plots", file=sys.stderr)
    return 0


# --- train --------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .config import load_config
    from .errors import LatticeflowError

    cfg = load_config(args.model)
    if cfg.flow is None:
        raise LatticeflowError(f"{args.model}: no [flow] table, so there is no flow to train")
    if args.steps is not None and args.steps < 1:
        raise LatticeflowError(f"--steps: must be >= 1 (got {args.steps})")
    if args.resume and args.out is None:
        raise LatticeflowError("--resume: give the run directory to continue with --out DIR")
    from .training import train

    result = train(cfg, out=args.out, steps=args.steps, resume=args.resume, progress=not args.quiet)
    summary = {"run_dir": str(result.run_dir), "step": result.step, "stopped": result.stopped,
               "metrics": result.metrics}
    if args.json:
        _print_json(summary)
        return 0
    m = result.metrics
    print(f"trained {cfg.name} to step {result.step} ({result.stopped}) in {result.run_dir}")
    for key in ("loss", "log_z_bound", "ess", "acceptance", "seconds"):
        if m.get(key) is not None:
            print(f"  {key:<12} {m[key]:.6g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latticeflow",
        description="Symmetry-respecting normalizing flows for lattice field theory.")
    parser.add_argument("--version", action="version", version=f"latticeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("exact", help="analytic reference values for a model's theory")
    p.add_argument("model", help="model or study TOML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_exact)

    p = sub.add_parser("train", help="train a model's flow by reverse KL")
    p.add_argument("model", help="model TOML with [theory], [flow] and optionally [train]")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<timestamp>/)")
    p.add_argument("--steps", type=int, metavar="N", help="planned total steps (overrides [train] steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("hmc", help="HMC ensemble for a model or study file (resumable)")
    p.add_argument("config", help="model or study TOML (uses its [theory] and [hmc] tables)")
    p.add_argument("-n", type=int, required=True, help="configurations the file should hold")
    p.add_argument("--out", help="HDF5 file (default runs/<name>-hmc.h5); an existing one is resumed")
    p.add_argument("--chains", type=int, help="override [hmc] chains (a new file only)")
    p.add_argument("--seed", type=int, help="override [hmc] seed")
    p.add_argument("--no-configs", action="store_true", help="store observables only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_hmc)

    p = sub.add_parser("analyze", help="means, errors and autocorrelation times of ensembles")
    p.add_argument("files", nargs="+", help="HDF5 ensemble files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("compare", help="side-by-side table and plots of several ensembles")
    p.add_argument("files", nargs="+", help="HDF5 ensemble files of the same theory")
    p.add_argument("--out", help="directory for comparison.md, comparison.json and PNG plots")
    p.add_argument("--labels", help="comma-separated names of the files (default: sampler names)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except LatticeflowError as exc:
        print(f"latticeflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latticeflow: interrupted (everything committed so far is kept)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `latticeflow analyze … | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
