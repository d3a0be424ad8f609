"""The Kubernetes core/v1 pod fields an LLMDeployment's `spec.template` may set, as typed models.

A subset of core/v1, field for field (same names, same meaning), so a platform team can paste
from an existing Deployment. Typed rather than `x-kubernetes-preserve-unknown-fields`: the API
server and `kvscale validate` reject a misspelt field or a bad enum value instead of the
Deployment apply failing later (ADR 0008 lists what is left out and why). Volume sources are
the ones a serving pod uses (PVC, emptyDir, Secret, ConfigMap, CSI, hostPath, NFS); anything
else mounts through a PersistentVolumeClaim.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from kvscale.api.base import ApiModel, CelRule

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # DNS-1123 label
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: resource.Quantity as the API server parses it (k8s.io/apimachinery/pkg/api/resource).
_DECIMAL = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
QUANTITY_PATTERN = rf"^[+-]?{_DECIMAL}([KMGTPE]i|[numkMGTPE]|[eE][+-]?{_DECIMAL})?$"

VolumeName = Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)]


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and (len(value) > 64 or not re.fullmatch(QUANTITY_PATTERN, value)):
        raise PydanticCustomError(
            "quantity",
            "'{value}' is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)",
            {"value": value},
        )
    return value


#: int-or-string in the CRD (as core/v1 declares quantities); a string must parse.
Quantity = Annotated[int | str, AfterValidator(_check_quantity)]
ResourceList = dict[str, Quantity]
_Key = Annotated[str, Field(min_length=1, max_length=316)]
_Value = Annotated[str, Field(max_length=63)]
_Path = Annotated[str, Field(min_length=1, max_length=4096)]


def _one_of(*fields: str) -> CelRule:
    """The core/v1 rule that exactly one of `fields` (camelCase) is set."""
    cel = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"
    attrs = [_snake(f) for f in fields]

    def violation(obj: object) -> str | None:
        count = sum(getattr(obj, a) is not None for a in attrs)
        return None if count == 1 else f"{count} set"

    return CelRule(
        cel, f"exactly one of {', '.join(fields)} must be set", "keep exactly one", "", violation
    )


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the same namespace."""

    name: ObjectName = Field(description="Name of the object.")


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="The key.")
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class ObjectFieldSelector(ApiModel):
    """A field of the pod (downward API), e.g. metadata.name or status.podIP."""

    field_path: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Path of the field."
    )
    api_version: str | None = Field(default=None, description="Schema version.", max_length=32)


class ResourceFieldSelector(ApiModel):
    """A resource request or limit of a container (downward API)."""

    resource: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="e.g. limits.memory."
    )
    container_name: str | None = Field(default=None, description="Container.", max_length=63)
    divisor: Quantity | None = Field(default=None, description="Output unit.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from (exactly one source)."""

    secret_key_ref: KeySelector | None = Field(default=None, description="A Secret key.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A ConfigMap key.")
    field_ref: ObjectFieldSelector | None = Field(default=None, description="A pod field.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A container resource."
    )

    cel_rules = (_one_of("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"),)


class EnvVar(ApiModel):
    """An environment variable of the engine container."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=_ENV_NAME)] = Field(
        description="Variable name."
    )
    value: str | None = Field(default=None, description="Literal value.", max_length=32768)
    value_from: EnvVarSource | None = Field(default=None, description="Value from a source.")

    cel_rules = (
        CelRule(
            "!(has(self.value) && has(self.valueFrom))",
            "value and valueFrom are exclusive",
            "keep one of them",
            "valueFrom",
            lambda e: None if e.value is None or e.value_from is None else "both set",
        ),
    )


class OptionalReference(ApiModel):
    """A Secret or ConfigMap whose keys all become environment variables."""

    name: ObjectName = Field(description="Name of the object.")
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as an environment variable."""

    prefix: str | None = Field(default=None, description="Prefix for each name.", max_length=253)
    config_map_ref: OptionalReference | None = Field(default=None, description="A ConfigMap.")
    secret_ref: OptionalReference | None = Field(default=None, description="A Secret.")

    cel_rules = (_one_of("configMapRef", "secretRef"),)


class VolumeMount(ApiModel):
    """Where a pod volume appears in the engine container."""

    name: VolumeName = Field(description="Volume name (spec.template.spec.volumes).")
    mount_path: _Path = Field(description="Absolute path in the container.")
    sub_path: str | None = Field(
        default=None, description="Sub-path of the volume.", max_length=4096
    )
    read_only: bool | None = Field(default=None, description="Mount read-only.")


class ResourceRequirements(ApiModel):
    """Requests and limits of the engine container (the GPU count is kvscale's)."""

    requests: ResourceList = Field(default_factory=dict, description="Requests.", max_length=16)
    limits: ResourceList = Field(default_factory=dict, description="Limits.", max_length=16)


class Capabilities(ApiModel):
    """Linux capabilities to add or drop."""

    add: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, description="Added.", max_length=64
    )
    drop: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, description="Dropped.", max_length=64
    )


