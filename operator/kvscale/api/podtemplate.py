"""`spec.runtime` (first-class pod settings) and `spec.template` (a pod-template overlay).

kvscale generates the engine pod; `spec.template` is merged onto it (ADR 0008). What kvscale
owns wins: the arguments it renders, the GPU resource, the labels it selects on, the engine
container's name, image, ports and probes, and the volumes and variables it adds from
`spec.runtime`. Fields it owns outright are absent from the overlay's schema; the rest are
checked by `template_conflicts`, which names the offending field, so `kvscale validate` and
the operator (condition + Event) refuse the same overlays.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal, NamedTuple

from pydantic import Field

from kvscale.api import owned
from kvscale.api.base import ApiModel, CelRule
from kvscale.api.podspec import (
    Affinity,
    ContainerSecurityContext,
    EmptyDirVolumeSource,
    EnvFromSource,
    EnvVar,
    LocalObjectReference,
    NodeSelectorTerm,
    ObjectName,
    PodSecurityContext,
    ResourceRequirements,
    Toleration,
    TopologySpreadConstraint,
    Volume,
    VolumeMount,
)

_MetaKey = Annotated[str, Field(min_length=1, max_length=316)]
_LabelValue = Annotated[str, Field(max_length=63)]
_AbsolutePath = Annotated[str, Field(min_length=2, max_length=4096, pattern=r"^/.*[^/]$")]

#: Startup window when spec.runtime.startupTimeoutSeconds is not set: download + load +
#: CUDA-graph capture of a large checkpoint.
DEFAULT_STARTUP_TIMEOUT_S = 1800


#: Engine-container fields kvscale owns (absent from the overlay schema) -> where to set them.
OWNED_CONTAINER_FIELDS: dict[str, str] = {
    "image": "spec.engine.image",
    "command": "spec.engine (the engine's entrypoint is rendered)",
    "args": "spec.engine.extraArgs",
    "ports": "spec.engine.port",
    "startupProbe": "spec.runtime.startupTimeoutSeconds",
    "readinessProbe": "nothing: kvscale probes the engine's health path",
    "livenessProbe": "nothing: kvscale probes the engine's health path",
    "lifecycle": "nothing: the preStop drain follows spec.slo and spec.workload",
}


class SecretKeyRef(ApiModel):
    """A key of a Secret in the LLMDeployment's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        default="token", description="Key holding the value."
    )


class ModelCache(ApiModel):
    """Where the engine keeps downloaded weights: an existing PVC or an inline emptyDir."""

    claim_name: ObjectName | None = Field(
        default=None,
        description="Existing PersistentVolumeClaim in the namespace (ReadWriteMany to share it).",
    )
    empty_dir: EmptyDirVolumeSource | None = Field(
        default=None, description="A per-pod scratch cache (re-downloads on every new pod)."
    )
    mount_path: _AbsolutePath = Field(
        default="/models", description="Mount path; HF_HOME is set to it."
    )
    read_only: bool = Field(
        default=False, description="Mount read-only (a pre-populated cache; set HF_HUB_OFFLINE)."
    )

    cel_rules = (
        CelRule(
            "(has(self.claimName) ? 1 : 0) + (has(self.emptyDir) ? 1 : 0) == 1",
            "exactly one of claimName, emptyDir must be set",
            "keep exactly one",
            "",
            lambda c: (
                None if (c.claim_name is None) != (c.empty_dir is None) else "both or neither"
            ),
        ),
        CelRule(
            "self.mountPath != '/dev/shm'",
            "mountPath /dev/shm is kvscale's shared-memory volume",
            "choose another mountPath, e.g. /models",
            "mountPath",
            lambda c: None if c.mount_path != owned.SHM_MOUNT_PATH else c.mount_path,
        ),
    )


