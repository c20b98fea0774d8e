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
        print("latticeflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