class SeccompProfile(ApiModel):
    """The seccomp profile applied to the container(s)."""

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = Field(description="Profile kind.")
    localhost_profile: str | None = Field(
        default=None, description="Profile file on the node (type Localhost).", max_length=4096
    )


class _RunAs(ApiModel):
    run_as_user: int | None = Field(default=None, description="UID.", ge=0, le=2147483647)
    run_as_group: int | None = Field(default=None, description="GID.", ge=0, le=2147483647)
    run_as_non_root: bool | None = Field(
        default=None, description="The kubelet refuses to start the container as UID 0."
    )
    seccomp_profile: SeccompProfile | None = Field(default=None, description="Seccomp profile.")


class ContainerSecurityContext(_RunAs):
    """The engine container's security context (merged field by field over kvscale's)."""

    allow_privilege_escalation: bool | None = Field(default=None, description="no_new_privs off.")
    privileged: bool | None = Field(default=None, description="Run privileged.")
    read_only_root_filesystem: bool | None = Field(default=None, description="Read-only root.")
    capabilities: Capabilities | None = Field(default=None, description="Capabilities.")


class PodSecurityContext(_RunAs):
    """The pod's security context (merged field by field over kvscale's)."""

    fs_group: int | None = Field(
        default=None, description="Group owning mounted volumes.", ge=0, le=2147483647
    )
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = Field(
        default=None, description="When to change volume ownership."
    )
    supplemental_groups: list[Annotated[int, Field(ge=0, le=2147483647)]] = Field(
        default_factory=list, description="Extra groups.", max_length=32
    )


class KeyToPath(ApiModel):
    """A key of a Secret or ConfigMap projected to a file."""

    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="The key.")
    path: _Path = Field(description="Relative file path.")
    mode: int | None = Field(default=None, description="File mode.", ge=0, le=511)


class EmptyDirVolumeSource(ApiModel):
    """A scratch directory that lives as long as the pod."""

    medium: Literal["", "Memory"] | None = Field(default=None, description="'' or Memory.")
    size_limit: Quantity | None = Field(default=None, description="Size limit.")


class PersistentVolumeClaimVolumeSource(ApiModel):
    """An existing PersistentVolumeClaim in the same namespace."""

    claim_name: ObjectName = Field(description="Claim name.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")


class SecretVolumeSource(ApiModel):
    """A Secret's keys as files."""

    secret_name: ObjectName = Field(description="Secret name.")
    items: list[KeyToPath] = Field(default_factory=list, description="Keys.", max_length=64)
    default_mode: int | None = Field(default=None, description="File mode.", ge=0, le=511)
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class ConfigMapVolumeSource(ApiModel):
    """A ConfigMap's keys as files."""

    name: ObjectName = Field(description="ConfigMap name.")
    items: list[KeyToPath] = Field(default_factory=list, description="Keys.", max_length=64)
    default_mode: int | None = Field(default=None, description="File mode.", ge=0, le=511)
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class CSIVolumeSource(ApiModel):
    """An inline CSI volume (e.g. an object-store or model-cache driver)."""

    driver: Annotated[str, Field(min_length=1, max_length=63)] = Field(description="CSI driver.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")
    fs_type: str | None = Field(default=None, description="Filesystem type.", max_length=63)
    volume_attributes: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, description="Driver attributes.", max_length=64
    )
    node_publish_secret_ref: LocalObjectReference | None = Field(
        default=None, description="Secret passed to the driver."
    )