class RuntimeSpec(ApiModel):
    """First-class settings of the engine pod for the common cases (ADR 0008)."""

    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key whose value becomes HF_TOKEN (gated Hugging Face models).",
    )
    model_cache: ModelCache | None = Field(
        default=None, description="Weights cache volume; HF_HOME points at it."
    )
    startup_timeout_seconds: int = Field(
        default=DEFAULT_STARTUP_TIMEOUT_S,
        description=(
            "Longest a replica may take to become healthy (download, load, compile); the"
            " startupProbe's failureThreshold × periodSeconds."
        ),
        ge=60,
        le=86400,
    )
    shm_size_bytes: int | None = Field(
        default=None,
        description=(
            "Size of the memory-backed /dev/shm; default 1 GiB per GPU of the replica (ADR 0008)."
            " Counted in the memory request."
        ),
        ge=67108864,
        le=2**40,
    )


class EngineContainerOverlay(ApiModel):
    """What the overlay may add to the engine container (the rest of it is kvscale's)."""

    name: Literal["engine"] = Field(
        default="engine", description="Must be kvscale's engine container, 'engine'."
    )
    env: list[EnvVar] = Field(default_factory=list, description="Variables.", max_length=128)
    env_from: list[EnvFromSource] = Field(
        default_factory=list, description="Variables from Secrets/ConfigMaps.", max_length=16
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, description="Mounts of spec.template.spec.volumes.", max_length=32
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="cpu/memory/ephemeral-storage override kvscale's defaults; not the GPU.",
    )
    security_context: ContainerSecurityContext | None = Field(
        default=None, description="Merged field by field over kvscale's default."
    )


class PodSpecOverlay(ApiModel):
    """Pod-level fields merged onto the engine pod kvscale generates."""

    containers: list[EngineContainerOverlay] = Field(
        default_factory=list, description="At most one entry: the engine container.", max_length=1
    )
    volumes: list[Volume] = Field(default_factory=list, description="Volumes.", max_length=32)
    service_account_name: ObjectName | None = Field(default=None, description="Service account.")
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, description="Registry credentials.", max_length=8
    )
    runtime_class_name: ObjectName | None = Field(
        default=None, description="RuntimeClass, e.g. nvidia."
    )
    priority_class_name: ObjectName | None = Field(default=None, description="PriorityClass.")
    node_selector: dict[str, _LabelValue] = Field(
        default_factory=dict, description="Node labels (the GPU label is kvscale's).", max_length=32
    )
    affinity: Affinity | None = Field(
        default=None, description="Merged with kvscale's GPU-type node affinity."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Appended to kvscale's.", max_length=32
    )
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list, description="Topology spread.", max_length=8
    )
    security_context: PodSecurityContext | None = Field(
        default=None, description="Merged field by field over kvscale's default."
    )


class PodMetadataOverlay(ApiModel):
    """Extra pod labels and annotations (kvscale's own keys are refused)."""

    labels: dict[str, _LabelValue] = Field(
        default_factory=dict, description="Pod labels.", max_length=64
    )
    annotations: dict[str, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict, description="Pod annotations.", max_length=64
    )


class PodTemplateOverlay(ApiModel):
    """A pod-template overlay merged onto the engine pod kvscale generates (ADR 0008)."""

    metadata: PodMetadataOverlay = Field(
        default_factory=PodMetadataOverlay, description="Labels and annotations."
    )
    spec: PodSpecOverlay = Field(default_factory=PodSpecOverlay, description="Pod fields.")


class Conflict(NamedTuple):
    """An overlay field kvscale refuses: its path under spec.template, the problem, the fix."""

    path: str
    message: str
    fix: str


def engine_overlay(template: PodTemplateOverlay) -> EngineContainerOverlay:
    """The overlay's engine container entry (empty when it has none)."""
    containers = template.spec.containers
    return containers[0] if containers else EngineContainerOverlay()


