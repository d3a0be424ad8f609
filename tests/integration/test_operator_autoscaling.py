"""The autoscaling timer inside the running kopf operator, against the fake API server.

The operator runs for real (kopf over HTTP against kmock + kube_fixture), with the autoscaler
registered on the same registry as the reconcile handlers; only the metrics source is scripted
(`ScriptedSource`), so each test decides what the fleet reports. Windows are seconds long.

scale-out on KV pressure → spec.replicas and the Deployment follow, Event posted;
scale-in only after the stabilisation window (history shows the hold first);
outage → MetricsAvailable=False, replicas held;
flag change that breaches a guardrail → last-known-good template restored, RolledBack, Event,
and the reconcile does not re-apply the refused template.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from autoscale_fixture import (
    ScriptedSource,
    cluster_with_pods,
    describe,
    llmd_object,
    operator_with_autoscaler,
)
from kube_fixture import DEPLOYMENTS, LLMD, FakeCluster, wait_for
from promfixture import VLLM_V1, StartPod, StartPrometheus, iter_targets

from kvscale.controller.settings import (
    LeaderElectionSettings,
    ReconcileSettings,
    ServerSettings,
    Settings,
)
from kvscale.metrics import PrometheusSource
from samples import llama8b_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NS, NAME = "serving", "chat"
PLAN_HASH = "kvscale.dev/plan-hash"
SPEC: dict[str, Any] = llama8b_spec(
    placement={"gpuTypes": ["l40s"], "gpusPerReplica": 1},
    replicas=2,
    scaling={
        "minReplicas": 1,
        "maxReplicas": 6,
        "targetKvUtilization": 0.5,
        "scaleDownStabilizationSeconds": 4,
        "scaleDownCooldownSeconds": 0,
        "warmupSeconds": 0,
        "preemptionsPerSecondThreshold": 100,
    },
    rollout={"bakeWindowSeconds": 60, "maxPreemptionsPerSecond": 0.5},
)


def settings() -> Settings:
    return Settings(
        reconcile=ReconcileSettings(interval_s=1.0, scaling_interval_s=0.5, retry_delay_s=0.5),
        server=ServerSettings(metrics_port=0, health_port=0),
        leader_election=LeaderElectionSettings(enabled=False),
    )


def llmd(spec: dict[str, Any]) -> dict[str, Any]:
    return llmd_object(NAME, NS, spec)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with cluster_with_pods() as fake_cluster:
        yield fake_cluster


def obj(cluster: FakeCluster) -> dict[str, Any]:
    return cluster.get(LLMD, NS, NAME) or {}


def autoscaler_status(cluster: FakeCluster) -> dict[str, Any]:
    return dict((obj(cluster).get("status") or {}).get("autoscaler") or {})


def condition(cluster: FakeCluster, kind: str) -> dict[str, Any]:
    found = [
        c for c in (obj(cluster).get("status") or {}).get("conditions", []) if c["type"] == kind
    ]
    return found[0] if found else {}


def deployment_replicas(cluster: FakeCluster) -> int | None:
    dep = cluster.get(DEPLOYMENTS, NS, NAME)
    return None if dep is None else dep["spec"]["replicas"]


def template_hash(cluster: FakeCluster) -> str | None:
    dep = cluster.get(DEPLOYMENTS, NS, NAME) or {}
    annotations = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    value = annotations.get(PLAN_HASH)
    return None if value is None else str(value)


def sample(running: Any, name: str, **labels: str) -> float:
    value = running.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_scale_out_on_kv_pressure_then_in_after_the_window(cluster: FakeCluster) -> None:
    # KV usage follows the replica count: N replicas' worth of KV spread over the pods
    source = ScriptedSource(demand_replicas=1.0)  # 0.5 on 2 pods: at target, within tolerance
    async with operator_with_autoscaler(cluster, settings(), source) as running:
        await cluster.create(LLMD, llmd(SPEC))
        await wait_for(lambda: autoscaler_status(cluster).get("reason") == "WithinTolerance")
        assert deployment_replicas(cluster) == 2
        # 0.9 on 2 replicas at target 0.5: 1.8 replicas' worth / 0.5 -> 4 (then 0.45 each: hold)
        source.demand_replicas = 1.8
        await wait_for(lambda: obj(cluster)["spec"].get("replicas") == 4, timeout_s=10)
        await wait_for(lambda: deployment_replicas(cluster) == 4, timeout_s=10)
        (event,) = await wait_for(lambda: cluster.events(NS, "KvDemand"))
        assert event["type"] == "Normal"
        assert "2 -> 4" in event["message"]
        await wait_for(lambda: autoscaler_status(cluster).get("currentReplicas") == 4)
        # the decision is stored before it is acted on (a crash in between must not lose it)
        patches = cluster.patches(f"/llmdeployments/{NAME}/")
        scale_at = next(i for i, (path, _) in enumerate(patches) if path.endswith("/scale"))
        assert any(
            path.endswith("/status")
            and ((body or {}).get("status") or {}).get("autoscaler", {}).get("desiredReplicas") == 4
            for path, body in patches[:scale_at]
        ), patches
        labels = {"llmdeployment_namespace": NS, "llmdeployment": NAME}
        assert sample(running, "kvscale_recommended_replicas", **labels) == 4
        print("\n--- after scale-out ---\n" + describe(cluster, NS, NAME))
        # load drops: 0.1 on 4 replicas -> 1 replica's worth, but the 4 s window holds first
        source.demand_replicas = 0.4
        await wait_for(lambda: deployment_replicas(cluster) == 3, timeout_s=15)
        # the scale-down, as recorded in the stored history
        history = await wait_for(
            lambda: (
                (h := autoscaler_status(cluster).get("history", []))
                and any(e["toReplicas"] < e["fromReplicas"] for e in h)
                and h
            )
        )
        reasons = [h["reason"] for h in history]
        assert "Stabilising" in reasons
        first_hold = reasons.index("Stabilising")
        down = next(i for i, h in enumerate(history) if h["toReplicas"] < h["fromReplicas"])
        assert first_hold < down  # the hold came before the scale-down
        assert history[down]["fromReplicas"] == 4
        assert history[down]["toReplicas"] == 3  # one replica at a time (maxScaleDownStep 1)


async def test_outage_holds_and_reports_metrics_unavailable(cluster: FakeCluster) -> None:
    source = ScriptedSource()
    source.set(kv_usage_frac=0.5)
    async with operator_with_autoscaler(cluster, settings(), source) as running:
        await cluster.create(LLMD, llmd(SPEC))
        await wait_for(lambda: condition(cluster, "MetricsAvailable").get("status") == "True")
        source.down = True
        available = await wait_for(
            lambda: (c := condition(cluster, "MetricsAvailable")) and c["status"] == "False" and c
        )
        assert available["reason"] == "ReadFailed"
        assert "unreachable" in available["message"]
        await wait_for(lambda: autoscaler_status(cluster).get("failedReads", 0) >= 3)
        status = autoscaler_status(cluster)
        assert status["reason"] == "MetricsMissingHold"
        assert status["desiredReplicas"] == 2
        holding = await wait_for(
            lambda: (c := condition(cluster, "ScalingActive")) and c["status"] == "False" and c
        )
        assert holding["reason"] == "HoldingOnMissingData"
        assert deployment_replicas(cluster) == 2
        assert obj(cluster)["spec"]["replicas"] == 2
        labels = {"llmdeployment_namespace": NS, "llmdeployment": NAME}
        assert sample(running, "kvscale_metrics_available", **labels) == 0
        # recovery: the next good read makes it available again
        source.down = False
        await wait_for(lambda: condition(cluster, "MetricsAvailable").get("status") == "True")


async def test_guardrail_breach_restores_the_last_known_good_template(
    cluster: FakeCluster,
) -> None:
    source = ScriptedSource()
    source.set(kv_usage_frac=0.5, preemptions_per_s=0.0)
    async with operator_with_autoscaler(cluster, settings(), source) as running:
        await cluster.create(LLMD, llmd(SPEC))
        good = await wait_for(
            lambda: (obj(cluster).get("status") or {}).get("rollout", {}).get("lastKnownGoodHash")
        )
        good_args = cluster.get(DEPLOYMENTS, NS, NAME)["spec"]["template"]["spec"]["containers"][0][  # type: ignore[index]
            "args"
        ]
        assert template_hash(cluster) == good
        assert "kvscale.dev/last-known-good" in obj(cluster)["metadata"]["annotations"]
        # a capacity change: new rendered flags, new template hash; it starts baking
        await cluster.patch(LLMD, NS, NAME, {"spec": {"maxContextLength": 4096}})
        bad = await wait_for(lambda: (h := template_hash(cluster)) != good and h)
        await wait_for(lambda: obj(cluster)["status"]["rollout"].get("phase") == "baking")
        assert obj(cluster)["status"]["rollout"]["candidateHash"] == bad
        # the candidate preempts: rolled back to the last-known-good template
        source.set(preemptions_per_s=2.0)
        rolled = await wait_for(
            lambda: (c := condition(cluster, "RolledBack")) and c["status"] == "True" and c
        )
        assert rolled["reason"] == "PreemptionRateRegressed"
        assert "2/s > 0.5/s" in rolled["message"]
        await wait_for(lambda: template_hash(cluster) == good)
        (event,) = await wait_for(lambda: cluster.events(NS, "PreemptionRateRegressed"))
        assert event["type"] == "Warning"
        rollout = obj(cluster)["status"]["rollout"]
        assert rollout["refusedHashes"] == [bad]
        assert rollout["phase"] == "rolled_back"
        labels = {
            "llmdeployment_namespace": NS,
            "llmdeployment": NAME,
            "reason": "PreemptionRateRegressed",
        }
        assert sample(running, "kvscale_rollbacks_total", **labels) == 1
        print("\n--- after rollback ---\n" + describe(cluster, NS, NAME))
        # the spec still asks for the refused revision; reconciles keep the good template
        seen = sample(running, "kvscale_reconcile_total", trigger="timer", result="ok")
        await wait_for(
            lambda: (
                sample(running, "kvscale_reconcile_total", trigger="timer", result="ok") >= seen + 2
            ),
            timeout_s=10,
        )
        assert template_hash(cluster) == good
        container = cluster.get(DEPLOYMENTS, NS, NAME)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert container["args"] == good_args


async def test_scale_out_from_a_real_prometheus(
    cluster: FakeCluster, start_pod: StartPod, start_prometheus: StartPrometheus
) -> None:
    """The same loop with the real adapter: engine pods -> Prometheus -> PrometheusSource."""
    pods = [
        start_pod(VLLM_V1, namespace=NS, llmd=NAME, pod=f"{NAME}-{i}").set_state(
            kv_usage=0.9, running=30, waiting=1, num_gpu_blocks=3800
        )
        for i in range(2)
    ]
    prometheus = start_prometheus(list(iter_targets(pods)))
    source = PrometheusSource(prometheus.url, window_s=10, timeout_s=5.0)
    async with operator_with_autoscaler(cluster, settings(), source) as running:
        await cluster.create(LLMD, llmd(SPEC))
        # 0.9 KV usage on 2 replicas at target 0.5 -> 4 replicas
        await wait_for(lambda: deployment_replicas(cluster) == 4, timeout_s=30)
        (event,) = await wait_for(lambda: cluster.events(NS, "KvDemand"))
        assert "2 -> 4" in event["message"]
        # 4 replicas, 2 pods report: partial data, the count holds (no scale-down on it).
        # An earlier tick may have seen "1/2" (one target not scraped yet): wait for the 4.
        await wait_for(
            lambda: (
                (c := condition(cluster, "MetricsAvailable"))
                and c["reason"] == "SignalsPartial"
                and c["message"] == "2/4 pods reporting"
            )
        )
        assert obj(cluster)["spec"]["replicas"] == 4
        signals = autoscaler_status(cluster)["signals"]
        assert signals["numGpuBlocks"] == 3800
        assert signals["kvUsage"] == pytest.approx(0.9)
        queries = running.metrics.registry.get_sample_value("kvscale_signals_queries_per_cycle")
        assert queries is not None and queries > 0
