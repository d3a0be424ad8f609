"""Scenario: two operator replicas under the chart's RBAC; the leader is killed mid-load.

The session's single operator is stopped (it releases the Lease) and two `kvscale run`
replicas start the way the chart runs them (its args and environment, its ServiceAccount's
token, leader election on). Under trace load the leader scales the deployment out; it is then
SIGKILLed (a crashed pod: no release). The standby must take the Lease after the lease duration
and resume deciding, and the two must never both have acted:

- before the kill the standby's reconcile counter is absent (it ran no handler);
- every change of the Deployment's spec.replicas (polled throughout) is the `toReplicas` of
  one acted autoscaler decision, in order, and the acted decisions form one chain (each starts
  where the previous ended): two actors on stale state would break the chain or repeat a step;
- decisions before the kill were made before it, and the standby's log shows it acquired the
  Lease before any of its decisions.

Prints the timeline (kill → Lease taken → first decision of the new leader).
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.install import NAMESPACE as RELEASE_NAMESPACE
from harness.kube import deployment_replicas, get_llmd, wait_for
from harness.operator import OperatorProcess
from harness.prom import free_loopback_port
from harness.scenario import start_llmd, start_trace_load, wait_replicas
from harness.specs import history_of, llmd_manifest

pytestmark = pytest.mark.e2e

LEASE = "kvscale"
SCALE_TIMEOUT_S = 180.0
TAKEOVER_BOUND_S = 45.0  # lease duration 15 s + retry 2 s, generous on a loaded 2-core machine


def lease_spec(api: ApiClient) -> dict[str, Any]:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, RELEASE_NAMESPACE)
    return {
        "holder": lease.spec.holder_identity or "",
        "acquired": lease.spec.acquire_time,
        "transitions": lease.spec.lease_transitions or 0,
    }


def reconciles(metrics_port: int) -> float:
    """Sum of kvscale_reconcile_total on a replica's /metrics (0 when it reconciled nothing)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as rsp:
        text = rsp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kvscale_reconcile_total{")
    )


