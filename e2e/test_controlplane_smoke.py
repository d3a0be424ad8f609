"""Smoke test of the e2e control plane: the behaviours the operator relies on, against a real
kube-apiserver, controller manager and scheduler, with kwok standing in for the kubelets."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from cluster import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    NODES_DIR,
    Cluster,
    existing_kubeconfig,
    load_node_manifests,
    read_versions,
)
from harness.kube import crd_established
from harness.kube import wait_for as poll_until

pytestmark = pytest.mark.e2e

WAIT_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25
FIELD_MANAGER = "kvscale-e2e-smoke"
TEST_GROUP = "smoke.e2e.kvscale.dev"

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = WAIT_TIMEOUT_S) -> T:
    """The harness's poll with this module's default timeout."""
    return poll_until(condition, what, timeout_s, POLL_INTERVAL_S)


@pytest.fixture
def api_client(cluster: Cluster) -> Iterator[ApiClient]:
    with cluster.new_api_client() as api:
        yield api


@pytest.fixture
def namespace(api_client: ApiClient) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(body=client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_server_reports_the_pinned_kubernetes_version(api_client: ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    pinned = read_versions().kubernetes
    if existing_kubeconfig() is not None:  # e.g. kind: same minor, its own patch release
        assert (info.major, info.minor) == ("1", "36")
        return
    assert (info.git_version, info.major, info.minor) == (pinned, "1", "36")


@pytest.mark.parametrize(
    ("product", "gpus_per_node"),
    [("NVIDIA-H100-80GB-HBM3", 8), ("NVIDIA-L40S", 4), ("NVIDIA-L4", 4)],
)
def test_fake_gpu_nodes_are_ready_with_labels_and_capacity(
    api_client: ApiClient, product: str, gpus_per_node: int
) -> None:
    listed = client.CoreV1Api(api_client).list_node(label_selector=f"{GPU_PRODUCT_LABEL}={product}")
    # The base nodes of e2e/nodes/ only: the scenario harness adds larger nodes of its own.
    base_names = {m["metadata"]["name"] for m in load_node_manifests(NODES_DIR)}
    nodes = [n for n in listed.items if n.metadata is not None and n.metadata.name in base_names]
    assert len(nodes) >= 2
    for node in nodes:
        assert node.metadata is not None and node.status is not None
        labels = node.metadata.labels or {}
        ready = {c.type: c.status for c in node.status.conditions or []}.get("Ready")
        assert ready == "True", node.metadata.name
        assert labels["type"] == "kwok"
        assert labels["nvidia.com/gpu.count"] == str(gpus_per_node)
        assert (node.status.allocatable or {})[GPU_RESOURCE] == str(gpus_per_node)
        assert (node.status.capacity or {})[GPU_RESOURCE] == str(gpus_per_node)


def gpu_deployment(name: str, replicas: int, product: str) -> dict[str, Any]:
    """A Deployment asking for one GPU per pod on one GPU product (kwok never runs the image)."""
    labels = {"app": name}
    container = {
        "name": "engine",
        "image": "kvscale/fake-engine:e2e",
        "resources": {"requests": {GPU_RESOURCE: "1"}, "limits": {GPU_RESOURCE: "1"}},
    }
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {GPU_PRODUCT_LABEL: product}, "containers": [container]},
            },
        },
    }


def list_pods_by_phase(api_client: ApiClient, namespace: str, app: str) -> dict[str, list[str]]:
    """Node names of the live pods of `app`, grouped by phase ("" for an unbound pod)."""
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"app={app}")
    by_phase: dict[str, list[str]] = {}
    for pod in pods.items:
        assert pod.metadata is not None and pod.spec is not None and pod.status is not None
        if pod.metadata.deletion_timestamp is None:
            phase = pod.status.phase or "Unknown"
            by_phase.setdefault(phase, []).append(pod.spec.node_name or "")
    return by_phase


def list_pod_scheduled_reasons(api_client: ApiClient, namespace: str, app: str) -> list[str]:
    """The PodScheduled reason of every live pod of `app` that the scheduler could not place."""
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"app={app}")
    reasons = []
    for pod in pods.items:
        assert pod.status is not None
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                reasons.append(condition.reason or "")
    return reasons


def sum_gpus_by_node(api_client: ApiClient, product: str) -> dict[str, int]:
    nodes = client.CoreV1Api(api_client).list_node(label_selector=f"{GPU_PRODUCT_LABEL}={product}")
    gpus_by_node = {}
    for node in nodes.items:
        assert node.metadata is not None and node.status is not None
        gpus_by_node[node.metadata.name or ""] = int((node.status.allocatable or {})[GPU_RESOURCE])
    return gpus_by_node


def test_gpu_deployment_is_scheduled_on_the_selected_product_and_capped_by_capacity(
    api_client: ApiClient, namespace: str
) -> None:
    l40s_gpus_by_node = sum_gpus_by_node(api_client, "NVIDIA-L40S")
    l40s_gpus = sum(l40s_gpus_by_node.values())
    apps = client.AppsV1Api(api_client)
    deployment = client.V1Deployment.from_dict(gpu_deployment("engine", 2, "NVIDIA-L40S"))
    assert deployment is not None
    apps.create_namespaced_deployment(namespace, deployment)

    def count_pods(phase: str) -> int:
        return len(list_pods_by_phase(api_client, namespace, "engine").get(phase, []))

    wait_for(lambda: count_pods("Running") == 2, "2 Running pods")
    assert set(list_pods_by_phase(api_client, namespace, "engine")["Running"]) <= set(
        l40s_gpus_by_node
    )

    # Scale through the scale subresource (what an autoscaler uses) past the L40S GPU supply:
    # the scheduler must place exactly as many pods as there are GPUs and hold back the rest.
    replicas = l40s_gpus + 1
    apps.patch_namespaced_deployment_scale("engine", namespace, {"spec": {"replicas": replicas}})
    wait_for(
        lambda: count_pods("Running") == l40s_gpus and count_pods("Pending") == 1,
        f"{l40s_gpus} Running + 1 Pending pods",
    )
    phases = list_pods_by_phase(api_client, namespace, "engine")
    assert set(phases["Running"]) <= set(l40s_gpus_by_node)
    assert phases["Pending"] == [""]
    reasons = wait_for(
        lambda: list_pod_scheduled_reasons(api_client, namespace, "engine"),
        "a PodScheduled=False condition",
    )
    assert reasons == ["Unschedulable"]
    scale = apps.read_namespaced_deployment_scale("engine", namespace)
    assert scale.spec is not None and scale.status is not None
    assert (scale.spec.replicas, scale.status.replicas) == (replicas, replicas)


def range_crd() -> dict[str, Any]:
    """A tiny CRD whose CEL rule demands min <= max (the operator's CRD uses the same mechanism)."""
    spec_schema = {
        "type": "object",
        "required": ["min", "max"],
        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.min <= self.max", "message": "min must not exceed max"}
        ],
    }
    return {
        "metadata": {"name": f"ranges.{TEST_GROUP}"},
        "spec": {
            "group": TEST_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("bounds", "accepted"),
    [({"min": 1, "max": 4}, True), ({"min": 2, "max": 2}, True), ({"min": 5, "max": 1}, False)],
)
def test_crd_cel_rule_is_enforced_by_the_apiserver(
    api_client: ApiClient, namespace: str, bounds: dict[str, int], accepted: bool
) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    crd = range_crd()
    crd_model = client.V1CustomResourceDefinition.from_dict(crd)
    assert crd_model is not None
    try:
        extensions.create_custom_resource_definition(crd_model)
    except ApiException as error:
        if error.status != 409:  # created by an earlier parameter of this test
            raise
    wait_for(lambda: crd_established(api_client, crd["metadata"]["name"]), "CRD Established")
    body = {
        "apiVersion": f"{TEST_GROUP}/v1",
        "kind": "Range",
        "metadata": {"name": "r"},
        "spec": bounds,
    }
    objects = client.CustomObjectsApi(api_client)
    if accepted:
        created = objects.create_namespaced_custom_object(
            TEST_GROUP, "v1", namespace, "ranges", body
        )
        assert isinstance(created, dict)
        assert created["spec"] == bounds
    else:
        with pytest.raises(ApiException) as rejected:
            objects.create_namespaced_custom_object(TEST_GROUP, "v1", namespace, "ranges", body)
        assert rejected.value.status == 422
        assert "min must not exceed max" in str(rejected.value.body)


def apply_config_map(
    api_client: ApiClient, namespace: str, manager: str, value: str, *, force: bool = False
) -> client.V1ConfigMap:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "plan", "namespace": namespace},
        "data": {"maxNumSeqs": value},
    }
    return client.CoreV1Api(api_client).patch_namespaced_config_map(
        "plan",
        namespace,
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def list_field_managers(config_map: client.V1ConfigMap) -> set[tuple[str | None, str | None]]:
    assert config_map.metadata is not None
    return {(m.manager, m.operation) for m in config_map.metadata.managed_fields or []}


def test_server_side_apply_records_managers_and_detects_conflicts(
    api_client: ApiClient, namespace: str
) -> None:
    applied = apply_config_map(api_client, namespace, FIELD_MANAGER, "64")
    owners = list_field_managers(applied)
    assert (FIELD_MANAGER, "Apply") in owners

    with pytest.raises(ApiException) as conflict:
        apply_config_map(api_client, namespace, "someone-else", "128")
    assert conflict.value.status == 409

    taken = apply_config_map(api_client, namespace, "someone-else", "128", force=True)
    assert taken.data == {"maxNumSeqs": "128"}
    assert ("someone-else", "Apply") in list_field_managers(taken)
