"""`kvscale run`: the operator (kopf, in-process) with settings from `KVSCALE_*` variables.

Command-line flags override the environment: `--namespace` (repeatable) / `--all-namespaces`,
`--lease NAME`, `--standalone`, `--verbose`, `--log-format text|json`. With leader election
(the default) a replica that loses its Lease stops acting and exits with status 1, so its pod
restarts as a standby (docs/adr/0007-leader-election.md). Log lines about one
LLMDeployment start with `[namespace/name]` (text) or carry it as `object` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
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
    parser.add_argument(
        "--lease", metavar="NAME", help="leader-election Lease name; default KVSCALE_LEASE_NAME"
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election: only for a single replica or local runs",
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
    from kvscale.controller.runtime import LeadershipLostError, connect_kube, run_operator
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
    election = settings.leader_election
    if args.lease:
        election = dataclasses.replace(election, lease_name=args.lease)
    if args.standalone:
        election = dataclasses.replace(election, enabled=False)
    settings = dataclasses.replace(settings, watch=watch, leader_election=election)
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
    try:
        asyncio.run(run_operator(settings, kube=kube, metrics=metrics))
    except LeadershipLostError as exc:
        logging.getLogger("kvscale").error("%s; exiting so the pod restarts as a standby", exc)
        return 1
    return 0
