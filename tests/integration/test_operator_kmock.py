"""The real kopf operator against a fake API server over HTTP (kmock + kube_fixture).

create → Deployment/Service/PDB with the planned args and GPU placement; spec edit → new pod
template; invalid spec → condition + Warning Event with the last good workload untouched;
delete → children garbage-collected through ownerReferences; restart → same objects, no
duplicates. Expected args come from `plan_deployment` on the same spec (the planner is tested
elsewhere; here we test that the operator deploys exactly what was planned).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kube_fixture import (
    DEPLOYMENTS,
    LLMD,
    FakeCluster,
    running_fake_cluster,
    wait_for,
)

from kvscale.api.convert import plan_deployment
from kvscale.api.models import LLMDeploymentSpec
from kvscale.capacity import find_gpu
from kvscale.controller.runtime import run_operator
from kvscale.controller.settings import (
    LeaderElectionSettings,
    ReconcileSettings,
    ServerSettings,
    Settings,
)
from kvscale.controller.telemetry import OperatorMetrics
from samples import llama8b_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NS = "serving"
NAME = "chat"
SPEC: dict[str, Any] = llama8b_spec(
    placement={"gpuTypes": ["l40s", "h100_sxm_80gb"], "gpusPerReplica": 1}, replicas=2
)


def llmd(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": copy.deepcopy(spec),
    }


def settings() -> Settings:
    return Settings(
        reconcile=ReconcileSettings(interval_s=1.0, retry_delay_s=0.5),
        server=ServerSettings(metrics_port=0, health_port=0),
        leader_election=LeaderElectionSettings(enabled=False),
    )


@dataclass
class Running:
    cluster: FakeCluster
    metrics: OperatorMetrics


@contextlib.asynccontextmanager
async def operator(cluster: FakeCluster) -> AsyncIterator[Running]:
    stop, ready = asyncio.Event(), asyncio.Event()
    metrics = OperatorMetrics()
    task = asyncio.create_task(
        run_operator(
            settings(), server_url=cluster.url, metrics=metrics, stop_flag=stop, ready_flag=ready
        )
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Running(cluster, metrics)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with running_fake_cluster() as fake_cluster:
        yield fake_cluster


def deployment(cluster: FakeCluster) -> dict[str, Any] | None:
    return cluster.get(DEPLOYMENTS, NS, NAME)


def condition(cluster: FakeCluster, kind: str) -> dict[str, Any] | None:
    obj = cluster.get(LLMD, NS, NAME) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind]
    return found[0] if found else None


def engine_container(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def expected_args(spec: dict[str, Any]) -> list[str]:
    return list(plan_deployment(LLMDeploymentSpec.model_validate(spec)).engine_args)


async def test_create_runs_the_planned_workload(cluster: FakeCluster) -> None:
    async with operator(cluster):
        created = await cluster.create(LLMD, llmd(SPEC))
        dep = await wait_for(lambda: deployment(cluster))
        plan = plan_deployment(LLMDeploymentSpec.model_validate(SPEC))
        assert plan.selected_gpu_type is not None
        container = engine_container(dep)
        assert container["args"] == list(plan.engine_args)
        assert container["command"] == list(plan.engine_command)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        expression = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert expression["values"] == list(find_gpu(plan.selected_gpu_type).label_values)
        assert dep["spec"]["replicas"] == 2
        # no PodMonitor CRD is served here, so the scrape hints are pod annotations
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        for resource in ("v1/services", "policy/v1/poddisruptionbudgets", DEPLOYMENTS):
            obj = await wait_for(lambda r=resource: cluster.get(r, NS, NAME))
            (owner,) = obj["metadata"]["ownerReferences"]
            assert owner["uid"] == created["metadata"]["uid"]
        ready = await wait_for(lambda: (condition(cluster, "Ready") or {}).get("status") == "True")
        assert ready
        status = cluster.get(LLMD, NS, NAME)["status"]  # type: ignore[index]
        assert status["selectedGpuType"] == plan.selected_gpu_type
        assert status["selector"] == f"kvscale.dev/deployment={NAME}"
        assert status["replicas"] == 2
        # every write of a child is a server-side apply owned by the kvscale field manager
        writes = cluster.writes(f"/deployments/{NAME}") + cluster.writes(f"/services/{NAME}")
        assert writes
        ssa = (
            "PATCH",
            {"fieldManager": "kvscale", "force": "true", "fieldValidation": "Strict"},
            "application/apply-patch+yaml",
        )
        assert all(write == ssa for write in writes)


async def test_spec_edit_rolls_the_pod_template(cluster: FakeCluster) -> None:
    async with operator(cluster):
        await cluster.create(LLMD, llmd(SPEC))
        before = await wait_for(lambda: deployment(cluster))
        edited = {**SPEC, "maxContextLength": 4096}
        want = expected_args(edited)
        assert want != engine_container(before)["args"]
        await cluster.patch(LLMD, NS, NAME, {"spec": {"maxContextLength": 4096}})
        after = await wait_for(
            lambda: (d := deployment(cluster)) and engine_container(d)["args"] == want and d
        )
        hash_key = "kvscale.dev/plan-hash"
        assert (
            after["spec"]["template"]["metadata"]["annotations"][hash_key]
            != before["spec"]["template"]["metadata"]["annotations"][hash_key]
        )
        await wait_for(lambda: cluster.events(NS, "PlanChanged"))


async def test_invalid_spec_reports_and_keeps_the_last_good_workload(
    cluster: FakeCluster,
) -> None:
    async with operator(cluster) as running:
        await cluster.create(LLMD, llmd(SPEC))
        good = copy.deepcopy(await wait_for(lambda: deployment(cluster)))
        await cluster.patch(
            LLMD,
            NS,
            NAME,
            {"spec": {"placement": {"gpuTypes": ["no-such-gpu"], "gpusPerReplica": 1}}},
        )
        planned = await wait_for(
            lambda: (c := condition(cluster, "Planned")) and c["status"] == "False" and c
        )
        assert planned["reason"] == "InvalidSpec"
        assert "gpuTypes" in planned["message"]
        (event,) = await wait_for(lambda: cluster.events(NS, "InvalidSpec"))
        assert event["type"] == "Warning"
        # a few timer reconciles later: the workload is the last good one, one Event only
        await wait_for(lambda: running.metrics.reconciles.labels("timer", "ok")._value.get() >= 2)
        current = deployment(cluster)
        assert current is not None
        assert current["spec"] == good["spec"]
        assert len(cluster.events(NS, "InvalidSpec")) == 1


async def test_delete_garbage_collects_the_children(cluster: FakeCluster) -> None:
    async with operator(cluster):
        await cluster.create(LLMD, llmd(SPEC))
        await wait_for(lambda: cluster.get("policy/v1/poddisruptionbudgets", NS, NAME))
        await cluster.delete(LLMD, NS, NAME)
        await wait_for(lambda: not cluster.objects(LLMD, NS))
        for resource in (DEPLOYMENTS, "v1/services", "policy/v1/poddisruptionbudgets"):
            await wait_for(lambda r=resource: not cluster.objects(r, NS))


async def test_restart_adopts_its_objects_without_duplicates(cluster: FakeCluster) -> None:
    async with operator(cluster):
        await cluster.create(LLMD, llmd(SPEC))
        first = copy.deepcopy(await wait_for(lambda: deployment(cluster)))
    async with operator(cluster) as running:
        await wait_for(lambda: running.metrics.reconciles.labels("resume", "ok")._value.get() >= 1)
        await wait_for(lambda: running.metrics.reconciles.labels("timer", "ok")._value.get() >= 1)
        for resource in (DEPLOYMENTS, "v1/services", "policy/v1/poddisruptionbudgets"):
            assert list(cluster.objects(resource, NS)) == [NAME]
        again = deployment(cluster)
        assert again is not None
        assert again["metadata"]["uid"] == first["metadata"]["uid"]  # not deleted and recreated
        assert again["spec"] == first["spec"]


async def test_adopt_scales_the_target_and_never_deletes_it(cluster: FakeCluster) -> None:
    existing = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "legacy-vllm", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "legacy"}},
            "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": []}},
        },
    }
    await cluster.create(DEPLOYMENTS, existing)
    adopt = {**SPEC, "mode": "adopt", "targetRef": {"name": "legacy-vllm"}, "replicas": 3}
    async with operator(cluster):
        await cluster.create(LLMD, llmd(adopt))
        await wait_for(
            lambda: (cluster.get(DEPLOYMENTS, NS, "legacy-vllm") or {})["spec"]["replicas"] == 3
        )
        adopted = await wait_for(lambda: condition(cluster, "Adopted"))
        assert adopted["status"] == "True"
        status = cluster.get(LLMD, NS, NAME)["status"]  # type: ignore[index]
        assert status["selector"] == "app=legacy"
        assert deployment(cluster) is None  # nothing of its own was created
        target = cluster.get(DEPLOYMENTS, NS, "legacy-vllm")
        assert target is not None
        assert "ownerReferences" not in target["metadata"]
        await cluster.delete(LLMD, NS, NAME)
        await wait_for(lambda: not cluster.objects(LLMD, NS))
        assert cluster.get(DEPLOYMENTS, NS, "legacy-vllm") is not None
