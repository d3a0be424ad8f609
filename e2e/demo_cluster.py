"""`make demo-cluster`: kvscale end to end on one machine, with a live view.

The e2e stack, not a mock-up: a real kube-apiserver, controller-manager and scheduler with kwok
GPU nodes (built once and cached, see e2e/README.md), kvscale installed from its chart, one
simulated vLLM engine per Running pod, a real Prometheus scraping them, and the operator as a
local process. One LLMDeployment (Llama 3.1 8B on L4s) receives a replay of the Azure 2023
conversation trace whose arrival rate rises and falls; every few seconds a row shows the load,
the replicas the autoscaler asked for and how many are Ready, KV utilisation, the queue and the
last decision with its numbers.

With KVSCALE_E2E_KUBECONFIG set, that cluster is used as it is instead of starting one
(e2e/kind/up.sh makes one with Docker, GPU nodes included).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from cluster import (
    Cluster,
    ClusterStartError,
    ensure_binaries,
    existing_kubeconfig,
    open_cluster,
)
from harness.fixtures import Harness, running_stack
from harness.kube import deployment_replicas, get_llmd
from harness.load import LoadDriver
from harness.prom import find_prometheus
from harness.scenario import start_llmd, start_trace_load
from harness.specs import autoscaler_status, llmd_manifest

DEMO_NAME = "chat"
# Multiples of the trace's own arrival rate (~5 requests/s), as (share of the run, rate): a
# quiet start, a ramp past what one L4 holds, a plateau, and a quiet tail long enough for the
# stabilisation window to let replicas go.
RATE_PROFILE: tuple[tuple[float, float], ...] = (
    (0.0, 0.3),
    (0.15, 0.3),
    (0.4, 0.7),
    (0.6, 0.7),
    (0.7, 0.2),
    (1.0, 0.2),
)
# What one L4 can promise for an 8B model: a 2,048-token prefill chunk sharing a step with
# decodes takes ~0.25 s on the roofline, so a 100 ms ITL target (the default) would ask for
# replicas at any load.
DEMO_SLO = {"ttftP95Seconds": 3, "itlP95Seconds": 0.3}
HEADER = (
    f"{'t (s)':>6} {'load x':>6} {'sent':>6} {'done':>6} {'fail':>5} {'replicas':>9} "
    f"{'KV util':>7} {'waiting':>7}  last decision"
)


def load_multiplier_at(elapsed_frac: float, profile: Sequence[tuple[float, float]]) -> float:
    """The arrival-rate multiplier at a point of the run (linear between profile points)."""
    if elapsed_frac <= profile[0][0]:
        return profile[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(profile):
        if elapsed_frac <= x1:
            share = 0.0 if x1 == x0 else (elapsed_frac - x0) / (x1 - x0)
            return y0 + share * (y1 - y0)
    return profile[-1][1]


@dataclass(frozen=True)
class Row:
    """One line of the live view."""

    elapsed_s: float
    load_multiplier: float
    sent: int
    completed: int
    failed: int
    desired_replicas: int
    ready_replicas: int
    kv_usage_frac: float | None
    waiting: float | None
    reason: str
    message: str


def row_of(
    elapsed_s: float,
    driver: LoadDriver,
    replicas: tuple[int, int],
    status: Mapping[str, Any],
) -> Row:
    signals = status.get("signals") or {}
    return Row(
        elapsed_s=elapsed_s,
        load_multiplier=driver.rate,
        sent=driver.sent,
        completed=driver.completed,
        failed=driver.failed,
        desired_replicas=replicas[0],
        ready_replicas=replicas[1],
        kv_usage_frac=_number(signals.get("kvUsage")),
        waiting=_number(signals.get("requestsWaiting")),
        reason=str(status.get("reason") or "-"),
        message=str(status.get("message") or ""),
    )


def format_row(row: Row, width: int = 160) -> str:
    kv = "-" if row.kv_usage_frac is None else f"{row.kv_usage_frac:.2f}"
    waiting = "-" if row.waiting is None else f"{row.waiting:g}"
    replicas = f"{row.desired_replicas}/{row.ready_replicas} rdy"
    line = (
        f"{row.elapsed_s:>6.0f} {row.load_multiplier:>6.2f} {row.sent:>6} {row.completed:>6} "
        f"{row.failed:>5} {replicas:>9} {kv:>7} {waiting:>7}  {row.reason}: {row.message}"
    )
    return line if len(line) <= width else line[: width - 1] + "…"


def view_width() -> int:
    """The terminal's width, or room for whole decisions when the view goes to a file."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 240


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@contextmanager
def demo_cluster() -> Iterator[Cluster]:
    """KVSCALE_E2E_KUBECONFIG's cluster, or one started here (building the binaries first)."""
    if existing_kubeconfig() is None:
        skip_reason = ensure_binaries()
        if skip_reason is not None:
            raise ClusterStartError(skip_reason)
    with open_cluster(keep_logs=lambda: False) as cluster:
        yield cluster


