"""`kvscale` command line: one module per subcommand, registered here.

Exit codes: 0 success, 2 bad input (one line naming the field and the fix), 1 other failure.
Only the module of the subcommand being run is imported, so `kvscale plan` does not pay for
kopf, the Kubernetes client or matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from functools import partial
from importlib.metadata import version
from typing import Any

from kvscale.cli.common import CliError

# subcommand name -> module kvscale.cli.<name>_cmd exposing `register(subparsers)` that sets `func`
SUBCOMMANDS: tuple[str, ...] = ("plan", "flags", "validate", "crd", "simulate", "demo", "run")
# Top-level modules of optional extras (pyproject) -> the extra that brings them. The operator
# image installs no extra, so the simulator's subcommands say what is missing instead of failing
# every command that lists them (`kvscale --help`, `kvscale --version`).
OPTIONAL_MODULES: dict[str, str] = {"numpy": "sim", "matplotlib": "sim"}


def _register(sub: Any, name: str) -> None:
    try:
        module = importlib.import_module(f"kvscale.cli.{name}_cmd")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in OPTIONAL_MODULES:
            raise
        extra = OPTIONAL_MODULES[missing]
        fix = f"needs {missing} from the {extra!r} extra; fix: pip install 'kvscale[{extra}]'"
        parser = sub.add_parser(name, help=f"(unavailable: {fix})", add_help=False)
        parser.set_defaults(func=partial(_unavailable, fix), any_arguments=True)
        return
    module.register(sub)


def _unavailable(fix: str, _args: argparse.Namespace) -> int:
    raise CliError(fix, exit_code=1)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or just `only` when it names one."""
    parser = argparse.ArgumentParser(
        prog="kvscale",
        description="KV-cache-aware capacity planning and autoscaling for LLM serving.",
    )
    # the installed distribution's version (pyproject.toml), as the image smoke test runs it
    parser.add_argument("--version", action="version", version=f"kvscale {version('kvscale')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS if only is None else (only,):
        _register(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    parser = build_parser(first if first in SUBCOMMANDS else None)
    args, unknown = parser.parse_known_args(args_list)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
