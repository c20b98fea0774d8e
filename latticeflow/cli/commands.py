"""The subcommands of ``latticeflow``: each is ``cmd_<name>(args) -> int``.

They parse nothing (``cli/__init__.py`` does) and compute nothing: each calls the library
function of the same name in :mod:`latticeflow.pipeline` and prints what it returns
(``export``: :mod:`latticeflow.analysis.export` on the open ensemble).  User
errors raise :class:`LatticeflowError`; :func:`latticeflow.cli.main` prints them as one
line, exit 2.
"""

from __future__ import annotations

import json
import sys

from .. import pipeline

__all__ = ["cmd_exact", "cmd_train", "cmd_sample", "cmd_hmc", "cmd_analyze", "cmd_compare", "cmd_export"]


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True))


# --- exact --------------------------------------------------------------------------------
def cmd_exact(args) -> int:
    result = pipeline.exact(args.model)
    if args.json:
        _print_json(result)
        return 0
    theory, values = result["theory"], result["observables"]
    print(f"{theory['name']}(" + ", ".join(f"{k}={v}" for k, v in theory.items() if k != "name") + ")")
    if not values:
        print("no exact results are known for this theory and these parameters")
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"  {key:<{width}}  {value:.10g}")
    return 0


# --- analyze ------------------------------------------------------------------------------
def _format_summary(summary: dict) -> str:
    from ..analysis import format_value_error
    from ..analysis.summary import SHORT_CHAINS_NOTE

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
    lines.append(f"  {'observable':<20} {'mean':>18} {'tau_int ':>13} {'N_eff':>9} "
                 f"{'exact':>12} {'dev':>7}")
    for name, r in summary["observables"].items():
        if r["mean"] is None:
            lines.append(f"  {name:<20} {'(too few data)':>18}")
            continue
        mean = format_value_error(r["mean"], r["error"])
        tau = format_value_error(r["tau_int"], r["tau_int_error"]) + ("*" if r["too_short"] else " ")
        row = f"  {name:<20} {mean:>18} {tau:>13} {r['n_eff']:>9.0f}"
        if name in exact:
            dev = (r["mean"] - exact[name]) / r["error"] if r["error"] > 0 else float("nan")
            row += f" {exact[name]:>12.6g} {dev:>+6.1f}σ"
        lines.append(row)
    if "exp_minus_delta_h" in summary and summary["exp_minus_delta_h"]["mean"] is not None:
        r = summary["exp_minus_delta_h"]
        lines.append(f"  <exp(-dH)> = {format_value_error(r['mean'], r['error'])} (should be 1)")
    if summary.get("delta_f", {}).get("mean") is not None:
        r = summary["delta_f"]
        exact = "" if r["exact"] is None else f" (exact {r['exact']:.6g})"
        lines.append(f"  Delta F = -log<exp(-W)> = {format_value_error(r['mean'], r['error'])}{exact}")
    elif summary.get("delta_f", {}).get("why"):
        lines.append(f"  Delta F: {summary['delta_f']['why']}")
    if any(r["too_short"] for r in summary["observables"].values()):
        lines.append(f"  {SHORT_CHAINS_NOTE}")
    return "\n".join(lines)


def cmd_analyze(args) -> int:
    summaries = [pipeline.analyze(path) for path in args.files]
    if args.json:
        _print_json(summaries[0] if len(summaries) == 1 else {"ensembles": summaries})
    else:
        print("\n\n".join(_format_summary(s) for s in summaries))
    return 0


# --- hmc, sample ------------------------------------------------------------------------------
def _announce(result: dict, what: str) -> None:
    verb = "continued" if result["resumed"] else "wrote"
    print(f"{verb} {result['path']}: {result['n']} configurations ({what}, "
          f"{result['rows_added']} new rows in {result['seconds']:.1f} s)", file=sys.stderr)


def cmd_hmc(args) -> int:
    result = pipeline.hmc(args.config, args.n, args.out, args.chains, args.seed,
                          configs=not args.no_configs, progress=not args.quiet, device=args.device)
    _announce(result, "hmc")
    return 0


def cmd_sample(args) -> int:
    result = pipeline.sample(args.source, args.n, args.out, args.iid, args.chains, args.seed,
                             configs=not args.no_configs, progress=not args.quiet,
                             sampler=args.sampler, device=args.device, start=args.start)
    _announce(result, result["sampler"])
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if args.start is not None and result["resumed"]:
        print(f"note: --start {args.start} was not used: {result['path']} was continued from "
              "its own chains (--start starts the chains of a new file)", file=sys.stderr)
    return 0


# --- compare ----------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    from pathlib import Path

    labels = args.labels.split(",") if args.labels else None
    table, markdown, written = pipeline.compare(args.files, labels, args.out)
    if args.json:
        _print_json(table)
    else:
        print(markdown)
        if args.out:
            print(f"\nwrote {Path(args.out) / 'comparison.md'} and {len(written)} plots", file=sys.stderr)
    return 0


# --- export -----------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .. import ensemble
    from ..analysis.export import check_outputs, export_files
    from ..errors import LatticeflowError
    from ..files import check_input

    check_outputs(args.file, args.pyerrors, args.csv, args.npz)  # before the file is even read
    if args.name is not None and args.pyerrors is None:
        raise LatticeflowError("--name: names the pyerrors ensemble; give --pyerrors OUT.json.gz too")
    with ensemble.open(check_input(args.file, "latticeflow ensemble file")) as ens:
        written = export_files(ens, args.pyerrors, args.csv, args.npz, args.name)
    print(f"wrote {', '.join(map(str, written))}".replace("\n", "\\n"), file=sys.stderr)  # one line
    return 0


# --- train --------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from ..config import load_config
    from ..errors import LatticeflowError

    cfg = load_config(args.model)  # train() refuses a model without [flow] before writing anything
    if args.steps is not None and args.steps < 1:
        raise LatticeflowError(f"--steps: must be >= 1 (got {args.steps})")
    if args.resume and args.out is None:
        raise LatticeflowError("--resume: give the run directory to continue with --out DIR")
    result = pipeline.train(cfg, out=args.out, steps=args.steps, resume=args.resume,
                            progress=not args.quiet, device=args.device)
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