def replay(harness: Harness, duration_s: float, interval_s: float) -> list[Row]:
    """Create the LLMDeployment, replay the trace under RATE_PROFILE and print the live view."""
    namespace = f"demo-{uuid.uuid4().hex[:5]}"
    with harness.api() as api:
        client.CoreV1Api(api).create_namespace(
            body=client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
        harness.engines.watch_namespace(namespace)
        manifest = llmd_manifest(
            DEMO_NAME,
            slo=DEMO_SLO,
            scaling={"maxReplicas": 8, "scaleDownStabilizationSeconds": 45},
        )
        print(f"applying LLMDeployment {namespace}/{DEMO_NAME}; waiting until it is Ready…")
        start_llmd(harness, api, namespace, manifest)
        driver = start_trace_load(harness, namespace, DEMO_NAME)
        rows: list[Row] = []
        started = time.monotonic()
        print(HEADER)
        try:
            while (elapsed_s := time.monotonic() - started) < duration_s:
                driver.rate = load_multiplier_at(elapsed_s / duration_s, RATE_PROFILE)
                status = autoscaler_status(get_llmd(api, namespace, DEMO_NAME))
                replicas = deployment_replicas(api, namespace, DEMO_NAME)
                rows.append(row_of(elapsed_s, driver, replicas, status))
                print(format_row(rows[-1], view_width()), flush=True)
                time.sleep(interval_s)
        finally:
            driver.stop()
            harness.engines.forget_namespace(namespace)
            client.CoreV1Api(api).delete_namespace(namespace)
    return rows


def summarize(rows: Sequence[Row]) -> str:
    if not rows:
        return "no rows recorded"
    last = rows[-1]
    peak = max(r.desired_replicas for r in rows)
    changes = sum(
        1 for a, b in itertools.pairwise(rows) if a.desired_replicas != b.desired_replicas
    )
    return (
        f"replicas 1 -> peak {peak} -> {last.desired_replicas} ({changes} changes seen);"
        f" requests sent {last.sent}, completed {last.completed}, failed {last.failed}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_cluster", description="kvscale end to end on one machine, with a live view"
    )
    parser.add_argument("--duration-s", type=float, default=300.0, help="replay length, seconds")
    parser.add_argument("--interval-s", type=float, default=5.0, help="seconds between rows")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.interval_s <= 0:
        parser.error("--duration-s and --interval-s must be positive")
    binary = find_prometheus()
    if binary is None:
        print("prometheus is not installed (Debian package `prometheus`)", file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="kvscale-demo-"))
    finished = False
    try:
        with demo_cluster() as cluster, running_stack(cluster, work_dir, binary) as harness:
            rows = replay(harness, args.duration_s, args.interval_s)
        finished = True
    except ClusterStartError as error:
        print(f"cannot start the cluster: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything started here was stopped", file=sys.stderr)
        return 130
    finally:
        if finished:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"operator, engine and Prometheus logs kept in {work_dir}", file=sys.stderr)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
