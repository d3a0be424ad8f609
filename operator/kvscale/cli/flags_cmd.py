"""`kvscale flags`: plan one replica, then print the engine command line that realises the plan.

Takes the same inputs as `kvscale plan` (shared through `kvscale.cli.plan_cmd`), so a flag
line and the plan it came from can never disagree. Prints one shell-quoted line (or a JSON
list with `-o json`) on stdout; conversion warnings go to stderr, one per line.

    kvscale flags --model-config config.json --gpu h100 --tensor-parallel 1 \
        --engine vllm --engine-version 0.11.0 --max-model-len 8192 -- --enforce-eager
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from typing import Any

from kvscale.capacity.errors import InputError
from kvscale.cli.common import CliError, finite_float
from kvscale.engines import render


def register(subparsers: Any) -> None:
    try:
        from kvscale.cli.plan_cmd import add_plan_arguments
    except ModuleNotFoundError as exc:  # `plan` not built in this checkout: no `flags` either
        if exc.name != "kvscale.cli.plan_cmd":
            raise
        return
    parser = subparsers.add_parser(
        "flags",
        help="render serving-engine flags from a capacity plan",
        description="Plan KV capacity for one replica and print the engine command line "
        "(vLLM by version, SGLang, TGI, TensorRT-LLM) that makes the engine size its KV cache "
        "that way.",
    )
    add_plan_arguments(parser)
    parser.add_argument(
        "--model-ref",
        help="model id or path the engine loads (default: the model name from the config)",
    )
    parser.add_argument("--port", type=int, default=8000, help="serving port (default 8000)")
    parser.add_argument("--served-model-name", help="name clients use in requests")
    parser.add_argument(
        "--swap-space-gib",
        type=finite_float,
        help="vLLM --swap-space in GiB (rendered only for releases before 0.18, which had it)",
    )
    parser.add_argument(
        "--args-only",
        action="store_true",
        help="print only the flags (the container args), without program and model",
    )
    _add_output_option(parser)
    parser.add_argument(
        "extra_args",
        nargs="*",
        metavar="-- EXTRA",
        help="extra engine arguments after `--`, appended verbatim",
    )
    parser.set_defaults(func=run)


def _add_output_option(parser: argparse.ArgumentParser) -> None:
    """Add `-o/--output` unless the shared plan arguments already define it."""
    # If add_plan_arguments defined it, keep theirs: "json" means JSON, anything else text.
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(
            "-o", "--output", choices=("text", "json"), default="text", help="output format"
        )


def run(args: argparse.Namespace) -> int:
    from kvscale.capacity import plan_capacity
    from kvscale.cli.plan_cmd import check_fits, flag_of, plan_request_from_args

    try:
        request = plan_request_from_args(args)
        plan = plan_capacity(request)
        check_fits(plan, args)
        rendered = render(
            plan,
            model_ref=args.model_ref or request.model.name,
            port=args.port,
            extra_args=tuple(args.extra_args),
            served_model_name=args.served_model_name,
            swap_space_gib=args.swap_space_gib,
        )
    except InputError as exc:  # planner and renderer alike: the field in CLI terms
        raise CliError(f"{flag_of(exc.field)}: {exc.problem}; fix: {exc.fix}") from exc
    argv = rendered.argv if args.args_only else rendered.full_argv
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if getattr(args, "output", "text") == "json":
        print(json.dumps(list(argv)))
    else:
        print(shlex.join(argv))
    return 0