class ReplicaPoller:
    """Records every change of the Deployment's spec.replicas, with its time."""

    def __init__(self, api: ApiClient, namespace: str, name: str) -> None:
        self.changes: list[tuple[float, int]] = []
        self._args = (api, namespace, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            replicas, _ = deployment_replicas(*self._args)
            if replicas != last and replicas >= 0:
                self.changes.append((time.time(), replicas))
                last = replicas
            self._stop.wait(0.25)

    @contextmanager
    def running(self) -> Iterator[ReplicaPoller]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def acquired_at(process: OperatorProcess) -> float | None:
    """Wall time of the 'acquired lease' log line of the process's current run."""
    for line in process.log_path.read_text(errors="replace").splitlines():
        if "acquired lease" in line and line.startswith("["):
            stamp = line[1 : line.index("]")]
            return datetime.fromisoformat(stamp.replace(",", ".")).timestamp()
    return None


def test_killing_the_leader_mid_load_hands_over_without_double_scaling(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    e2e.operator.stop()  # the session's replica releases the Lease on SIGTERM
    ports = {
        pod: (free_loopback_port(), free_loopback_port()) for pod in ("kvscale-a", "kvscale-b")
    }
    replicas = {
        pod: OperatorProcess(
            e2e.installation,
            e2e.work_dir,
            {"KVSCALE_HEALTH_PORT": str(health), "KVSCALE_METRICS_PORT": str(metrics)},
            health,
            pod_name=pod,
        )
        for pod, (health, metrics) in ports.items()
    }
    try:
        for replica in replicas.values():
            replica.start()
        leader_name = wait_for(
            lambda: lease_spec(api)["holder"] in replicas and lease_spec(api)["holder"],
            "a replica holds the Lease",
            60,
        )
        leader = replicas[leader_name]
        standby_name = next(pod for pod in replicas if pod != leader_name)
        standby = replicas[standby_name]
        wait_for(lambda: standby.readiness()[1].get("role") == "standby", "standby role", 30)
        assert standby.readiness()[0] == 200  # standbys are Ready
        transitions_before = lease_spec(api)["transitions"]

        name = start_llmd(e2e, api, namespace, llmd_manifest("leader"))
        driver = start_trace_load(e2e, namespace, name)
        with ReplicaPoller(api, namespace, name).running() as poller:
            try:
                driver.rate = 1.0
                wait_replicas(
                    api,
                    namespace,
                    name,
                    lambda n: n > 1,
                    "scale-out by the leader",
                    SCALE_TIMEOUT_S,
                )
                assert reconciles(ports[standby_name][1]) == 0, standby.log_tail()
                killed_at = time.time()
                leader.kill()  # mid-load, no Lease release
                wait_for(
                    lambda: lease_spec(api)["holder"] == standby_name,
                    "the standby takes the Lease",
                    TAKEOVER_BOUND_S,
                )
                taken_at = time.time()
                resumed = wait_for(
                    lambda: (
                        [h for h in history_of(get_llmd(api, namespace, name)) if h["t"] > taken_at]
                        or None
                    ),
                    "a decision by the new leader",
                    SCALE_TIMEOUT_S,
                )
                resumed_at = resumed[0]["t"]
                driver.rate = 0.0
                # the reconcile copies the LLMDeployment's spec.replicas onto the Deployment
                wait_for(
                    lambda: (
                        deployment_replicas(api, namespace, name)[0]
                        == get_llmd(api, namespace, name)["spec"].get("replicas")
                    ),
                    "the Deployment follows the last decision",
                    60,
                )
                wait_for(
                    lambda: (
                        poller.changes
                        and poller.changes[-1][1] == deployment_replicas(api, namespace, name)[0]
                    ),
                    "the poller caught up",
                    10,
                )
            finally:
                driver.stop()
        polled_until = time.time()
        history = history_of(get_llmd(api, namespace, name))
    finally:
        for replica in replicas.values():
            replica.stop()
        e2e.operator.start()

    acquired = acquired_at(standby)
    assert acquired is not None and acquired >= killed_at, standby.log_tail()
    assert lease_spec(api)["transitions"] >= transitions_before + 1
    acted = [h for h in history if h.get("acted") and h["toReplicas"] != h["fromReplicas"]]
    for before, after in itertools.pairwise(acted):
        assert after["fromReplicas"] == before["toReplicas"], f"broken chain: {acted}"
    by_standby = [h for h in acted if killed_at < h["t"] < acquired]
    assert not by_standby, f"decisions between the kill and the takeover: {by_standby}"
    # every change of the Deployment is one acted decision, in order, and nothing else
    observed = [replicas_now for _, replicas_now in poller.changes]
    acted_while_polled = [h for h in acted if h["t"] <= polled_until]
    assert acted_while_polled, history
    assert observed[0] == acted_while_polled[0]["fromReplicas"], (observed, acted)
    decided = [h["toReplicas"] for h in acted_while_polled]
    # the last decision may not have reached the Deployment when polling stopped
    assert observed[1:] in (decided, decided[:-1]), (observed, acted)
    print(
        f"\nleader {leader_name} scaled out under load; killed at +0.0 s; {standby_name} took"
        f" the Lease at +{taken_at - killed_at:.1f} s (its log: acquired at"
        f" +{acquired - killed_at:.1f} s); first decision of the new leader at"
        f" +{resumed_at - killed_at:.1f} s ({resumed[0]['reason']}:"
        f" {resumed[0]['fromReplicas']} -> {resumed[0]['toReplicas']});"
        f" Deployment replicas over time: {[r for _, r in poller.changes]};"
        f" acted decisions: {[(h['fromReplicas'], h['toReplicas'], h['reason']) for h in acted]}"
    )