def template_conflicts(
    template: PodTemplateOverlay, runtime: RuntimeSpec, gpu_label_keys: frozenset[str]
) -> Iterator[Conflict]:
    """Each overlay field that kvscale owns or that cannot be merged, with the fix."""
    meta, pod = template.metadata, template.spec
    for key in meta.labels:
        if key in owned.OWNED_POD_LABELS:
            yield Conflict(
                f"metadata.labels.{key}", "is kvscale's selector/identity label", _DELETE
            )
    for key in meta.annotations:
        if key.startswith(owned.ANNOTATION_PREFIX) or key in owned.SCRAPE_ANNOTATIONS:
            yield Conflict(f"metadata.annotations.{key}", "is written by kvscale", _DELETE)
    for i, volume in enumerate(pod.volumes):
        if volume.name in owned.OWNED_VOLUMES:
            yield Conflict(
                f"spec.volumes[{i}].name", f"{volume.name} is kvscale's", "rename the volume"
            )
    names = frozenset(v.name for v in pod.volumes)
    yield from _engine_conflicts(engine_overlay(template), runtime, names)
    for key in pod.node_selector:
        if key in gpu_label_keys:
            yield Conflict(f"spec.nodeSelector.{key}", *_GPU_LABEL)
    node_affinity = pod.affinity.node_affinity if pod.affinity else None
    if node_affinity is not None:
        required = node_affinity.required_during_scheduling_ignored_during_execution
        for i, term in enumerate(required.node_selector_terms if required else ()):
            for path in _gpu_expressions(term, gpu_label_keys):
                yield Conflict(
                    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                    f".nodeSelectorTerms[{i}].{path}",
                    *_GPU_LABEL,
                )


_DELETE = "delete it"
_GPU_LABEL = (
    "selects the GPU type, which kvscale picks from spec.placement.gpuTypes",
    "delete it and list the GPU types in spec.placement.gpuTypes",
)


def _gpu_expressions(term: NodeSelectorTerm, gpu_label_keys: frozenset[str]) -> Iterator[str]:
    for j, expression in enumerate(term.match_expressions):
        if expression.key in gpu_label_keys:
            yield f"matchExpressions[{j}].key"


def _engine_conflicts(
    engine: EngineContainerOverlay, runtime: RuntimeSpec, volumes: frozenset[str]
) -> Iterator[Conflict]:
    where = "spec.containers[0]"
    owned_env = owned_env_names(runtime)
    for i, var in enumerate(engine.env):
        if var.name in owned_env:
            yield Conflict(
                f"{where}.env[{i}].name", f"{var.name} is set by kvscale from spec.runtime", _DELETE
            )
    owned_paths = {owned.SHM_MOUNT_PATH}
    if runtime.model_cache is not None:
        owned_paths.add(runtime.model_cache.mount_path)
    for i, mount in enumerate(engine.volume_mounts):
        if mount.name in owned.OWNED_VOLUMES:
            yield Conflict(f"{where}.volumeMounts[{i}].name", f"{mount.name} is kvscale's", _DELETE)
        elif mount.name not in volumes:
            yield Conflict(
                f"{where}.volumeMounts[{i}].name",
                f"no volume {mount.name} in spec.template.spec.volumes",
                "add the volume or fix the name",
            )
        if mount.mount_path.rstrip("/") in owned_paths:
            yield Conflict(
                f"{where}.volumeMounts[{i}].mountPath",
                f"{mount.mount_path} is mounted by kvscale",
                "use another path",
            )
    resources = engine.resources
    for kind, listed in (
        ("requests", resources.requests if resources else {}),
        ("limits", resources.limits if resources else {}),
    ):
        if owned.GPU_RESOURCE in listed:
            yield Conflict(
                f"{where}.resources.{kind}.{owned.GPU_RESOURCE}",
                "is kvscale's, from spec.placement.gpusPerReplica",
                "delete it and set spec.placement.gpusPerReplica",
            )


def owned_env_names(runtime: RuntimeSpec) -> frozenset[str]:
    """The engine variables kvscale sets for these runtime settings."""
    names = set()
    if runtime.hf_token_secret_ref is not None:
        names.add(owned.ENV_HF_TOKEN)
    if runtime.model_cache is not None:
        names.add(owned.ENV_HF_HOME)
    return frozenset(names)