class HostPathVolumeSource(ApiModel):
    """A node directory (refused by Pod Security baseline; for single-tenant GPU nodes)."""

    path: _Path = Field(description="Path on the node.")
    type: (
        Literal[
            "",
            "DirectoryOrCreate",
            "Directory",
            "FileOrCreate",
            "File",
            "Socket",
            "CharDevice",
            "BlockDevice",
        ]
        | None
    ) = Field(default=None, description="What must exist at path.")


class NFSVolumeSource(ApiModel):
    """An NFS export."""

    server: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Server.")
    path: _Path = Field(description="Exported path.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")


class Volume(ApiModel):
    """A pod volume (exactly one source)."""

    name: VolumeName = Field(description="Volume name.")
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = Field(
        default=None, description="An existing claim."
    )
    empty_dir: EmptyDirVolumeSource | None = Field(default=None, description="Scratch space.")
    secret: SecretVolumeSource | None = Field(default=None, description="A Secret.")
    config_map: ConfigMapVolumeSource | None = Field(default=None, description="A ConfigMap.")
    csi: CSIVolumeSource | None = Field(default=None, description="An inline CSI volume.")
    host_path: HostPathVolumeSource | None = Field(default=None, description="A node path.")
    nfs: NFSVolumeSource | None = Field(default=None, description="An NFS export.")

    cel_rules = (
        _one_of(
            "persistentVolumeClaim", "emptyDir", "secret", "configMap", "csi", "hostPath", "nfs"
        ),
    )


class NodeSelectorRequirement(ApiModel):
    """A node label (or field) expression."""

    key: _Key = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="Operator."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, description="Values.", max_length=64
    )


class NodeSelectorTerm(ApiModel):
    """Expressions that must all hold (terms of a list are ORed)."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, description="Label expressions.", max_length=32
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, description="Field expressions.", max_length=32
    )


class NodeSelector(ApiModel):
    """Node selector terms, ORed."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        description="Terms.", min_length=1, max_length=16
    )


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: int = Field(description="Weight.", ge=1, le=100)
    preference: NodeSelectorTerm = Field(description="The preferred term.")


class NodeAffinity(ApiModel):
    """Node affinity; kvscale ANDs its GPU-type expression into every required term."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Hard requirement."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, description="Soft preferences.", max_length=16
    )


class LabelSelectorRequirement(ApiModel):
    """A label expression of a label selector."""

    key: _Key = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="Operator.")
    values: list[_Value] = Field(default_factory=list, description="Values.", max_length=64)


class LabelSelector(ApiModel):
    """A label selector."""

    match_labels: dict[str, _Value] = Field(
        default_factory=dict, description="Labels.", max_length=32
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Expressions.", max_length=32
    )


class PodAffinityTerm(ApiModel):
    """Pods (by label) whose topology domain this pod must share or avoid."""

    label_selector: LabelSelector | None = Field(default=None, description="Which pods.")
    namespaces: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, description="Namespaces.", max_length=32
    )
    namespace_selector: LabelSelector | None = Field(default=None, description="Namespaces.")
    topology_key: _Key = Field(description="Node label of the topology domain.")


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(description="Weight.", ge=1, le=100)
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, description="Hard terms.", max_length=16
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, description="Soft terms.", max_length=16
    )


class Affinity(ApiModel):
    """Scheduling affinity, merged with kvscale's GPU-type node affinity."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Anti-affinity.")


class Toleration(ApiModel):
    """A pod toleration (the Kubernetes core/v1 Toleration fields)."""

    key: str | None = Field(
        default=None, description="Taint key; empty matches all keys.", max_length=316
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for Equal.", max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated.", ge=0, le=31536000
    )

    cel_rules = (
        CelRule(
            rule="self.operator != 'Exists' || !has(self.value)",
            message="value must be empty when operator is Exists",
            fix="delete value or use operator Equal",
            field="value",
            violation=lambda t: None if t.operator != "Exists" or t.value is None else "value set",
        ),
    )


class TopologySpreadConstraint(ApiModel):
    """Spread replicas over a topology (zones, nodes, racks)."""

    max_skew: int = Field(description="Largest allowed imbalance.", ge=1, le=1000)
    topology_key: _Key = Field(description="Node label of the domain.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="Hard or soft."
    )
    label_selector: LabelSelector | None = Field(default=None, description="Pods counted.")
    min_domains: int | None = Field(default=None, description="Minimum domains.", ge=1, le=1000)
    match_label_keys: list[_Key] = Field(
        default_factory=list, description="Pod label keys added to the selector.", max_length=16
    )
