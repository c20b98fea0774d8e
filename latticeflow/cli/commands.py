"""The subcommands of ``latticeflow``: each is ``cmd_<name>(args) -> int``.

They wire the library together (config → theory → flow / sampler → ensemble → analysis);
nothing below the CLI imports across those layers.  User errors raise
:class:`LatticeflowError`; :func:`latticeflow.cli.main` prints them as one line, exit 2.
"""

from __future__ import annotations

import json
import sys

from ..errors import LatticeflowError

__all__ = ["cmd_exact", "cmd_train", "cmd_sample", "cmd_hmc", "cmd_analyze", "cmd_compare",
           "sample", "hmc", "analyze", "load_model", "flow_proposal"]


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True))


# --- exact --------------------------------------------------------------------------------
def cmd_exact(args) -> int:
    from ..config import load_config

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
    from ..analysis import format_value_error

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


def analyze(path) -> dict:
    """The ``analyze --json`` object of one ensemble file (exact values included)."""
    from .. import ensemble
    from ..analysis.summary import summarize
    from ..theories import theory_from_params

    with ensemble.open(path) as ens:
        try:
            exact = theory_from_params(ens.theory).exact()
        except (ValueError, LatticeflowError):
            exact = {}
        return summarize(ens, exact)


def cmd_analyze(args) -> int:
    summaries = [analyze(path) for path in args.files]
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


def hmc(config, n: int, out=None, chains: int | None = None, seed: int | None = None,
        configs: bool = True, progress: bool = True) -> dict:
    """Generate (or continue) an HMC ensemble file for a model/study; returns the run summary.

    Arguments:
        config: a TOML path or :class:`~latticeflow.config.Config` (``[theory]``, ``[hmc]``).
        n: configurations the file should hold (resumes an existing ``out``).
        out: HDF5 path (default ``runs/<name>-hmc.h5``).
        chains, seed: override ``[hmc] chains`` / ``seed``.
        configs: store the fields (observables are always stored).
    """
    from ..config import Config, load_config
    from ..mcmc.driver import run_ensemble
    from ..mcmc.hmc import HMC
    from ..mcmc.hmc_chains import HMCChains

    cfg = config if isinstance(config, Config) else load_config(config)
    if n < 1:
        raise LatticeflowError(f"-n: must be >= 1 (got {n})")
    theory = cfg.theory.build()
    h = cfg.hmc
    seed = h.seed if seed is None else seed
    sampler = HMCChains(theory, HMC.from_config(theory, h), chains or h.chains, h.thermalization,
                        h.tune, h.start, seed, store_configs=configs, progress=progress)
    return run_ensemble(sampler, theory=theory, path=out or _default_output(cfg, "hmc"), n=n,
                        config_text=cfg.text, seed=seed, block=h.block, store_configs=configs,
                        progress=progress, desc="hmc")


def cmd_hmc(args) -> int:
    result = hmc(args.config, args.n, args.out, args.chains, args.seed,
                 configs=not args.no_configs, progress=not args.quiet)
    _announce(result, "hmc")
    return 0


# --- sample -----------------------------------------------------------------------------------
def load_model(source):
    """``(config, flow)`` from a run directory or a model TOML with weights beside it (``.pt``)."""
    from pathlib import Path

    from ..config import load_config

    source = Path(source)
    if source.is_dir():
        if not (source / "config.toml").is_file():
            raise LatticeflowError(f"{source}: not a training run directory (no config.toml)")
        cfg = load_config(source / "config.toml", legacy=True)
        weights = source
    elif source.suffix == ".toml":
        cfg = load_config(source)
        weights = source.with_suffix(".pt")
        if not weights.is_file():
            raise LatticeflowError(f"{source}: no shipped weights {weights.name} beside it "
                                   f"(train them: latticeflow train {source})")
    else:
        raise LatticeflowError(f"{source}: expected a run directory or a model .toml file")
    if cfg.flow is None:
        raise LatticeflowError(f"{cfg.path}: no [flow] table, so there is no flow to sample")
    from ..training import load_flow

    return cfg, load_flow(weights, cfg)


