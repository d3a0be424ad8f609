"""`kvscale` command line: one module per subcommand, registered here.

Exit codes: 0 success, 2 bad input (one line naming the field and the fix), 1 other failure,
141 when the reader of stdout went away (`kvscale plan … | head`), as a shell reports a writer
that SIGPIPE ended, without a traceback.
Only the module of the subcommand being run is imported, so `kvscale plan` does not pay for
kopf, the Kubernetes client or matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

from kvscale.cli.common import CliError

# subcommand name -> module kvscale.cli.<name>_cmd exposing `register(subparsers)` that sets `func`
SUBCOMMANDS: tuple[str, ...] = (
    "plan", "flags", "calibrate", "validate", "crd", "simulate", "demo", "run",
)  # fmt: skip
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE


#: Packages of the optional extra `sim` (the simulator): the operator installs without them.
SIM_EXTRA_PACKAGES = frozenset({"numpy", "matplotlib"})


def _needs_extra(name: str, missing: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        raise CliError(
            f"{name}: needs the simulator's dependencies ({missing} is not installed);"
            " fix: pip install 'kvscale[sim]'"
        )

    run.needs_extra = True  # type: ignore[attr-defined]
    return run


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
        try:
            module = importlib.import_module(f"kvscale.cli.{name}_cmd")
        except ModuleNotFoundError as exc:  # an operator image without the `sim` extra
            if exc.name not in SIM_EXTRA_PACKAGES:
                raise
            stub = sub.add_parser(name, help=f"(needs kvscale[sim]: {exc.name} is missing)")
            stub.set_defaults(func=_needs_extra(name, exc.name))
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    parser = build_parser(first if first in SUBCOMMANDS else None)
    args, unknown = parser.parse_known_args(args_list)
    func = getattr(args, "func", None)
    if unknown and not getattr(func, "needs_extra", False):  # a stub takes any arguments
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if func is None:
        parser.print_help()
        return 2
    try:
        code = int(func(args))
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return code
    except BrokenPipeError:
        # Nobody reads the rest: send what is still buffered nowhere so the interpreter's
        # final flush does not raise again, and exit as a writer ended by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except CliError as exc:
        print(f"kvscale {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
