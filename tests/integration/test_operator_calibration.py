"""Live KV calibration inside the running kopf operator, against the fake API server.

Engines that report 10 % fewer KV blocks than planned, through a real Prometheus and the real
adapter → status shows planned vs live, KvCalibrated names the drift (and a Warning Event),
the overhead lands in the calibration ConfigMap, the deployment re-plans from it, and a second
LLMDeployment of the same tuple plans from it at once. A pool that stops being reported
(scripted source) leaves calibration as it was.
"""

from __future__ import annotations

import json
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
from kube_fixture import LLMD, FakeCluster, wait_for
from promfixture import VLLM_V1, StartPod, StartPrometheus, iter_targets

from kvscale.api.convert import plan_deployment
from kvscale.api.models import LLMDeploymentSpec
from kvscale.controller.settings import (
    CalibrationSettings,
    LeaderElectionSettings,
    ReconcileSettings,
    ServerSettings,
    Settings,
)
from kvscale.metrics import PrometheusSource
from samples import llama8b_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NS = "serving"
CONFIGMAPS = "v1/configmaps"
RECORD = CalibrationSettings(namespace="kvscale-system", configmap="kvscale-calibration")
SPEC: dict[str, Any] = llama8b_spec(
    "l40s", replicas=1, scaling={"mode": "recommend"}, rollout={"enabled": False}
)
SHORT_FRACTION = 0.9


def settings() -> Settings:
    return Settings(
        reconcile=ReconcileSettings(interval_s=1.0, scaling_interval_s=0.5, retry_delay_s=0.5),
        server=ServerSettings(metrics_port=0, health_port=0),
        leader_election=LeaderElectionSettings(enabled=False),
        calibration=RECORD,
    )


def llmd(name: str) -> dict[str, Any]:
    return llmd_object(name, NS, SPEC)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with cluster_with_pods() as fake_cluster:
        yield fake_cluster


def status_of(cluster: FakeCluster, name: str) -> dict[str, Any]:
    return dict((cluster.get(LLMD, NS, name) or {}).get("status") or {})


def condition(cluster: FakeCluster, name: str, kind: str) -> dict[str, Any]:
    found = [c for c in status_of(cluster, name).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


async def test_engines_short_of_the_plan_calibrate_it_and_the_next_deployment(
    cluster: FakeCluster, start_pod: StartPod, start_prometheus: StartPrometheus
) -> None:
    (modelled,) = plan_deployment(LLMDeploymentSpec.model_validate(SPEC)).plans
    live_blocks = int(modelled.num_blocks * SHORT_FRACTION)
    pod = start_pod(VLLM_V1, namespace=NS, llmd="chat", pod="chat-0").set_state(
        kv_usage=0.2, running=2, num_gpu_blocks=live_blocks, block_size=16
    )
    prometheus = start_prometheus(list(iter_targets([pod])))
    source = PrometheusSource(prometheus.url, window_s=10, timeout_s=5.0)
    async with operator_with_autoscaler(cluster, settings(), source):
        await cluster.create(LLMD, llmd("chat"))
        (event,) = await wait_for(lambda: cluster.events(NS, "KvDrift"), timeout_s=30)
        assert event["type"] == "Warning"
        assert f"is 10.0% below the plan's {modelled.num_blocks:,} blocks" in event["message"]
        record = cluster.get(CONFIGMAPS, RECORD.namespace, RECORD.configmap)
        assert record is not None
        ((record_key, raw),) = record["data"].items()
        entry = json.loads(raw)
        assert entry["key"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
        assert entry["liveNumBlocks"] == live_blocks
        # the reconcile re-plans from the record: planned = live, the condition says so
        calibrated = await wait_for(
            lambda: (
                (c := status_of(cluster, "chat").get("calibration") or {})
                and c.get("nonKvSource") == "observed"
                and c.get("liveNumBlocks") == c.get("plannedNumBlocks")
                and c
            ),
            timeout_s=30,
        )
        assert calibrated["recordKey"] == record_key
        assert calibrated["plannedNumBlocks"] == live_blocks
        assert calibrated["liveKvTokens"] == live_blocks * 16 == calibrated["plannedKvTokens"]
        assert calibrated["modelledKvTokens"] == modelled.kv_cache_tokens
        assert calibrated["impliedNonKvBytes"] == entry["observedNonKvBytes"]
        matched = await wait_for(
            lambda: (
                (c := condition(cluster, "chat", "KvCalibrated")) and c["status"] == "True" and c
            )
        )
        assert matched["reason"] == "LivePoolMatchesPlan"
        assert "planned from the non-KV overhead observed live" in matched["message"]
        (plan,) = status_of(cluster, "chat")["plans"]
        assert plan["safeConcurrency"] <= modelled.safe_concurrency
        assert status_of(cluster, "chat")["safeConcurrency"] == plan["safeConcurrency"]
        # a second deployment of the same tuple plans from the record before any engine runs
        await cluster.create(LLMD, llmd("chat-2"))
        second = await wait_for(
            lambda: (p := status_of(cluster, "chat-2").get("plans")) and p[0], timeout_s=30
        )
        assert second["observedNonKvBytes"] == entry["observedNonKvBytes"]
        assert second["numBlocks"] == live_blocks
        assert second["modelledKvCacheTokens"] == modelled.kv_cache_tokens
        print("\n--- calibrated ---\n" + describe(cluster, NS, "chat"))
        assert len(cluster.events(NS, "KvDrift")) == 1  # recorded once, not on every tick


async def test_a_pool_that_stops_being_reported_leaves_calibration_unchanged(
    cluster: FakeCluster,
) -> None:
    (modelled,) = plan_deployment(LLMDeploymentSpec.model_validate(SPEC)).plans
    source = ScriptedSource()
    source.set(kv_usage_frac=0.2, num_gpu_blocks=modelled.num_blocks, block_size_tokens=16)
    async with operator_with_autoscaler(cluster, settings(), source):
        await cluster.create(LLMD, llmd("chat"))
        await wait_for(
            lambda: condition(cluster, "chat", "KvCalibrated").get("status") == "True",
            timeout_s=30,
        )
        before = status_of(cluster, "chat")["calibration"]
        assert before["driftFraction"] == 0
        source.set(num_gpu_blocks=None, block_size_tokens=None)  # missing / NaN in the adapter
        ticks = source.fetches
        await wait_for(lambda: source.fetches >= ticks + 4, timeout_s=30)
        after = status_of(cluster, "chat")["calibration"]
        assert after["observedTime"] == before["observedTime"]
        assert after["liveNumBlocks"] == modelled.num_blocks
        assert condition(cluster, "chat", "KvCalibrated")["status"] == "True"
        assert cluster.get(CONFIGMAPS, RECORD.namespace, RECORD.configmap) is None
