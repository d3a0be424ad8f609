"""Scenario 8: adopt mode on an existing Deployment (examples/06-*.yaml, applied as a team would).

kvscale must plan it, report Adopted/Ready, set only its replicas (through the scale
subresource, following the LLMDeployment's spec.replicas), never own it, and leave it running
when the LLMDeployment is deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.kube import create_llmd, get_llmd, has_condition, kubectl, wait_for
from harness.scenario import READY_TIMEOUT_S, wait_replicas

pytestmark = pytest.mark.e2e

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / name).read_text(encoding="utf-8"))
    return doc


def test_adopted_deployment_is_planned_scaled_and_never_owned(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    target, llmd = load("06-adopt-target-deployment.yaml"), load("06-adopt-existing.yaml")
    name, target_name = llmd["metadata"]["name"], target["metadata"]["name"]
    # docs/operator-autoscaling.md: adopted pods carry `llmd: <name>` so Prometheus groups them
    target["spec"]["template"]["metadata"]["labels"]["llmd"] = name
    apps = client.AppsV1Api(api)
    kubectl(
        e2e.cluster.kubeconfig_path,
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(target),
    )
    wait_replicas(api, namespace, target_name, lambda n: n == 1, "the team's Deployment", 60)
    before = apps.read_namespaced_deployment(target_name, namespace)
    create_llmd(api, namespace, llmd)

    def adopted() -> dict[str, Any] | None:
        obj = get_llmd(api, namespace, name)
        ok = has_condition(obj, "Adopted", "True") and has_condition(obj, "Ready", "True")
        return obj if ok and has_condition(obj, "MetricsAvailable", "True") else None

    obj = wait_for(adopted, "Adopted, Ready and metrics read", READY_TIMEOUT_S)
    assert obj["status"]["selectedGpuType"] == "l40s"
    assert obj["status"]["autoscaler"]["act"] is False  # scaling.mode: recommend
    kubectl(e2e.cluster.kubeconfig_path, "-n", namespace, "scale", "llmd", name, "--replicas=2")
    wait_replicas(api, namespace, target_name, lambda n: n == 2, "adopted scaled to 2", 60)
    after = apps.read_namespaced_deployment(target_name, namespace)
    assert not after.metadata.owner_references
    assert (
        after.spec.template.spec.containers[0].args == before.spec.template.spec.containers[0].args
    )
    assert after.spec.template.metadata.annotations == before.spec.template.metadata.annotations
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "kvscale.dev", "v1alpha1", namespace, "llmdeployments", name
    )

    def llmd_gone() -> bool:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "kvscale.dev", "v1alpha1", namespace, "llmdeployments"
        )["items"]
        return not items

    wait_for(llmd_gone, "LLMDeployment deleted", 60)
    survivor = apps.read_namespaced_deployment(target_name, namespace)
    assert survivor.metadata.deletion_timestamp is None
    assert survivor.spec.replicas == 2
