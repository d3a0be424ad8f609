"""Scenarios 3, 5 and 9: the operator autoscaling real (simulated) engines through a real
Prometheus, a metrics outage, and replicas set from outside (kubectl scale, an HPA)."""

from __future__ import annotations

import time

import pytest
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.kube import (
    condition_of,
    deployment_replicas,
    get_llmd,
    has_condition,
    kubectl,
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
from kvscale.scaling.observe import SIGNAL_WINDOW_S

pytestmark = pytest.mark.e2e

SCALE_TIMEOUT_S = 120.0
DECISION_INTERVAL_S = 5.0  # spec.scaling.intervalSeconds of the manifests
TIMER_SLACK_S = 2.5  # the operator's timer tick (KVSCALE_SCALING_INTERVAL_S)


def test_load_ramp_scales_out_then_in_only_after_the_stabilisation_window(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    window_s = 30
    name = start_llmd(
        e2e,
        api,
        namespace,
        # SLOs one L4 can meet at this load (its ITL is ~0.3 s with 2k-token prefill chunks in
        # the step), so the KV pool, not the latency term, decides the scale-out
        llmd_manifest(
            "ramp",
            scaling={"scaleDownStabilizationSeconds": window_s},
            slo={"ttftP95Seconds": 10, "itlP95Seconds": 1.5},
        ),
    )
    driver = start_trace_load(e2e, namespace, name)
    try:
        driver.rate = 1.0  # the trace's own arrival rate (~5 requests/s)
        wait_for(
            lambda: (
                (autoscaler_status(get_llmd(api, namespace, name)).get("signals") or {}).get(
                    "kvUsage", 0
                )
                > 0.6
            ),
            "KV usage above the 0.6 target",
            SCALE_TIMEOUT_S,
        )
        scaled_out = wait_replicas(
            api,
            namespace,
            name,
            lambda n: n > 1,
            "scale-out with all replicas Ready",
            SCALE_TIMEOUT_S,
        )
        # the LLMDeployment's status follows the Deployment on the next reconcile
        llmd = wait_for(
            lambda: (
                obj
                if (obj := get_llmd(api, namespace, name))["status"].get("readyReplicas", 0)
                >= scaled_out
                else None
            ),
            "status.readyReplicas of the LLMDeployment",
            SCALE_TIMEOUT_S,
        )
        out = [h for h in history_of(llmd) if h["toReplicas"] > h["fromReplicas"] and h["acted"]]
        assert out and out[0]["fromReplicas"] == 1, history_of(llmd)
        # the KV pool decides: its demand now, or its trend one cold start ahead (on a loaded
        # machine the ramp can rise over enough ticks for the forecast to act first)
        kv_now = out[0]["reason"] == "KvDemand"
        kv_ahead = (
            out[0]["reason"] == "ForecastDemand" and "forecast KV demand" in out[0]["message"]
        )
        assert kv_now or kv_ahead, out
        driver.rate = 0.0
        # The first replica took a backlog while the others started; until it has served it,
        # the KV pool (rightly) keeps the fleet, so the scale-in clock starts once it drained.
        drain_s = wait_engines_idle(e2e, namespace, name)
        drained = time.monotonic()
        # then the latency quantiles forget the backlog (one signal window) and the window runs
        wait_replicas(
            api,
            namespace,
            name,
            lambda n: n == 1,
            "scale-in to 1 after the backlog drained",
            SIGNAL_WINDOW_S + window_s + SCALE_TIMEOUT_S,
        )
        scaled_in = time.monotonic()
    finally:
        driver.stop()
    history = history_of(get_llmd(api, namespace, name))
    scale_in = next(h for h in history if h["toReplicas"] < h["fromReplicas"] and h["acted"])
    wanted_fewer = [h for h in history if h["t"] < scale_in["t"] and h["reason"] == "Stabilising"]
    assert wanted_fewer, f"scale-in without a stabilisation hold first: {history}"
    # The window starts at the last high recommendation, at most one decision before the first
    # decision that wanted fewer replicas and was held.
    held_s = scale_in["t"] - wanted_fewer[0]["t"]
    assert held_s >= window_s - DECISION_INTERVAL_S - TIMER_SLACK_S, (held_s, history)
    print(
        f"\nscaled out to {scaled_out}; backlog served {drain_s:.0f} s after the load"
        f" stopped; scale-in {scaled_in - drained:.0f} s later, held {held_s:.1f} s by a"
        f" {window_s} s window; load sent {driver.sent}, completed {driver.completed},"
        f" failed {driver.failed}"
    )
    print(describe_llmd(e2e, namespace, name))


def test_prometheus_outage_holds_replicas_and_recovers(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    name = start_llmd(
        e2e, api, namespace, llmd_manifest("outage", scaling={"scaleDownStabilizationSeconds": 0})
    )
    e2e.prometheus.stop()
    try:
        kubectl(e2e.cluster.kubeconfig_path, "-n", namespace, "scale", "llmd", name, "--replicas=2")
        wait_for(
            lambda: has_condition(
                get_llmd(api, namespace, name), "MetricsAvailable", "False", "ReadFailed"
            ),
            "MetricsAvailable=False/ReadFailed",
            SCALE_TIMEOUT_S,
        )
        wait_replicas(api, namespace, name, lambda n: n == 2, "2 replicas", SCALE_TIMEOUT_S)
        # Idle engines and no stabilisation window: with data, kvscale would scale in at once.
        held = decisions_since(api, namespace, name, 3, 6 * DECISION_INTERVAL_S)
        assert all(d["desiredReplicas"] == 2 for d in held), held
        assert {d["reason"] for d in held} <= {"MetricsMissingHold", "Fallback"}, held
        assert deployment_replicas(api, namespace, name)[0] == 2
    finally:
        e2e.prometheus.start()
    wait_for(
        lambda: has_condition(get_llmd(api, namespace, name), "MetricsAvailable", "True"),
        "MetricsAvailable=True after the restart",
        SCALE_TIMEOUT_S,
    )
    wait_replicas(
        api, namespace, name, lambda n: n == 1, "scale-in once data is back", SCALE_TIMEOUT_S
    )
    condition = condition_of(get_llmd(api, namespace, name), "MetricsAvailable")
    assert condition is not None and condition["reason"] in {"SignalsRead", "SignalsPartial"}


def test_kubectl_scale_and_an_hpa_drive_replicas_in_recommend_mode(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    name = start_llmd(
        e2e,
        api,
        namespace,
        llmd_manifest("manual", scaling={"mode": "recommend", "maxReplicas": 4}),
    )
    kubectl(e2e.cluster.kubeconfig_path, "-n", namespace, "scale", "llmd", name, "--replicas=3")
    wait_replicas(api, namespace, name, lambda n: n == 3, "kubectl scale to 3", SCALE_TIMEOUT_S)
    decisions = decisions_since(api, namespace, name, 2, 4 * DECISION_INTERVAL_S)
    assert all(d["act"] is False for d in decisions), decisions
    assert deployment_replicas(api, namespace, name)[0] == 3  # recommend mode did not undo it
    status = get_llmd(api, namespace, name)["status"]
    assert (status["replicas"], status["readyReplicas"]) == (3, 3)
    # scale subresource readers see what `kubectl get --subresource=scale` would
    scale = kubectl(
        e2e.cluster.kubeconfig_path, "-n", namespace, "get", "llmd", name,
        "--subresource=scale", "-o", "jsonpath={.spec.replicas}/{.status.replicas}",
    )  # fmt: skip
    assert scale == "3/3"
    hpa = f"""
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
spec:
  scaleTargetRef: {{apiVersion: kvscale.dev/v1alpha1, kind: LLMDeployment, name: {name}}}
  minReplicas: 4
  maxReplicas: 4
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"""
    kubectl(e2e.cluster.kubeconfig_path, "-n", namespace, "apply", "-f", "-", stdin=hpa)
    wait_replicas(
        api, namespace, name, lambda n: n == 4, "the HPA's minReplicas 4", SCALE_TIMEOUT_S
    )
    assert get_llmd(api, namespace, name)["spec"]["replicas"] == 4
    started = time.monotonic()
    decisions = decisions_since(api, namespace, name, 2, 4 * DECISION_INTERVAL_S)
    assert all(d["act"] is False for d in decisions)
    assert deployment_replicas(api, namespace, name)[0] == 4, time.monotonic() - started
