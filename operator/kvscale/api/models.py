"""`LLMDeployment` spec (kvscale.dev/v1alpha1) as pydantic models: the single source of the CRD.

Every field carries its description, bounds and default here; `kvscale.api.crd` turns these
models into the CRD's structural schema, so `kubectl explain`, the API server and
`kvscale validate` all read the same definitions. Units are in the field names.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from kvscale.api.base import CROSS_FIELD_ERROR, ApiModel, CelRule, ordered_rule
from kvscale.api.engine_spec import EngineSpec, KvCacheSpec
from kvscale.api.podspec import Toleration
from kvscale.api.podtemplate import PodTemplateOverlay, RuntimeSpec, template_conflicts
from kvscale.api.policy import RolloutSpec, ScalingSpec
from kvscale.api.vocabulary import API_GROUP, API_VERSION, KIND, PLURAL, SHORT_NAMES, SINGULAR
from kvscale.capacity import CapacityInputError, find_gpu

__all__ = ["API_GROUP", "API_VERSION", "KIND", "PLURAL", "SHORT_NAMES", "SINGULAR"]  # re-exported

#: The node label that carries the GPU product (NVIDIA GPU feature discovery).
DEFAULT_GPU_LABEL_KEY = "nvidia.com/gpu.product"

Quantization = Literal["fp8", "awq", "gptq", "mxfp4", "nvfp4", "bnb-4bit", "compressed-tensors"]
DeploymentMode = Literal["managed", "adopt"]
DEFAULT_MODE: DeploymentMode = "managed"
#: `spec.mode` as the spec's CEL rules read it: the API server evaluates the rules of an object
#: whose nested defaults may not be filled yet, and `self.mode` of an absent key is the error
#: "no such key: mode", printed beside whatever the user really got wrong.
_CEL_MODE = f"(has(self.mode) ? self.mode : '{DEFAULT_MODE}')"

#: LLMDeployment names: the name also names the Deployment and Service kvscale creates, and a
#: Service name must be a DNS-1035 label. The CRD declares this on metadata.name too, so the API
#: server refuses what `kvscale validate` refuses.
OBJECT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME_MAX_LENGTH = 63
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HF_MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
_GPU_TYPE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

_LabelValue = Annotated[str, Field(max_length=63)]
_GpuType = Annotated[str, Field(min_length=1, max_length=63, pattern=_GPU_TYPE)]


def _default_of(model: type[ApiModel]) -> JsonDict:
    """`default:` for an optional nested object: every field's default, spelled out.

    Not `default: {}`: the API server checks a default against the object's CEL rules without
    filling the nested defaults first, so `{}` fails `self.minReplicas <= self.maxReplicas`
    ("no such key") and the whole CRD is rejected.
    """
    dumped: JsonDict = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"default": dumped}


def _count_set(*values: object) -> int:
    return sum(value is not None for value in values)


class ConfigMapRef(ApiModel):
    """A ConfigMap in the LLMDeployment's namespace that holds the model's HF config.json."""

    name: str = Field(
        description="Name of the ConfigMap.", min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN
    )
    key: str = Field(
        default="config.json",
        description="Key of the ConfigMap whose value is the config.json text.",
        min_length=1,
        max_length=253,
    )


class ModelSource(ApiModel):
    """Which model to serve and where its KV geometry comes from (exactly one source)."""

    name: str | None = Field(
        default=None,
        description=(
            "Hugging Face model id from the kvscale catalog (e.g."
            " meta-llama/Llama-3.1-8B-Instruct); the geometry is taken from the catalog and the"
            " engine loads this id."
        ),
        min_length=1,
        max_length=256,
        pattern=_HF_MODEL_ID,
    )
    config: str | None = Field(
        default=None,
        description="Inline Hugging Face config.json text (JSON), for a model not in the catalog.",
        min_length=2,
        max_length=262144,
    )
    config_map_ref: ConfigMapRef | None = Field(
        default=None, description="ConfigMap holding the model's config.json."
    )
    uri: str | None = Field(
        default=None,
        description=(
            "What the engine loads (Hugging Face id or a path in the container); defaults to name."
            " Required in managed mode when the geometry comes from config or configMapRef."
        ),
        min_length=1,
        max_length=1024,
    )
    weights_bytes: int | None = Field(
        default=None,
        description=(
            "Checkpoint size in bytes over all ranks (quantisation included); overrides the"
            " catalog or parameter-count estimate."
        ),
        ge=1,
        le=2**50,
    )
    quantization: Quantization | None = Field(
        default=None,
        description=(
            "Weight quantisation of the checkpoint the engine loads (model.uri, an adopted"
            " engine's, or a model described by config), when its config does not say it:"
            " the weights are"
            " re-estimated from the parameter count (linear layers at the method's width,"
            " embeddings and a vision tower in the model dtype; mxfp4: the routed experts)."
            " When a managed engine loads a 16-bit catalog id itself, fp8 is applied by the"
            " engine as it loads (vLLM and SGLang --quantization, TGI --quantize) and"
            " the plan checks that load's peak (vLLM < 0.16 and SGLang hold the 16-bit weights"
            " first) and the GPU's compute capability; other methods, or an engine that cannot,"
            " keep the catalog's 16-bit weights and the plan warns."
            " weightsBytes gives the exact figure."
        ),
    )

    cel_rules = (
        CelRule(
            rule="(has(self.name) ? 1 : 0) + (has(self.config) ? 1 : 0)"
            " + (has(self.configMapRef) ? 1 : 0) == 1",
            message="exactly one of name, config, configMapRef must be set",
            fix="keep one model source and delete the others",
            field="",
            violation=lambda m: (
                None
                if _count_set(m.name, m.config, m.config_map_ref) == 1
                else f"{_count_set(m.name, m.config, m.config_map_ref)} set"
            ),
        ),
    )


class WorkloadProfile(ApiModel):
    """Expected traffic: request lengths and the peak rate, used to size concurrency."""

    input_tokens_p50: int = Field(description="Median prompt length in tokens.", ge=1, le=10485760)
    input_tokens_p95: int = Field(
        description="95th-percentile prompt length in tokens.", ge=1, le=10485760
    )
    output_tokens_p50: int = Field(
        description="Median generated length in tokens.", ge=1, le=1048576
    )
    output_tokens_p95: int = Field(
        description="95th-percentile generated length in tokens.", ge=1, le=1048576
    )
    peak_requests_per_second: float = Field(
        description="Peak arrival rate over all replicas, requests per second.", gt=0, le=100000
    )

    cel_rules = (
        ordered_rule(
            "inputTokensP50",
            "inputTokensP95",
            "inputTokensP50 must be ≤ inputTokensP95",
            "swap the values or raise inputTokensP95",
        ),
        ordered_rule(
            "outputTokensP50",
            "outputTokensP95",
            "outputTokensP50 must be ≤ outputTokensP95",
            "swap the values or raise outputTokensP95",
        ),
    )


class PlacementSpec(ApiModel):
    """Where replicas may run: candidate GPU types (planned each) and scheduling constraints."""

    gpu_types: list[_GpuType] = Field(
        description=(
            "Candidate GPU types from the kvscale catalog (e.g. l4, l40s, h100_sxm_80gb), in order"
            " of preference; kvscale plans each and selects the cheapest that fits."
        ),
        min_length=1,
        max_length=16,
    )
    gpus_per_replica: int = Field(
        default=1, description="GPUs per replica (the tensor-parallel degree).", ge=1, le=64
    )
    node_selector: dict[str, _LabelValue] = Field(
        default_factory=dict,
        description="Extra node labels the pods must match (the GPU label is added by kvscale).",
        max_length=64,
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Pod tolerations.", max_length=32
    )

    cel_rules = (
        CelRule(
            rule="size(self.gpuTypes) >= 1",
            message="at least one GPU type is required",
            fix="list a catalog GPU type in gpuTypes, e.g. [l40s]",
            field="gpuTypes",
            violation=lambda p: None if p.gpu_types else "empty",
        ),
        CelRule(
            rule="self.gpuTypes.all(g, self.gpuTypes.exists_one(h, h == g))",
            message="gpuTypes must not repeat a type",
            fix="delete the duplicate entries",
            field="gpuTypes",
            violation=lambda p: (
                None
                if len(set(p.gpu_types)) == len(p.gpu_types)
                else ", ".join(sorted({g for g in p.gpu_types if p.gpu_types.count(g) > 1}))
            ),
        ),
    )


class SloSpec(ApiModel):
    """Latency objectives: the planner sizes concurrency for them, the autoscaler guards them."""

    ttft_p95_seconds: float = Field(
        default=2.0, description="95th-percentile time to first token, seconds.", gt=0, le=600
    )
    itl_p95_seconds: float = Field(
        default=0.1, description="95th-percentile inter-token latency, seconds.", gt=0, le=10
    )
    max_queue_wait_seconds: float | None = Field(
        default=None,
        description="Longest a request may wait in the engine queue, seconds.",
        gt=0,
        le=600,
    )

    cel_rules = (
        CelRule(
            rule="!has(self.maxQueueWaitSeconds)"
            " || self.maxQueueWaitSeconds <= self.ttftP95Seconds",
            message="maxQueueWaitSeconds must be ≤ ttftP95Seconds (queueing is part of TTFT)",
            fix="lower maxQueueWaitSeconds or raise ttftP95Seconds",
            field="maxQueueWaitSeconds",
            violation=lambda s: (
                None
                if s.max_queue_wait_seconds is None
                or s.max_queue_wait_seconds <= s.ttft_p95_seconds
                else f"{s.max_queue_wait_seconds} > {s.ttft_p95_seconds}"
            ),
        ),
    )


class TargetRef(ApiModel):
    """The existing workload an adopt-mode LLMDeployment reads and patches."""

    api_version: Literal["apps/v1"] = Field(
        default="apps/v1", description="API version of the target."
    )
    kind: Literal["Deployment"] = Field(default="Deployment", description="Kind of the target.")
    name: str = Field(
        description="Name of the target in the same namespace.",
        min_length=1,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
    )
    container: str | None = Field(
        default=None,
        description="Engine container name; defaults to the first container.",
        max_length=63,
    )


class LLMDeploymentSpec(ApiModel):
    """Desired state of an LLM serving workload whose limit is KV-cache memory."""

    mode: DeploymentMode = Field(
        default=DEFAULT_MODE,
        description="managed: kvscale owns the Deployment; adopt: kvscale reads/patches targetRef.",
    )
    target_ref: TargetRef | None = Field(
        default=None, description="The Deployment to adopt (adopt mode only)."
    )
    replicas: int | None = Field(
        default=None,
        description=(
            "Desired replicas, written by kvscale's autoscaler or by kubectl scale / HPA through"
            " the scale subresource; unset means scaling.minReplicas."
        ),
        ge=0,
        le=1000,
    )
    model: ModelSource = Field(description="The model to serve and the source of its KV geometry.")
    max_context_length: int = Field(
        description="Longest sequence (prompt + output) in tokens; the engine's max model length.",
        ge=16,
        le=10485760,
    )
    workload: WorkloadProfile = Field(description="Expected request lengths and peak rate.")
    engine: EngineSpec = Field(
        default_factory=EngineSpec,
        description="Serving engine.",
        json_schema_extra=_default_of(EngineSpec),
    )
    kv_cache: KvCacheSpec = Field(
        default_factory=KvCacheSpec,
        description="KV-cache settings.",
        json_schema_extra=_default_of(KvCacheSpec),
    )
    placement: PlacementSpec = Field(description="Candidate GPU types and scheduling constraints.")
    slo: SloSpec = Field(
        default_factory=SloSpec,
        description="Latency objectives.",
        json_schema_extra=_default_of(SloSpec),
    )
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec,
        description="Autoscaling policy.",
        json_schema_extra=_default_of(ScalingSpec),
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="Rollback guardrails.",
        json_schema_extra=_default_of(RolloutSpec),
    )
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec,
        description="Engine pod settings for the common cases: HF token, model cache, startup.",
        json_schema_extra=_default_of(RuntimeSpec),
    )
    template: PodTemplateOverlay | None = Field(
        default=None,
        description=(
            "Pod-template overlay merged onto the engine pod kvscale generates (managed mode);"
            " fields kvscale owns are refused (ADR 0008)."
        ),
    )

    cel_rules = (
        CelRule(
            rule=f"{_CEL_MODE} == 'adopt' ? has(self.targetRef) : !has(self.targetRef)",
            message="targetRef is required in adopt mode and not allowed in managed mode",
            fix="set mode: adopt with a targetRef, or delete targetRef",
            field="targetRef",
            violation=lambda s: (
                None if (s.mode == "adopt") == (s.target_ref is not None) else f"mode {s.mode}"
            ),
        ),
        CelRule(
            rule=f"{_CEL_MODE} == 'managed' || !has(self.template)",
            message="template shapes the pod kvscale generates, so it needs managed mode",
            fix="delete template, or edit the adopted Deployment's pod template itself",
            field="template",
            violation=lambda s: None if s.mode == "managed" or s.template is None else "adopt",
        ),
        CelRule(
            rule=f"{_CEL_MODE} == 'adopt' || has(self.model.name) || has(self.model.uri)",
            message="managed mode needs model.uri when the model comes from config or configMapRef",
            fix="set model.uri to the Hugging Face id or path the engine should load",
            field="model.uri",
            violation=lambda s: (
                None
                if s.mode == "adopt" or s.model.name is not None or s.model.uri is not None
                else ""
            ),
        ),
        CelRule(
            rule="self.engine.name == 'vllm' || !has(self.kvCache.pool)"
            " || self.kvCache.pool != 'pinned'",
            message="kvCache.pool pinned renders vLLM's --kv-cache-memory-bytes; other engines "
            "size their own pool",
            fix="use kvCache.pool: profiled, or engine.name: vllm",
            field="kvCache.pool",
            violation=lambda s: (
                None if s.engine.name == "vllm" or s.kv_cache.pool != "pinned" else s.engine.name
            ),
        ),
        CelRule(
            rule="self.engine.name == 'vllm' || !has(self.engine.samplerPath)"
            " || self.engine.samplerPath == 'auto'",
            message="engine.samplerPath names a vLLM sampler path",
            fix="use engine.samplerPath: auto, or engine.name: vllm",
            field="engine.samplerPath",
            violation=lambda s: (
                None
                if s.engine.name == "vllm" or s.engine.sampler_path == "auto"
                else s.engine.name
            ),
        ),
        CelRule(
            rule="self.workload.inputTokensP95 + self.workload.outputTokensP95"
            " <= self.maxContextLength",
            message="inputTokensP95 + outputTokensP95 must fit in maxContextLength",
            fix="raise maxContextLength or lower the workload's p95 lengths",
            field="maxContextLength",
            violation=lambda s: (
                None
                if s.workload.input_tokens_p95 + s.workload.output_tokens_p95
                <= s.max_context_length
                else f"{s.workload.input_tokens_p95} + {s.workload.output_tokens_p95}"
                f" > {s.max_context_length}"
            ),
        ),
    )

    @model_validator(mode="after")
    def _check_template(self) -> Self:
        """Refuse an overlay that touches what kvscale owns, naming the field (ADR 0008)."""
        if self.template is None:
            return self
        for conflict in template_conflicts(self.template, self.runtime, self._gpu_label_keys()):
            raise PydanticCustomError(
                CROSS_FIELD_ERROR,
                "{message}; fix: {fix}",
                {
                    "message": conflict.message,
                    "fix": conflict.fix,
                    "field": f"template.{conflict.path}",
                },
            )
        overlay = self.template.spec.node_selector
        for key, value in self.placement.node_selector.items():
            if overlay.get(key, value) != value:
                raise PydanticCustomError(
                    CROSS_FIELD_ERROR,
                    "{message}; fix: {fix}",
                    {
                        "message": f"{key}={overlay[key]} contradicts placement.nodeSelector",
                        "fix": "keep the label in one place",
                        "field": f"template.spec.nodeSelector.{key}",
                    },
                )
        return self

    def _gpu_label_keys(self) -> frozenset[str]:
        keys = {DEFAULT_GPU_LABEL_KEY}
        for gpu_type in self.placement.gpu_types:
            try:
                keys.add(find_gpu(gpu_type).label_key or DEFAULT_GPU_LABEL_KEY)
            except CapacityInputError:
                continue  # the planner reports an unknown GPU type, naming the field
        return frozenset(keys)

    def desired_replicas(self) -> int:
        """spec.replicas within [scaling.minReplicas, scaling.maxReplicas], else the floor.

        Clamped here, before anything is applied: a `kubectl scale --replicas=50` past
        maxReplicas 8 never reaches the Deployment (whose ReplicaSet would create every pod).
        """
        if self.replicas is None:
            return self.scaling.min_replicas
        return min(max(self.replicas, self.scaling.min_replicas), self.scaling.max_replicas)
