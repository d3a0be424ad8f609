"""Scenario 10: 100 LLMDeployments applied at once all become Ready.

Prints time-to-Ready percentiles and the operator's CPU seconds and peak RSS (figures, not
assertions: this machine is shared). No simulated engines run for them (the namespace is not
registered with the engine runner), so the figures are the operator's own cost of planning,
applying and watching 100 objects, plus its autoscaler reading an empty Prometheus.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.kube import condition_of, create_llmd, list_llmds, wait_for
from harness.specs import llmd_manifest

pytestmark = pytest.mark.e2e

COUNT = 100
READY_BOUND_S = 300.0  # generous: correctness, not speed, is asserted


def ready_at(obj: dict[str, Any]) -> float | None:
    condition = condition_of(obj, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return datetime.fromisoformat(str(condition["lastTransitionTime"])).timestamp()


def test_hundred_llmdeployments_all_become_ready(e2e: Harness, api: ApiClient) -> None:
    namespace = f"e2e-bulk-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api)
    core.create_namespace(body=client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        before = e2e.operator.usage()
        created: dict[str, float] = {}
        spec = {"scaling": {"intervalSeconds": 15}}
        for i in range(COUNT):
            name = f"bulk-{i:03d}"
            create_llmd(api, namespace, llmd_manifest(name, **spec))
            created[name] = time.time()
        apply_s = time.time() - min(created.values())

        def all_ready() -> list[dict[str, Any]] | None:
            items = list_llmds(api, namespace)
            ready = [o for o in items if ready_at(o) is not None]
            return ready if len(ready) == COUNT else None

        ready = wait_for(all_ready, f"{COUNT} LLMDeployments Ready", READY_BOUND_S, 1.0)
        after = e2e.operator.usage()
        deployments = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
        assert len(deployments) == COUNT
        assert all((d.status.available_replicas or 0) == 1 for d in deployments)
        seconds = np.array(
            [ready_at(o) - created[o["metadata"]["name"]] for o in ready]  # type: ignore[operator]
        )
        p50, p99 = np.percentile(seconds, [50, 99])
        print(
            f"\n{COUNT} LLMDeployments created in {apply_s:.1f} s; time to Ready p50 {p50:.1f} s,"
            f" p99 {p99:.1f} s, max {seconds.max():.1f} s; operator CPU"
            f" {after.cpu_s - before.cpu_s:.1f} s during the scenario"
            f" ({after.cpu_s:.1f} s since start), peak RSS {after.peak_rss_bytes / 2**20:.0f} MiB"
        )
    finally:
        core.delete_namespace(namespace)
