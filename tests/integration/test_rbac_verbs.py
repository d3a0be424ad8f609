"""The chart grants exactly the verbs the operator uses: recorded, not listed by hand.

The real operator (`run_operator`: leader election, kopf, reconcile, autoscaler) runs against
the fake API server, which records every request as the RBAC verb it needs (kube_fixture
`VerbUse`), plus the two checks the API server makes beyond the request's own verb: an apply
that creates its object is also authorized for `create`, and a child written with an
ownerReference that has `blockOwnerDeletion: true` needs `update` on the owner's `finalizers`
subresource (the OwnerReferencesPermissionEnforcement admission plugin).

The scenario walks every path that calls the API: a managed deployment whose model geometry
comes from a ConfigMap, scraped through a PodMonitor, scaled by the autoscaler through the
scale subresource, whose engines then hold fewer KV blocks than planned (the calibration
record); an adopted Deployment scaled through its own scale subresource; Events; the
election Lease. The chart rendered for the same settings (cluster scope) must grant
exactly that set: a verb granted but never used fails, and so does a verb used but not granted.

Namespace scope is not recorded here: kmock cannot serve `GET /api/v1/namespaces` (its path
parser takes `namespaces` for a namespace segment), which kopf lists and watches in that scope
(kopf's `namespace_observer`); that one rule of the chart comes from reading kopf, and the
workload rules are the same template in both scopes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import kmock
import pytest
from autoscale_fixture import ScriptedSource, collect_leaked_sessions, declare_pods
from kube_fixture import (
    DEPLOYMENTS,
    LLMD,
    ApiServerFake,
    FakeCluster,
    VerbUse,
    running_fake_cluster,
    wait_for,
)

from kvscale.controller.runtime import run_operator
from kvscale.controller.settings import (
    LeaderElectionSettings,
    PrometheusSettings,
    ReconcileSettings,
    ScrapeMode,
    ServerSettings,
    Settings,
)
from samples import llama8b_spec, llmd_object

helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NS, RELEASE_NS = "serving", "kvscale-system"
PROMETHEUS_URL = "http://prometheus.monitoring:9090"
CHART_VALUES = {"prometheus": {"url": PROMETHEUS_URL, "scrapeMode": "podmonitor"}}
SCALING = {
    "minReplicas": 1,
    "maxReplicas": 6,
    "targetKvUtilization": 0.5,
    "warmupSeconds": 0,
    "preemptionsPerSecondThreshold": 100,
}


def settings() -> Settings:
    return Settings(
        reconcile=ReconcileSettings(interval_s=1.0, scaling_interval_s=0.5, retry_delay_s=0.5),
        prometheus=PrometheusSettings(url=PROMETHEUS_URL, scrape_mode=ScrapeMode.POD_MONITOR),
        server=ServerSettings(metrics_port=0, health_port=0),
        leader_election=LeaderElectionSettings(
            lease_namespace=RELEASE_NS,
            identity="op-0",
            # Generous: the fake API server shares this test's event loop with the operator, so
            # a slow plan on a loaded machine delays its answers too (not so in a cluster).
            lease_duration_s=60.0,
            renew_deadline_s=40.0,
            retry_period_s=1.0,
        ),
    )


def chart_grants() -> set[VerbUse]:
    """(group, resource, verb) of every rule the chart's Roles and ClusterRoles hold."""
    import yaml

    chart = helm.Chart.load(str(resources_root() / "charts" / "kvscale"))
    chart.validate_schema(CHART_VALUES)
    rendered = chart.render(CHART_VALUES, name="kvscale", namespace=RELEASE_NS, is_install=True)
    grants: set[VerbUse] = set()
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj or obj["kind"] not in ("Role", "ClusterRole"):
                continue
            for rule in obj["rules"]:
                grants.update(
                    VerbUse(group, resource, verb)
                    for group in rule["apiGroups"]
                    for resource in rule["resources"]
                    for verb in rule["verbs"]
                )
    return grants


