"""Pure builders: a `Workload` in, Kubernetes object dicts out (deterministic, no I/O).

The dicts are server-side-apply configurations: they contain exactly the fields kvscale owns.
Anything not listed here (e.g. fields another controller or a GitOps tool sets) is left alone
by the API server when kvscale applies.
"""

from __future__ import annotations

from typing import Any

from kvscale.controller import enginepod
from kvscale.controller.workload import (
    ANNOTATION_PLAN_HASH,
    ANNOTATION_SPEC_HASH,
    ENGINE_CONTAINER,
    GPU_RESOURCE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_LLMD,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    OWNER_API_VERSION,
    OWNER_KIND,
    PORT_NAME,
    Owner,
    Workload,
)
from kvscale.metrics.scrape import pod_monitor_metric_relabelings

Obj = dict[str, Any]


def selector_labels(name: str) -> dict[str, str]:
    """The immutable pod selector of every object kvscale builds for `name`."""
    return {LABEL_DEPLOYMENT: name}


def selector_string(name: str) -> str:
    """`selector_labels` as a label-selector string (status.selector for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {
        LABEL_NAME: "kvscale-engine",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: "engine",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: name,
    }


def owner_references(owner: Owner) -> list[Obj]:
    """Controller ownerReference: the garbage collector deletes the object with its owner."""
    return [
        {
            "apiVersion": OWNER_API_VERSION,
            "kind": OWNER_KIND,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _metadata(workload: Workload, annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {
        "name": workload.name,
        "namespace": workload.namespace,
        "labels": common_labels(workload.name),
        "ownerReferences": owner_references(workload.owner),
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def build_probes(workload: Workload) -> Obj:
    """Startup (long, for weight loading), readiness and liveness on the engine health path."""
    probes = workload.probes
    http_get = {"path": workload.health_path, "port": PORT_NAME}
    startup_failures = max(1, -(-probes.startup_timeout_s // probes.startup_period_s))
    return {
        "startupProbe": {
            "httpGet": dict(http_get),
            "periodSeconds": probes.startup_period_s,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": dict(http_get),
            "periodSeconds": probes.readiness_period_s,
            "failureThreshold": probes.readiness_failures,
        },
        "livenessProbe": {
            "httpGet": dict(http_get),
            "periodSeconds": probes.liveness_period_s,
            "failureThreshold": probes.liveness_failures,
        },
    }


def build_affinity(workload: Workload) -> Obj | None:
    """Require a node whose GPU product label is one of the selected GPU type's values (ANDed
    into the overlay's required terms); None for a catalog GPU without product labels."""
    gpu = (
        {"key": workload.gpu_label_key, "operator": "In", "values": list(workload.gpu_label_values)}
        if workload.gpu_label_values
        else None
    )
    return enginepod.merge_node_affinity(gpu, workload.pod)


def build_tolerations(workload: Workload) -> list[Obj]:
    """GPU nodes are usually tainted `nvidia.com/gpu`; user tolerations follow."""
    gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    return [gpu, *(dict(items) for items in workload.tolerations)]


def build_container(workload: Workload) -> Obj:
    """The engine container: kvscale's fields, then what the overlay may add (enginepod)."""
    pod = workload.pod
    container: Obj = {
        "name": ENGINE_CONTAINER,
        "image": workload.image,
        "command": list(workload.command),
        "args": list(workload.args),
        "ports": [{"name": PORT_NAME, "containerPort": workload.port, "protocol": "TCP"}],
        "env": enginepod.build_env(pod),
        "envFrom": enginepod.build_container_env_from(pod),
        "resources": enginepod.build_resources(pod, workload.gpus_per_replica),
        "volumeMounts": enginepod.build_volume_mounts(pod),
        "securityContext": enginepod.build_container_security_context(pod),
        **build_probes(workload),
        "lifecycle": {
            "preStop": {
                "exec": {"command": ["sleep", str(workload.drain.pre_stop_sleep_s)]},
            }
        },
    }
    return {k: v for k, v in container.items() if v != []}


def build_pod_annotations(workload: Workload, pod_monitor: bool) -> dict[str, str]:
    """Plan hash (a flag change is a rollout) and, without a PodMonitor, the scrape hints."""
    annotations = {ANNOTATION_PLAN_HASH: workload.plan_hash}
    if not pod_monitor:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(workload.port),
                "prometheus.io/path": workload.metrics_path,
            }
        )
    return annotations


def build_deployment(workload: Workload, *, pod_monitor: bool) -> Obj:
    """The engine Deployment: GPUs, placement, probes, drain; replicas from the workload."""
    extra_labels, extra_annotations = enginepod.overlay_metadata(workload.pod)
    pod_labels = {**extra_labels, **common_labels(workload.name), LABEL_LLMD: workload.name}
    pod_spec: Obj = {
        "containers": [build_container(workload)],
        "tolerations": build_tolerations(workload),
        "terminationGracePeriodSeconds": workload.drain.grace_period_s,
        "volumes": enginepod.build_volumes(workload.pod),
    }
    affinity = build_affinity(workload)
    if affinity:
        pod_spec["affinity"] = affinity
    if workload.node_selector:
        pod_spec["nodeSelector"] = dict(workload.node_selector)
    enginepod.apply_pod_overlay(pod_spec, workload.pod)
    annotations = {ANNOTATION_PLAN_HASH: workload.plan_hash}
    if workload.spec_hash:
        annotations[ANNOTATION_SPEC_HASH] = workload.spec_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(workload, annotations),
        "spec": {
            "replicas": workload.replicas,
            "selector": {"matchLabels": selector_labels(workload.name)},
            # Keep serving capacity during a rollout: a new replica must be Ready first.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": workload.probes.startup_timeout_s + 600,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        **extra_annotations,
                        **build_pod_annotations(workload, pod_monitor),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def build_service(workload: Workload) -> Obj:
    """ClusterIP Service in front of the engine's OpenAI-compatible HTTP port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(workload.name),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": workload.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_pdb(workload: Workload) -> Obj:
    """At most one replica voluntarily disrupted at a time (node drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(workload),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(workload.name)},
        },
    }


def build_pod_monitor(workload: Workload, interval_s: float = 15.0) -> Obj:
    """Prometheus Operator PodMonitor; copies the `llmd` pod label onto every series and keeps
    the engines' colon metric names (kvscale.metrics.scrape)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(workload),
        "spec": {
            "selector": {"matchLabels": selector_labels(workload.name)},
            "podMetricsEndpoints": [
                {
                    "port": PORT_NAME,
                    "path": workload.metrics_path,
                    "interval": f"{max(1, round(interval_s))}s",
                    "relabelings": [
                        {
                            "sourceLabels": [f"__meta_kubernetes_pod_label_{LABEL_LLMD}"],
                            "targetLabel": LABEL_LLMD,
                            "action": "replace",
                        }
                    ],
                    # restore vllm:/sglang: names escaped to `_` by OpenMetrics negotiation
                    "metricRelabelings": pod_monitor_metric_relabelings(),
                }
            ],
        },
    }


def build_objects(workload: Workload, *, pod_monitor: bool, scrape_interval_s: float) -> list[Obj]:
    """Everything a managed LLMDeployment owns, in apply order."""
    objects = [
        build_deployment(workload, pod_monitor=pod_monitor),
        build_service(workload),
        build_pdb(workload),
    ]
    if pod_monitor:
        objects.append(build_pod_monitor(workload, scrape_interval_s))
    return objects
