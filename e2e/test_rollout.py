"""Scenarios 6 and 7: a flag change that breaches a guardrail is rolled back to the
last-known-good template; the operator killed mid-scale resumes without scaling twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.kube import (
    condition_of,
    deployment_replicas,
    events_of,
    get_llmd,
    has_condition,
    patch_llmd,
    wait_for,
)
from harness.scenario import (
    decisions_since,
    describe_llmd,
    start_llmd,
    start_trace_load,
    wait_engines_idle,
    wait_replicas,
)
from harness.specs import autoscaler_status, history_of, llmd_manifest

pytestmark = pytest.mark.e2e

PLAN_HASH = "kvscale.dev/plan-hash"
GUARDRAIL_REASONS = {
    "PreemptionRateRegressed",
    "TtftRegressed",
    "ItlRegressed",
    "RejectionRateRegressed",
}
TIMEOUT_S = 150.0


def template_hash(api: ApiClient, namespace: str, name: str) -> str:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return str(deployment.spec.template.metadata.annotations[PLAN_HASH])


def engine_args(api: ApiClient, namespace: str, name: str) -> list[str]:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return list(deployment.spec.template.spec.containers[0].args or [])


def test_guardrail_breach_rolls_back_to_last_known_good(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    manifest = llmd_manifest(
        "rollback",
        scaling={"mode": "recommend"},  # keep one replica so the KV pool size is what matters
        rollout={"enabled": True, "bakeWindowSeconds": 120, "maxPreemptionsPerSecond": 0.05},
    )
    name = start_llmd(e2e, api, namespace, manifest)
    good_hash = template_hash(api, namespace, name)
    good_args = engine_args(api, namespace, name)
    wait_for(
        lambda: (
            ((get_llmd(api, namespace, name).get("status") or {}).get("rollout") or {}).get(
                "lastKnownGoodHash"
            )
            == good_hash
        ),
        "the running template recorded as last-known-good",
        TIMEOUT_S,
    )
    driver = start_trace_load(e2e, namespace, name)
    try:
        driver.rate = 0.4
        time.sleep(15)  # a baseline under load: no preemptions on the planned 1,803-block pool
        # The "tuning" a user might try: less memory for the engine; the KV pool shrinks ~3x (564).
        patch_llmd(api, namespace, name, {"spec": {"engine": {"gpuMemoryUtilization": 0.79}}})

        def rolled_back() -> dict[str, Any] | None:
            obj = get_llmd(api, namespace, name)
            return obj if has_condition(obj, "RolledBack", "True") else None

        obj = wait_for(rolled_back, "RolledBack=True", TIMEOUT_S)
    finally:
        driver.stop()
    condition = condition_of(obj, "RolledBack")
    assert condition is not None and condition["reason"] in GUARDRAIL_REASONS, condition
    wait_for(lambda: template_hash(api, namespace, name) == good_hash, "template restored", 60)
    assert engine_args(api, namespace, name) == good_args
    refused = obj["status"]["rollout"].get("refusedHashes") or []
    assert refused and good_hash not in refused
    warnings = [
        e
        for e in events_of(api, namespace, name)
        if e.type == "Warning" and e.reason == condition["reason"]
    ]
    assert warnings, [(e.type, e.reason) for e in events_of(api, namespace, name)]
    # the refused spec is not re-applied by the periodic reconcile
    time.sleep(8)
    assert template_hash(api, namespace, name) == good_hash
    # what a user sees (printed in `make e2e` output thanks to -rP)
    print("\n" + describe_llmd(e2e, namespace, name))


def test_operator_killed_mid_scale_resumes_without_scaling_twice(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    # Only KV demand may move replicas here: the preemption and SLO terms would (rightly) keep
    # reacting to the saturated minute after the load stops.
    manifest = llmd_manifest(
        "restart",
        scaling={"scaleDownStabilizationSeconds": 300, "preemptionsPerSecondThreshold": 1000},
        slo={"ttftP95Seconds": 600, "itlP95Seconds": 10},
    )
    name = start_llmd(e2e, api, namespace, manifest)
    driver = start_trace_load(e2e, namespace, name)
    try:
        driver.rate = 1.0

        def scaled() -> int | None:
            replicas = get_llmd(api, namespace, name)["spec"].get("replicas")
            return int(replicas) if replicas and replicas > 1 else None

        decided = wait_for(scaled, "a scale-out decision", TIMEOUT_S, interval_s=0.1)
        e2e.operator.kill()  # SIGKILL right after the decision, before the pods are up
    finally:
        driver.stop()
    wait_engines_idle(e2e, namespace, name)
    before = get_llmd(api, namespace, name)
    history_before = history_of(before)
    e2e.operator.start()
    wait_replicas(api, namespace, name, lambda n: n == decided, f"{decided} replicas", TIMEOUT_S)
    decisions = decisions_since(api, namespace, name, 3, 60)
    assert all(d["desiredReplicas"] == decided for d in decisions), decisions
    assert deployment_replicas(api, namespace, name) == (decided, decided)
    after = get_llmd(api, namespace, name)
    assert after["spec"]["replicas"] == decided
    kept = {(h["time"], h["toReplicas"]) for h in history_of(after)}
    assert {(h["time"], h["toReplicas"]) for h in history_before} <= kept
    assert has_condition(after, "Ready", "True")
    outs = [h for h in history_of(after) if h["toReplicas"] > h["fromReplicas"] and h["acted"]]
    assert len(outs) == 1, history_of(after)
    assert autoscaler_status(after)["currentReplicas"] == decided