def resources_root() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def declare_extras(fake: ApiServerFake) -> None:
    """PodMonitors (the Prometheus Operator CRD is 'installed') on top of the default set."""
    fake.resources["monitoring.coreos.com/v1/podmonitors"] = kmock.ResourceInfo(
        kind="PodMonitor", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}
    )


def llama_config_json() -> str:
    path = resources.files("kvscale") / "data/catalog/models/meta-llama__Llama-3.1-8B-Instruct.json"
    return json.dumps(json.loads(path.read_text())["config"])


def legacy_deployment() -> dict[str, Any]:
    labels = {"app": "legacy"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "legacy-vllm", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
        "status": dict.fromkeys(("replicas", "readyReplicas", "availableReplicas"), 1),
    }


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with running_fake_cluster() as fake_cluster:
        declare_pods(fake_cluster)
        declare_extras(fake_cluster.fake)
        yield fake_cluster
    collect_leaked_sessions()


def calibration_of(cluster: FakeCluster, name: str) -> dict[str, Any]:
    obj = cluster.get(LLMD, NS, name) or {}
    return dict((obj.get("status") or {}).get("calibration") or {})


def replicas_of(cluster: FakeCluster, resource: str, name: str) -> int | None:
    obj = cluster.get(resource, NS, name) or {}
    value = (obj.get("spec") or {}).get("replicas")
    return None if value is None else int(value)


async def test_the_chart_grants_exactly_the_verbs_the_operator_uses(cluster: FakeCluster) -> None:
    config = {"name": "llama-config", "namespace": NS}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": config}
    configmap["data"] = {"config.json": llama_config_json()}
    await cluster.create("v1/configmaps", configmap)
    await cluster.create(DEPLOYMENTS, legacy_deployment())
    managed = llama8b_spec(
        model={"configMapRef": {"name": "llama-config"}, "uri": "/models/llama"},
        replicas=2,
        scaling=SCALING,
    )
    adopted = llama8b_spec(
        mode="adopt", targetRef={"name": "legacy-vllm"}, replicas=1, scaling=SCALING
    )
    source = ScriptedSource(demand_replicas=1.8)  # KV pressure: both scale out
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_operator(settings(), server_url=cluster.url, stop_flag=stop, metrics_source=source)
    )
    try:
        await cluster.create(LLMD, llmd_object("chat", NS, managed))
        await cluster.create(LLMD, llmd_object("legacy", NS, adopted))
        await wait_for(lambda: (replicas_of(cluster, DEPLOYMENTS, "chat") or 0) > 2, 30)
        try:
            await wait_for(lambda: (replicas_of(cluster, DEPLOYMENTS, "legacy-vllm") or 0) > 1, 30)
        except AssertionError:
            raise AssertionError((cluster.get(LLMD, NS, "legacy") or {}).get("status")) from None
        await wait_for(lambda: cluster.objects("monitoring.coreos.com/v1/podmonitors", NS))
        await wait_for(lambda: cluster.objects("v1/events", NS))
        # The engines report 10 % fewer KV blocks than planned: the overhead goes into the
        # calibration record in the release namespace (a merge patch; create when missing).
        planned = await wait_for(
            lambda: calibration_of(cluster, "chat").get("plannedNumBlocks"), 30
        )
        source.set(num_gpu_blocks=int(planned * 0.9), block_size_tokens=16)
        await wait_for(lambda: cluster.objects("v1/configmaps", RELEASE_NS), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)  # kopf's stop and the Lease release, on a busy machine
    used = cluster.fake.verbs_used
    granted = chart_grants()
    assert VerbUse("coordination.k8s.io", "leases", "patch") in used  # the scenario elected
    assert used - granted == set(), f"used but not granted: {sorted(used - granted)}"
    assert granted - used == set(), f"granted but never used: {sorted(granted - used)}"
