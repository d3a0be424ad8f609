"""Helpers for the autoscaler-in-the-operator tests: a scripted metrics source, the operator
started with the autoscaler registered, and a `kubectl describe`-style rendering.

The operator is started the way `kvscale.controller.runtime.run_operator` starts it (same
registry builder, same kopf settings), plus `kvscale.controller.autoscaler.register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import json
import threading
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import kmock
from kube_fixture import LLMD, FakeCluster, running_fake_cluster

from kvscale.controller.autoscaler import Autoscaler, register
from kvscale.controller.kube import connect
from kvscale.controller.reconcile import Controller
from kvscale.controller.runtime import build_kopf_settings, build_registry
from kvscale.controller.settings import Settings
from kvscale.controller.telemetry import OperatorMetrics
from kvscale.metrics import DeploymentKey, DeploymentTarget, MetricsSource, Quality, SignalsReading
from kvscale.metrics.source import SIGNAL_NAMES
from kvscale.scaling import Signals


@dataclass
class ScriptedSource:
    """A `MetricsSource` whose readings the test sets; every expected pod reports.

    `signals` is a template (pods fields are filled from each target); `down` makes every
    read fail the way an unreachable Prometheus does (signals None + error).
    """

    signals: Signals = field(default_factory=lambda: Signals(0, 0, kv_usage_frac=0.5))
    down: bool = False
    # When set, KV usage follows the replica count like a real fleet: this many replicas' worth
    # of KV in use, spread over the pods (1.8 -> 0.9 on 2 pods, 0.45 on 4).
    demand_replicas: float | None = None
    fetches: int = 0
    queries_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, **values: Any) -> None:
        with self._lock:
            self.signals = replace(self.signals, **values)

    def fetch(self, targets: Sequence[DeploymentTarget]) -> dict[DeploymentKey, SignalsReading]:
        with self._lock:
            self.fetches += 1
            self.queries_sent = 0 if self.down else 9  # one per signal family, like the adapter
            if self.down:
                error = "Prometheus at http://prometheus:9090 unreachable: ConnectionError"
                return {t.key: SignalsReading(None, {}, error) for t in targets}
            quality = dict.fromkeys(SIGNAL_NAMES, Quality.OK)
            return {t.key: SignalsReading(self._signals_of(t), quality) for t in targets}

    def _signals_of(self, target: DeploymentTarget) -> Signals:
        pods = target.pods_expected
        signals = replace(self.signals, pods_expected=pods, pods_reporting=pods)
        if self.demand_replicas is not None and pods > 0:
            signals = replace(signals, kv_usage_frac=min(1.0, self.demand_replicas / pods))
        return signals


@dataclass
class RunningOperator:
    cluster: FakeCluster
    metrics: OperatorMetrics
    autoscaler: Autoscaler


def declare_pods(cluster: FakeCluster) -> None:
    """Serve v1/pods so the operator's engine-pod index watches it (kube_fixture does not)."""
    cluster.fake.resources["v1/pods"] = kmock.ResourceInfo(
        kind="Pod",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status"},
    )


def llmd_object(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An LLMDeployment manifest with a copy of `spec`."""
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(spec),
    }


@contextlib.asynccontextmanager
async def cluster_with_pods() -> AsyncIterator[FakeCluster]:
    """The fake API server, serving pods too; leaked sessions collected at the end."""
    async with running_fake_cluster() as fake_cluster:
        declare_pods(fake_cluster)
        yield fake_cluster
    collect_leaked_sessions()


@contextlib.asynccontextmanager
async def operator_with_autoscaler(
    cluster: FakeCluster, settings: Settings, source: MetricsSource
) -> AsyncIterator[RunningOperator]:
    import kopf

    kube = connect(server_url=cluster.url, apply_mode=settings.reconcile.apply_mode)
    metrics = OperatorMetrics()
    ctl = Controller(settings=settings, kube=kube, metrics=metrics)
    registry = build_registry(ctl, cluster.url)
    autoscaler = register(registry, settings, controller=ctl, source=source)
    assert autoscaler is not None
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=build_kopf_settings(settings),
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield RunningOperator(cluster, metrics, autoscaler)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        collect_leaked_sessions()


def collect_leaked_sessions() -> None:
    """Collect HTTP sessions the stopped operator / fake left to the garbage collector.

    kopf and kmock sometimes leave an aiohttp session to GC at shutdown; when GC happens to run
    inside a later test, pytest's unraisable-warning check fails that unrelated test (seen in
    the reconcile tests too). Collecting here, with ResourceWarning ignored, pins it to the
    teardown of the test that caused it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def describe(cluster: FakeCluster, namespace: str, name: str) -> str:
    """A `kubectl describe llmdeployment`-style view of status and Events (for -s output)."""
    obj = cluster.get(LLMD, namespace, name) or {}
    status = obj.get("status") or {}
    lines = [f"Name:         {name}", f"Namespace:    {namespace}"]
    lines.append(
        f"Replicas:     spec={obj.get('spec', {}).get('replicas')}"
        f" status={status.get('replicas')} ready={status.get('readyReplicas')}"
    )
    lines.append("Conditions:")
    lines.append(f"  {'Type':<20}{'Status':<8}{'Reason':<28}Message")
    for c in status.get("conditions") or []:
        lines.append(
            f"  {c['type']:<20}{c['status']:<8}{c['reason']:<28}{c.get('message', '')[:110]}"
        )
    autoscaler = dict(status.get("autoscaler") or {})
    history = autoscaler.pop("history", [])
    autoscaler.pop("recommendations", None)
    lines.append("Autoscaler:")
    for key in (
        "desiredReplicas",
        "currentReplicas",
        "readyReplicas",
        "startingReplicas",
        "reason",
        "message",
        "act",
        "lastDecisionTime",
        "failedReads",
    ):
        lines.append(f"  {key + ':':<20}{autoscaler.get(key)}")
    lines.append(f"  {'signals:':<20}{json.dumps(autoscaler.get('signals'))}")
    lines.append("  History:")
    for h in history:
        lines.append(
            f"    {h['time']}  {h['fromReplicas']} -> {h['toReplicas']}  {h['reason']:<20}"
            f" {h['message'][:90]}"
        )
    rollout = status.get("rollout")
    if rollout:
        lines.append("Rollout:")
        for key in (
            "phase",
            "lastKnownGoodHash",
            "candidateHash",
            "refusedHashes",
            "reason",
            "message",
        ):
            lines.append(f"  {key + ':':<20}{rollout.get(key)}")
    lines.append("Events:")
    lines.append(f"  {'Type':<8}{'Reason':<26}Message")
    events = [
        e
        for e in cluster.objects("v1/events", namespace).values()
        if (e.get("involvedObject") or {}).get("name") == name
    ]
    for e in events:
        lines.append(
            f"  {e.get('type', ''):<8}{e.get('reason', ''):<26}{e.get('message', '')[:130]}"
        )
    return "\n".join(lines)
