"""Small Kubernetes helpers for the scenarios: kubectl, polling, object and condition reads."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from cluster import read_versions

GROUP, VERSION, PLURAL = "kvscale.dev", "v1alpha1", "llmdeployments"
POLL_INTERVAL_S = 0.5

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition did not hold in time; the message says what was awaited and the last value."""


def find_kubectl() -> Path:
    """The kubectl built with the control plane (same cache rule as e2e/scripts/lib.sh)."""
    cache = os.environ.get("KVSCALE_E2E_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvscale-e2e"
    )
    return Path(cache) / "bin" / f"k8s-{read_versions().kubernetes}" / "kubectl"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    """Run kubectl against the e2e cluster; raise with its stderr when it fails."""
    result = subprocess.run(
        [str(find_kubectl()), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def wait_for(
    condition: Callable[[], T], what: str, timeout_s: float, interval_s: float = POLL_INTERVAL_S
) -> T:
    """Poll until condition() is truthy and return it; raise WaitTimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def crd_established(api: ApiClient, name: str) -> bool:
    """The CRD reports Established=True (its kind is served)."""
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    conditions = crd.status.conditions if crd.status is not None else None
    return any(c.type == "Established" and c.status == "True" for c in conditions or [])


def get_llmd(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def list_llmds(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    result = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    return list(result.get("items") or [])


def create_llmd(api: ApiClient, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, dict(body)
    )
    return obj


def patch_llmd(
    api: ApiClient, namespace: str, name: str, patch: Mapping[str, Any]
) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, dict(patch)
    )
    return obj


def condition_of(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition of type `kind`, or None."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def has_condition(obj: Mapping[str, Any], kind: str, status: str, reason: str = "") -> bool:
    condition = condition_of(obj, kind)
    if condition is None or condition.get("status") != status:
        return False
    return not reason or condition.get("reason") == reason


def deployment_replicas(api: ApiClient, namespace: str, name: str) -> tuple[int, int]:
    """(spec.replicas, readyReplicas) of a Deployment; (-1, -1) while it does not exist."""
    try:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return -1, -1
        raise
    ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
    return int(deployment.spec.replicas or 0), int(ready)


def events_of(api: ApiClient, namespace: str, name: str) -> list[Any]:
    """Core Events whose involved object is `name` in `namespace` (oldest first)."""
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return sorted(events.items, key=lambda e: str(e.last_timestamp or e.event_time or ""))


def running_pods(api: ApiClient, namespace: str, selector: str) -> list[Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if p.status is not None
        and p.status.phase == "Running"
        and p.metadata is not None
        and p.metadata.deletion_timestamp is None
    ]


def pods_not_running(api: ApiClient, namespace: str) -> dict[str, str]:
    """Each pod that is not Running, with the scheduler's or kubelet's last word on it."""
    found: dict[str, str] = {}
    for pod in client.CoreV1Api(api).list_namespaced_pod(namespace).items:
        if pod.status.phase == "Running":
            continue
        words = [
            f"{c.type}={c.status} {c.reason or ''} {c.message or ''}".strip()
            for c in pod.status.conditions or []
        ]
        found[pod.metadata.name] = f"{pod.status.phase} on {pod.spec.node_name}: {'; '.join(words)}"
    return found


def node_labels(api: ApiClient, names: Sequence[str]) -> dict[str, dict[str, str]]:
    nodes = client.CoreV1Api(api).list_node().items
    return {
        n.metadata.name: dict(n.metadata.labels or {})
        for n in nodes
        if n.metadata is not None and n.metadata.name in names
    }
