"""From an LLMDeployment (metadata + spec) to the desired state: plan status, conditions, Workload.

Validation and planning are delegated to `kvscale.api` (`LLMDeploymentSpec`, `plan_deployment`),
the same code `kvscale validate` runs, so what validate accepts is what the operator deploys.
Every way a spec can be wrong ends here as one `SpecInvalidError` naming the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kvscale.api.convert import ConfigMapLoader, SpecError, model_ref_of, plan_deployment
from kvscale.api.models import DEFAULT_GPU_LABEL_KEY, LLMDeploymentSpec
from kvscale.api.validation import problems_from_validation_error
from kvscale.capacity import find_gpu
from kvscale.controller import enginepod
from kvscale.controller.conditions import (
    CAPACITY_SUFFICIENT,
    FALSE,
    PLANNED,
    TRUE,
    ConditionUpdate,
    Reason,
)
from kvscale.controller.settings import Settings
from kvscale.controller.workload import Drain, Owner, Probes, Workload, stable_hash
from kvscale.engines.render import engine_endpoints

# Default engine image per engine ("{version}" is the spec's engine version). Engines without
# a row need spec.engine.image (or KVSCALE_DEFAULT_ENGINE_IMAGE).
DEFAULT_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v{version}",
    "sglang": "lmsysorg/sglang:v{version}",
}


class SpecInvalidError(ValueError):
    """The spec cannot be deployed; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class Desired:
    """The desired state of one LLMDeployment."""

    spec: LLMDeploymentSpec
    status: dict[str, Any]  # plan fields of .status (camelCase)
    planned: ConditionUpdate
    capacity: ConditionUpdate
    workload: Workload | None  # None: adopt mode, or no GPU type fits


def parse_spec(raw: Mapping[str, Any]) -> LLMDeploymentSpec:
    """Validate with the API models; the first error becomes a one-line SpecInvalidError worded
    as `kvscale validate` words it (field, problem, fix)."""
    try:
        return LLMDeploymentSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = problems_from_validation_error(exc)
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecInvalidError(f"{problems[0]}{more}") from exc


def resolve_image(spec: LLMDeploymentSpec, settings: Settings) -> str:
    if spec.engine.image:
        return spec.engine.image
    template = DEFAULT_IMAGES.get(spec.engine.name)
    if template:
        return template.format(version=spec.engine.version)
    if settings.reconcile.default_engine_image:
        return settings.reconcile.default_engine_image
    raise SpecInvalidError(
        f"spec.engine.image: no default image for engine {spec.engine.name}; "
        "fix: set spec.engine.image"
    )


def _spec_hash(raw: Mapping[str, Any]) -> str:
    """Hash of the spec without replicas: scaling is not a change of what the pods run."""
    return stable_hash({k: v for k, v in raw.items() if k != "replicas"})


def _tolerations(spec: LLMDeploymentSpec) -> tuple[tuple[tuple[str, Any], ...], ...]:
    dumped = (t.model_dump(by_alias=True, exclude_none=True) for t in spec.placement.tolerations)
    return tuple(tuple(sorted(d.items())) for d in dumped)


def compute_desired(
    meta: Mapping[str, Any],
    raw_spec: Mapping[str, Any],
    settings: Settings,
    configmap_loader: ConfigMapLoader | None = None,
) -> Desired:
    """Validate, plan every GPU type, select one and describe the workload to run."""
    spec = parse_spec(raw_spec)
    try:
        result = plan_deployment(spec, configmap_loader)
    except SpecError as exc:
        raise SpecInvalidError(str(exc)) from exc
    selected = result.selected_plan()
    status: dict[str, Any] = {
        "model": model_ref_of(spec.model) or result.model.name,
        "plans": [
            p.model_dump(by_alias=True, exclude_none=True, mode="json") for p in result.plans
        ],
        "selectedGpuType": result.selected_gpu_type,
        "selectionReason": result.selection_reason,
        "warnings": list(result.warnings),
    }
    planned = ConditionUpdate(PLANNED, TRUE, Reason.PLAN_COMPUTED, result.selection_reason)
    if selected is None:
        capacity = ConditionUpdate(
            CAPACITY_SUFFICIENT, FALSE, Reason.NO_GPU_FITS, result.selection_reason
        )
        return Desired(spec, status, planned, capacity, None)
    capacity = ConditionUpdate(
        CAPACITY_SUFFICIENT,
        TRUE,
        Reason.KV_CACHE_FITS,
        f"{selected.gpu_type}: {selected.kv_cache_tokens} KV tokens, safe concurrency "
        f"{selected.safe_concurrency:g} per replica (limited by {selected.limited_by})",
    )
    image = resolve_image(spec, settings)
    status.update(
        {
            "safeConcurrency": selected.safe_concurrency,
            "engineArgs": list(result.engine_args),
            "engineImage": image,
        }
    )
    if spec.mode == "adopt":
        return Desired(spec, status, planned, capacity, None)
    gpu = find_gpu(selected.gpu_type)
    capacity_plan = result.selected_capacity_plan()
    endpoints = engine_endpoints(spec.engine.name)
    workload = Workload(
        owner=Owner(str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid", ""))),
        engine=spec.engine.name,
        engine_version=spec.engine.version,
        image=image,
        command=result.engine_command,
        args=result.engine_args,
        port=spec.engine.port,
        health_path=endpoints.health_path,
        metrics_path=endpoints.metrics_path,
        gpus_per_replica=spec.placement.gpus_per_replica,
        gpu_label_key=gpu.label_key or DEFAULT_GPU_LABEL_KEY,
        gpu_label_values=gpu.label_values,
        replicas=spec.desired_replicas(),
        node_selector=tuple(sorted(spec.placement.node_selector.items())),
        tolerations=_tolerations(spec),
        spec_hash=_spec_hash(raw_spec),
        probes=Probes(startup_timeout_s=spec.runtime.startup_timeout_seconds),
        drain=_drain(spec),
        pod=enginepod.size_pod(
            capacity_plan.weights_bytes if capacity_plan else 0,
            spec.placement.gpus_per_replica,
            spec.runtime,
            spec.template,
        ),
    )
    return Desired(spec, status, planned, capacity, workload)


def _drain(spec: LLMDeploymentSpec) -> Drain:
    """preStop and grace from the workload's p95 request at the SLO (enginepod)."""
    drain_s = enginepod.drain_window_s(
        spec.slo.ttft_p95_seconds, spec.workload.output_tokens_p95, spec.slo.itl_p95_seconds
    )
    return Drain(enginepod.PRE_STOP_SLEEP_S, enginepod.grace_period_s(drain_s))
