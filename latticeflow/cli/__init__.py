"""The ``latticeflow`` command (also ``python -m latticeflow``).

Subcommands live in :mod:`latticeflow.cli.commands` and :mod:`latticeflow.cli.run`.
User errors (:class:`LatticeflowError`) print one line on stderr and exit with code 2;
``--json`` output is exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import LatticeflowError
from ..interrupts import stop_on_signals
from ..samplers import sampler_names
from .commands import cmd_analyze, cmd_compare, cmd_exact, cmd_export, cmd_hmc, cmd_sample, cmd_train
from .run import cmd_run

__all__ = ["main", "build_parser"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _ensemble_arguments(p, table: str, out_help: str) -> None:
    """The arguments every ensemble-writing command has."""
    p.add_argument("-n", type=int, required=True, help="configurations the file should hold")
    p.add_argument("--out", help=out_help)
    p.add_argument("--chains", type=int, help=f"override [{table}] chains (a new file only)")
    p.add_argument("--seed", type=int, help=f"override [{table}] seed")
    p.add_argument("--no-configs", action="store_true", help="store observables only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _device_argument(p, f"[{table}] device")


def _device_argument(p, what: str) -> None:
    p.add_argument("--device", metavar="DEV", help=f"cpu, cuda, cuda:N or auto (overrides {what})")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="latticeflow",
        description="Symmetry-respecting normalizing flows for lattice field theory.")
    parser.add_argument("--version", action="version", version=f"latticeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("exact", help="analytic reference values for a model's theory")
    p.add_argument("model", help="model or study TOML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_exact)

    p = sub.add_parser("run", help="the whole pipeline: flow, flow-MCMC, HMC, comparison, report")
    p.add_argument("model", help="model TOML (weights beside it are used unless --train)")
    p.add_argument("-n", type=int, help="configurations per ensemble (default 20000)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<timestamp>/)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--train", action="store_true", help="train the flow even if weights are shipped")
    p.add_argument("--train-minutes", type=float, metavar="M", help="train for at most M minutes")
    p.add_argument("--baselines", metavar="LIST", help="classical samplers run besides HMC: all (default: every one that applies), none, or names, e.g. heatbath,instanton-jump")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _device_argument(p, "the device of [train], [sample] and [hmc]")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train a model's flow by reverse KL")
    p.add_argument("model", help="model TOML with [theory], [flow] and optionally [train]")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<timestamp>/)")
    p.add_argument("--steps", type=int, metavar="N", help="planned total steps (overrides [train] steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_argument(p, "[train] device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="exact ensemble with any registered sampler (a flow's, or a classical one)")
    p.add_argument("source", help="training run directory, or model TOML (with weights beside it for a flow sampler)")
    _ensemble_arguments(p, "sample", "HDF5 file (default: in the run directory, or "
                                     "runs/<name>-<sampler>.h5); an existing one is resumed")
    p.add_argument("--iid", action="store_true",
                   help="raw flow samples with log weights (for reweighting): --sampler flow-iid")
    p.add_argument("--sampler", metavar="KIND",
                   help=f"{', '.join(sampler_names())} (overrides [sample] sampler; the classical "
                        "ones need no flow)")
    p.add_argument("--start", metavar="ENSEMBLE",
                   help="start a new file's chains from the last configurations of this ensemble "
                        "(e.g. an HMC run; overrides [sample] start)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("hmc", help="HMC ensemble for a model or study file (resumable)")
    p.add_argument("config", help="model or study TOML (uses its [theory] and [hmc] tables)")
    _ensemble_arguments(p, "hmc", "HDF5 file (default runs/<name>-hmc.h5); an existing one is resumed")
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

    p = sub.add_parser("export", help="an ensemble for pyerrors, or as CSV or NumPy arrays, with its provenance")
    p.add_argument("file", help="HDF5 ensemble file")
    p.add_argument("--pyerrors", metavar="OUT.json.gz",
                   help="pyerrors' JSON: one Obs per observable, a replica per chain (reweighted for flow-iid)")
    p.add_argument("--csv", metavar="OUT.csv", help="one row per chain and Monte Carlo step")
    p.add_argument("--npz", metavar="OUT.npz", help="NumPy arrays (n_rows, n_chains) as in the HDF5 file")
    p.add_argument("--name", help="the pyerrors ensemble name (default: the file's stem)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with stop_on_signals():  # Ctrl-C and `kill` stop cleanly: committed work is kept
            return args.func(args)
    except LatticeflowError as exc:  # one line, even for a path with a newline in it
        print(f"latticeflow: error: {exc}".replace("\n", "\\n"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latticeflow: interrupted (everything committed so far is kept)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `latticeflow analyze … | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("latticeflow: error: not enough memory for this run (reduce the lattice, chains "
              "or batch size); everything committed so far is kept", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not the input: a vanished mount, an I/O error
        print(f"latticeflow: error: {exc.filename or ''}{': ' if exc.filename else ''}"
              f"{exc.strerror or exc}; everything committed so far is kept", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, and the traceback on request
        import os

        if os.environ.get("LATTICEFLOW_DEBUG"):
            raise
        print(f"latticeflow: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(a bug; please report it with LATTICEFLOW_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
