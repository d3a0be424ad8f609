"""Pure builders: a `Workload` in, Kubernetes object dicts out (deterministic, no I/O).

The dicts are server-side-apply configurations: they contain exactly the fields kvscale owns.
Anything not listed here (e.g. fields another controller or a GitOps tool sets) is left alone
by the API server when kvscale applies.
"""

from __future__ import annotations

from typing import Any

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

SHM_VOLUME = "dshm"  # NCCL needs a large /dev/shm for tensor parallelism across GPUs


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


def build_affinity(workload: Workload) -> Obj:
    """Require a node whose GPU product label is one of the selected GPU type's values."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": workload.gpu_label_key,
                                "operator": "In",
                                "values": list(workload.gpu_label_values),
                            }
                        ]
                    }
                ]
            }
        }
    }


def build_tolerations(workload: Workload) -> list[Obj]:
    """GPU nodes are usually tainted `nvidia.com/gpu`; user tolerations follow."""
    gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    return [gpu, *(dict(items) for items in workload.tolerations)]


def build_container(workload: Workload) -> Obj:
    gpus = str(workload.gpus_per_replica)
    container: Obj = {
        "name": ENGINE_CONTAINER,
        "image": workload.image,
        "command": list(workload.command),
        "args": list(workload.args),
        "ports": [{"name": PORT_NAME, "containerPort": workload.port, "protocol": "TCP"}],
        "resources": {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}},
        **build_probes(workload),
        "lifecycle": {
            "preStop": {
                "exec": {"command": ["sleep", str(workload.drain.pre_stop_sleep_s)]},
            }
        },
    }
    if workload.gpus_per_replica > 1:
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    return container


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
    pod_labels = {**common_labels(workload.name), LABEL_LLMD: workload.name}
    pod_spec: Obj = {
        "containers": [build_container(workload)],
        "tolerations": build_tolerations(workload),
        "terminationGracePeriodSeconds": workload.drain.grace_period_s,
    }
    if workload.gpu_label_values:  # a catalog GPU without product labels cannot be pinned
        pod_spec["affinity"] = build_affinity(workload)
    if workload.node_selector:
        pod_spec["nodeSelector"] = dict(workload.node_selector)
    if workload.gpus_per_replica > 1:
        pod_spec["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
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
                    "annotations": build_pod_annotations(workload, pod_monitor),
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
