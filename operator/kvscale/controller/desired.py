"""From an LLMDeployment (metadata + spec) to the desired state: plan status, conditions, Workload.

Validation and planning are delegated to `kvscale.api` (`LLMDeploymentSpec`, `plan_deployment`),
the same code `kvscale validate` runs, so what validate accepts is what the operator deploys.
Every way a spec can be wrong ends here as one `SpecInvalidError` naming the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kvscale.api.calibration import CalibrationLookup
from kvscale.api.convert import ConfigMapLoader, SpecError, model_ref_of, plan_deployment
from kvscale.api.models import DEFAULT_GPU_LABEL_KEY, LLMDeploymentSpec
from kvscale.api.validation import problems_from_validation_error
from kvscale.api.wire import spec_from_wire
from kvscale.capacity import find_gpu
from kvscale.controller import enginepod
from kvscale.controller.conditions import (
    CAPACITY_SUFFICIENT,
    FALSE,
    PLAN_WARNINGS,
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

    reason: str = Reason.INVALID_SPEC


class PlanningFailedError(SpecInvalidError):
    """Planning raised an error no check anticipated (a planner bug, or an input the bounds
    missed). Reported like an invalid spec, and never retried: the same spec fails the same
    way, so a retry loop would only repeat the work (or the allocation) that failed."""

    reason = Reason.PLANNING_FAILED


@dataclass(frozen=True)
class Desired:
    """The desired state of one LLMDeployment."""

    spec: LLMDeploymentSpec
    status: dict[str, Any]  # plan fields of .status (camelCase)
    planned: ConditionUpdate
    capacity: ConditionUpdate
    workload: Workload | None  # None: adopt mode, or no GPU type fits
    warned: ConditionUpdate | None = None  # PlanWarnings (None: nothing was planned)


def parse_spec(raw: Mapping[str, Any]) -> LLMDeploymentSpec:
    """Validate with the API models; the first error becomes a one-line SpecInvalidError worded
    as `kvscale validate` words it (field, problem, fix)."""
    try:
        return spec_from_wire(raw, strict=False)  # the server checked types; read as it did
    except ValidationError as exc:
        problems = problems_from_validation_error(exc)
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecInvalidError(f"{problems[0]}{more}") from exc


def resolve_image(spec: LLMDeploymentSpec, settings: Settings) -> str:
    if spec.engine.image:
        return spec.engine.image
    template = DEFAULT_IMAGES.get(spec.engine.name)
    if template:
        return template.format(version=spec.engine.release)
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
    calibration: CalibrationLookup | None = None,
) -> Desired:
    """Validate, plan every GPU type (from the calibration record's overhead where it has
    the tuple), select one and describe the workload to run.

    Every failure is a `SpecInvalidError`: the expected ones name the field, anything else
    becomes a `PlanningFailedError` (a condition and an Event, never an operator crash).
    """
    try:
        return _compute_desired(meta, raw_spec, settings, configmap_loader, calibration)
    except SpecInvalidError:
        raise
    except Exception as exc:  # a planner bug or a hostile input: report it, do not crash
        detail = f"{type(exc).__name__}: {exc}"[:300]
        raise PlanningFailedError(
            f"spec: planning failed ({detail}); fix: check spec.model and its config.json for"
            " values no real model has, and report the spec to the kvscale maintainers"
        ) from exc


def _compute_desired(
    meta: Mapping[str, Any],
    raw_spec: Mapping[str, Any],
    settings: Settings,
    configmap_loader: ConfigMapLoader | None,
    calibration: CalibrationLookup | None,
) -> Desired:
    spec = parse_spec(raw_spec)
    try:
        result = plan_deployment(spec, configmap_loader, calibration)
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
        return Desired(spec, status, planned, capacity, None, _warnings_condition(status))
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
            "calibration": (
                None
                if result.calibration is None
                else result.calibration.model_dump(by_alias=True, exclude_none=True, mode="json")
            ),
        }
    )
    warned = _warnings_condition(status, selected.gpu_type, selected.warnings)
    if spec.mode == "adopt":
        return Desired(spec, status, planned, capacity, None, warned)
    gpu = find_gpu(selected.gpu_type)
    capacity_plan = result.selected_capacity_plan()
    endpoints = engine_endpoints(spec.engine.name)
    workload = Workload(
        owner=Owner(str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid", ""))),
        engine=spec.engine.name,
        engine_version=spec.engine.release,
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
    return Desired(spec, status, planned, capacity, workload, warned)


WARNINGS_MESSAGE_MAX = 2000  # characters of the PlanWarnings message (status.warnings has all)


def _warnings_condition(
    status: Mapping[str, Any], gpu_type: str | None = None, gpu_warnings: Sequence[str] = ()
) -> ConditionUpdate:
    """PlanWarnings: True while the deployment or its selected GPU type's plan warns."""
    lines = [*status.get("warnings", ()), *(f"{gpu_type}: {w}" for w in gpu_warnings)]
    if not lines:
        return ConditionUpdate(PLAN_WARNINGS, FALSE, Reason.NO_WARNINGS, "")
    message = "; ".join(lines)
    if len(message) > WARNINGS_MESSAGE_MAX:
        message = message[: WARNINGS_MESSAGE_MAX - 1] + "…"
    return ConditionUpdate(PLAN_WARNINGS, TRUE, Reason.PLANNER_WARNINGS, message)


def _drain(spec: LLMDeploymentSpec) -> Drain:
    """preStop and grace from the workload's p95 request at the SLO (enginepod)."""
    drain_s = enginepod.drain_window_s(
        spec.slo.ttft_p95_seconds, spec.workload.output_tokens_p95, spec.slo.itl_p95_seconds
    )
    return Drain(enginepod.PRE_STOP_SLEEP_S, enginepod.grace_period_s(drain_s))
