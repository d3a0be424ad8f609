"""`kvscale` command line: one module per subcommand, registered here.

Exit codes: 0 success, 2 bad input (one line naming the field and the fix), 1 other failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kvscale.cli.common import CliError

# subcommand name -> module under kvscale.cli exposing `register(subparsers)` that sets `func`
_SUBCOMMANDS: tuple[str, ...] = ("plan", "flags", "validate", "crd", "simulate", "demo", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvscale",
        description="KV-cache-aware capacity planning and autoscaling for LLM serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"kvscale.cli.{name}_cmd")
        except ModuleNotFoundError as exc:  # subcommand not built yet in this checkout
            if exc.name != f"kvscale.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except CliError as exc:
        print(f"kvscale {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