def flow_proposal(flow, dtype: str = "float32"):
    """``propose(n, generator) -> (x, log_q)`` with the flow run in ``dtype``.

    The caller casts x and log q to float64 before computing S and log w (docs/config.md).
    """
    import torch

    flow = flow.to(getattr(torch, dtype)).eval()

    def propose(n, generator):
        with torch.no_grad():
            return flow.sample(n, generator=generator)

    return propose


def sample(source, n: int, out=None, iid: bool = False, chains: int | None = None,
           seed: int | None = None, configs: bool = True, progress: bool = True) -> dict:
    """Exact ensemble from a trained flow: Metropolis independence chains, or (``iid``) raw
    samples with log weights for reweighting.  Returns the run summary.

    Arguments:
        source: a training run directory, or a model TOML with its weights beside it.
        n: configurations the file should hold (resumes an existing ``out``).
        out: HDF5 path (default: in the run directory, or ``runs/<name>-<sampler>.h5``).
        chains, seed: override ``[sample] chains`` / ``seed``.
        configs: store the fields (observables are always stored).
    """
    from pathlib import Path

    from ..mcmc.driver import run_ensemble
    from ..mcmc.flow_samplers import IIDWithWeights, IndependenceMetropolis

    if n < 1:
        raise LatticeflowError(f"-n: must be >= 1 (got {n})")
    cfg, flow = load_model(source)
    theory = cfg.theory.build()
    s = cfg.sample
    seed = s.seed if seed is None else seed
    kind = IIDWithWeights if iid else IndependenceMetropolis
    store = s.configs and configs
    sampler = kind(theory, flow_proposal(flow, s.dtype), n_chains=chains or s.chains,
                   batch_size=s.batch_size, seed=seed, store_configs=store)
    if out is None:
        out = (Path(source) / f"{sampler.sampler}.h5" if Path(source).is_dir()
               else _default_output(cfg, sampler.sampler))
    return run_ensemble(sampler, theory=theory, path=out, n=n, config_text=cfg.text, seed=seed,
                        block=s.block, store_configs=store, progress=progress,
                        desc=sampler.sampler)


def cmd_sample(args) -> int:
    result = sample(args.source, args.n, args.out, args.iid, args.chains, args.seed,
                    configs=not args.no_configs, progress=not args.quiet)
    _announce(result, "flow-iid" if args.iid else "flow-mcmc")
    return 0


# --- compare ----------------------------------------------------------------------------------
def write_comparison(ensembles, labels, exact: dict, out=None):
    """The comparison table of open ensembles, and with ``out`` its files there:
    ``comparison.md``, ``comparison.json`` and one PNG per stored observable.

    Returns ``(table, markdown, figures)``.
    """
    from pathlib import Path

    from ..analysis.compare import compare_ensembles, comparison_markdown
    from ..analysis.plots import plot_comparison
    from ..theories import theory_from_params

    table = compare_ensembles(ensembles, exact, labels)
    markdown = comparison_markdown(table)
    figures = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(markdown + "\n")
        (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
        figures = plot_comparison(ensembles, [e["label"] for e in table["ensembles"]], out,
                                  list(table["observables"]), exact,
                                  theory_from_params(ensembles[0].theory).exact_distributions())
    return table, markdown, figures


def cmd_compare(args) -> int:
    from contextlib import ExitStack
    from pathlib import Path

    from .. import ensemble
    from ..theories import theory_from_params

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
        table, markdown, written = write_comparison(ensembles, labels, exact, args.out)
    if args.json:
        _print_json(table)
    else:
        print(markdown)
        if args.out:
            print(f"\nwrote {Path(args.out) / 'comparison.md'} and {len(written)} plots", file=sys.stderr)
    return 0


# --- train --------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from ..config import load_config

    cfg = load_config(args.model)  # train() refuses a model without [flow] before writing anything
    if args.steps is not None and args.steps < 1:
        raise LatticeflowError(f"--steps: must be >= 1 (got {args.steps})")
    if args.resume and args.out is None:
        raise LatticeflowError("--resume: give the run directory to continue with --out DIR")
    from ..training import train

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
