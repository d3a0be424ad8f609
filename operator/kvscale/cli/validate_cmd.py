"""`kvscale validate -f FILE`: schema, cross-field and capacity checks of LLMDeployments, offline.

Exit 0 when every LLMDeployment in the file is valid (one summary line per GPU type), 2 when
any is invalid (one line per problem naming the field and the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kvscale.api.status import GpuPlanStatus
from kvscale.cli.common import CliError

if TYPE_CHECKING:
    from kvscale.api.validation import DocumentResult


def format_plan_line(plan: GpuPlanStatus, selected: bool) -> str:
    """One GPU type's plan in one line (the selected one is starred)."""
    price = f"${plan.usd_per_hour:.2f}/h" if plan.usd_per_hour is not None else "no price"
    head = f"{'*' if selected else ' '} {plan.gpu_type}:"
    if not plan.fits or plan.safe_concurrency <= 0:
        return f"{head} not usable: {plan.reason}"
    return (
        f"{head} kv {plan.kv_bytes_per_token} B/token, {plan.kv_cache_tokens} tokens,"
        f" {plan.max_concurrency:g} requests at full context, safe {plan.safe_concurrency:g}"
        f" at the workload's p95 lengths (limited by {plan.limited_by}),"
        f" {plan.replicas_for_peak} replica(s) for peak, {price}"
    )


def print_result(result: DocumentResult, path: str, out: TextIO, err: TextIO) -> None:
    if not result.ok:
        for problem in result.problems:
            print(f"{path}: {result.name}: {problem}", file=err)
        for note in result.notes:
            print(f"  note: {note}", file=err)
        return
    print(f"{path}: {result.name}: valid", file=out)
    plan = result.plan
    if plan is not None:
        for gpu_plan in plan.plans:
            print(
                "  " + format_plan_line(gpu_plan, gpu_plan.gpu_type == plan.selected_gpu_type),
                file=out,
            )
            for warning in gpu_plan.warnings:
                print(f"      warning: {warning}", file=out)
        print(f"  selected {plan.selection_reason}", file=out)
    for note in result.notes:
        print(f"  note: {note}", file=out)


def run(args: argparse.Namespace) -> int:
    # Imported here: the planner stack is only needed when validating, not for `--help`.
    from kvscale.api.validation import ManifestError, validate_text

    path = str(args.file)
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(
            f"-f: cannot read {path} ({exc.strerror}); fix: pass an existing file"
        ) from exc
    try:
        results = validate_text(text)
    except ManifestError as exc:
        raise CliError(f"{path}: {exc}") from exc
    for result in results:
        print_result(result, path, sys.stdout, sys.stderr)
    return 0 if all(r.ok for r in results) else 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate LLMDeployment manifests offline (schema, rules, does it fit)",
        description="Validate every LLMDeployment in a (multi-document) YAML file offline.",
    )
    parser.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    parser.set_defaults(func=run)
