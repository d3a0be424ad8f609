"""`kvscale run`: the operator (kopf, in-process) with settings from `KVSCALE_*` variables.

Command-line flags override the environment: `--namespace` (repeatable) / `--all-namespaces`,
`--peering NAME`, `--standalone`, `--verbose`, `--log-format text|json`. Log lines about one
LLMDeployment start with `[namespace/name]` (text) or carry it as `object` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from typing import Any

from kvscale.cli.common import CliError

LOG_FORMATS = ("text", "json")


def configure_logging(log_format: str, *, verbose: bool) -> None:
    """kopf's formatters: they know the object a record is about (`[namespace/name]` in text,
    an `object` key in JSON); a plain logging.Formatter would drop it."""
    import kopf

    if log_format == "json":
        kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
        kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator (kopf) against the current cluster",
        description=(
            "Run the kvscale operator. Settings come from KVSCALE_* environment variables "
            "(see docs/operator.md); the flags below override them."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: KVSCALE_NAMESPACES or all",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument("--peering", metavar="NAME", help="kopf peering name (HA); default kvscale")
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: for one replica or local runs"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default): [time] logger [level] [namespace/name] message; json: one object"
        " per line for log pipelines",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvscale.controller.kube import ClusterConfigError
    from kvscale.controller.runtime import connect_kube, run_operator
    from kvscale.controller.settings import SettingsError, load_settings

    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    watch = settings.watch
    if args.all_namespaces:
        watch = dataclasses.replace(watch, namespaces=())
    elif args.namespace:
        watch = dataclasses.replace(watch, namespaces=tuple(args.namespace))
    peering = settings.peering
    if args.peering:
        peering = dataclasses.replace(peering, name=args.peering)
    if args.standalone:
        peering = dataclasses.replace(peering, standalone=True)
    settings = dataclasses.replace(settings, watch=watch, peering=peering)
    try:
        kube = connect_kube(settings)
    except ClusterConfigError as exc:
        raise CliError(
            f"kubeconfig: {exc}; fix: set KUBECONFIG (or ~/.kube/config) to a cluster's"
            " config, or run the operator in a pod with a service account"
        ) from None
    configure_logging(args.log_format, verbose=args.verbose)
    from kvscale.controller.telemetry import OperatorMetrics

    metrics = OperatorMetrics()
    metrics.serve(settings.server.metrics_port)
    asyncio.run(run_operator(settings, kube=kube, metrics=metrics))
    return 0
