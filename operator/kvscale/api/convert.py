"""From an `LLMDeploymentSpec` to the pure core's inputs, and the per-GPU-type plan.

`plan_deployment` is the one place a spec becomes plans: `kvscale validate`, `kvscale plan -f`
and the operator's status all call it, so what validate promises is what the operator does.
Selection rule: among GPU types that fit, the lowest US dollars per hour per unit of safe
concurrency wins; GPU types without a price rank after priced ones; ties go to the type listed
first in `spec.placement.gpuTypes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from kvscale.api.calibration import CalibrationLookup, calibrated_plan, planned_calibration
from kvscale.api.models import ConfigMapRef, LLMDeploymentSpec, ModelSource
from kvscale.api.quantization import (
    online_quantization_of,
    unapplied_quantization_warning,
    with_source_overrides,
)
from kvscale.api.status import GpuPlanStatus
from kvscale.api.status_calibration import CalibrationStatus
from kvscale.capacity import (
    CapacityInputError,
    EngineVersion,
    SamplerPath,
    estimate_safe_concurrency,
    find_gpu,
    find_model,
    model_from_config,
)
from kvscale.capacity.errors import InputError, field_key
from kvscale.capacity.release import UnsupportedEngineError
from kvscale.capacity.roofline import prefill_capacity_tokens_per_s
from kvscale.capacity.types import (
    CapacityPlan,
    ConcurrencyVerdict,
    GpuSpec,
    ModelGeometry,
    OnlineQuantization,
    PlanRequest,
    SloTargets,
    WorkloadProfile,
)
from kvscale.engines.render import render

#: Reads the config.json text a ConfigMapRef points at (the operator passes a cluster reader).
ConfigMapLoader = Callable[[ConfigMapRef], str]

# Planner input names (any spelling: `field_key`) -> the CR field to blame.
_PLANNER_FIELD_TO_SPEC_PATH: dict[str, str] = {
    "tensorparallel": "spec.placement.gpusPerReplica",
    "tensorparallelsize": "spec.placement.gpusPerReplica",
    "gpuspreplica": "spec.placement.gpusPerReplica",
    "maxmodellen": "spec.maxContextLength",
    "maxmodellentokens": "spec.maxContextLength",
    "kvcachedtype": "spec.kvCache.dtype",
    "blocksize": "spec.kvCache.blockSize",
    "blocksizetokens": "spec.kvCache.blockSize",
    "gpumemoryutilization": "spec.engine.gpuMemoryUtilization",
    "maxnumbatchedtokens": "spec.engine.maxNumBatchedTokens",
    "maxnumseqs": "spec.engine.maxNumSeqs",
    "weightsbytes": "spec.model.weightsBytes",
    "weightsgib": "spec.model.weightsBytes",
    "engine": "spec.engine.name",
    "engineversion": "spec.engine.version",
    "port": "spec.engine.port",
    "modelref": "spec.model.uri",
}


class SpecError(InputError):
    """A spec that is well-formed but cannot be planned; `field` is the CR path."""

    @property
    def path(self) -> str:
        return self.field


_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _spec_path_for(planner_field: str, default: str) -> str:
    return _PLANNER_FIELD_TO_SPEC_PATH.get(field_key(planner_field), default)


def in_spec_terms(text: str) -> str:
    """A planner message with the engine flags it names written as the CR fields to change
    ('lower --max-model-len to 9000' -> 'lower spec.maxContextLength to 9000')."""
    return _FLAG.sub(lambda m: _spec_path_for(m.group(), m.group()), text)


def _as_spec_error(exc: InputError, default: str) -> SpecError:
    path = _spec_path_for(exc.field, default)
    return SpecError(path, in_spec_terms(exc.problem), in_spec_terms(exc.fix))


def model_ref_of(source: ModelSource) -> str:
    """What the engine loads: model.uri, else the catalog name."""
    return source.uri or source.name or ""


def _geometry_from_text(text: str, source: ModelSource, path: str) -> ModelGeometry:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno})",
            "paste the model's config.json verbatim",
        ) from exc
    if not isinstance(config, dict):
        raise SpecError(
            path, "config.json must be a JSON object", "paste the model's config.json verbatim"
        )
    try:
        return model_from_config(
            config, name=model_ref_of(source) or "inline-config", weights_bytes=source.weights_bytes
        )
    except CapacityInputError as exc:
        raise SpecError(
            f"{path} ({exc.field})", in_spec_terms(exc.problem), in_spec_terms(exc.fix)
        ) from exc


def source_geometry(
    source: ModelSource, configmap_loader: ConfigMapLoader | None = None
) -> ModelGeometry:
    """The model's geometry from the catalog, inline config.json or a ConfigMap, before the
    spec's own overrides (quantization, weightsBytes).

    Raises `SpecError` naming spec.model.* when the source cannot be resolved (unknown
    catalog id, bad JSON, no loader for a ConfigMap, a config the planner cannot read).
    """
    if source.name is not None:
        try:
            return find_model(source.name)
        except CapacityInputError as exc:
            raise SpecError("spec.model.name", exc.problem, exc.fix) from exc
    if source.config is not None:
        return _geometry_from_text(source.config, source, "spec.model.config")
    ref = source.config_map_ref
    assert ref is not None  # the model validator guarantees exactly one source
    if configmap_loader is None:
        raise SpecError(
            "spec.model.configMapRef",
            f"ConfigMap {ref.name} is not available offline",
            "put the ConfigMap in the same file, or use model.name or model.config",
        )
    return _geometry_from_text(configmap_loader(ref), source, "spec.model.configMapRef")


def plan_request_for(
    spec: LLMDeploymentSpec,
    gpu: GpuSpec,
    model: ModelGeometry,
    online: OnlineQuantization | None = None,
) -> PlanRequest:
    """One replica of `spec` on `gpu`: the planner's input (`online`: the quantization the
    engine applies as it loads, `quantization.online_quantization_of`)."""
    return PlanRequest(
        model=model,
        gpu=gpu,
        engine=spec.engine.name,
        engine_version=EngineVersion.parse(spec.engine.release),
        tensor_parallel=spec.placement.gpus_per_replica,
        max_model_len_tokens=spec.max_context_length,
        gpu_memory_utilization=spec.engine.gpu_memory_utilization,
        kv_cache_dtype=spec.kv_cache.dtype,
        block_size_tokens=spec.kv_cache.block_size,
        max_num_batched_tokens=spec.engine.max_num_batched_tokens,
        max_num_seqs=spec.engine.max_num_seqs,
        weights_bytes=spec.model.weights_bytes,
        enable_prefix_caching=spec.kv_cache.prefix_caching,
        sampler_path=SamplerPath(spec.engine.sampler_path),
        pin_kv_pool=spec.kv_cache.pool == "pinned",
        online_quantization=online,
    )


def workload_profile_of(spec: LLMDeploymentSpec) -> WorkloadProfile:
    w = spec.workload
    return WorkloadProfile(
        p50_input_tokens=w.input_tokens_p50,
        p95_input_tokens=w.input_tokens_p95,
        p50_output_tokens=w.output_tokens_p50,
        p95_output_tokens=w.output_tokens_p95,
        peak_requests_per_s=w.peak_requests_per_second,
    )


def slo_targets_of(spec: LLMDeploymentSpec) -> SloTargets:
    return SloTargets(ttft_p95_s=spec.slo.ttft_p95_seconds, itl_p95_s=spec.slo.itl_p95_seconds)


@dataclass(frozen=True)
class DeploymentPlanResult:
    """Every candidate GPU type planned, the one selected and its rendered engine args."""

    model: ModelGeometry
    plans: tuple[GpuPlanStatus, ...]  # in spec.placement.gpuTypes order
    capacity_plans: tuple[CapacityPlan, ...]  # parallel to `plans`
    selected_gpu_type: str | None  # None: no candidate fits
    selection_reason: str
    engine_args: tuple[str, ...] = ()  # rendered for the selected GPU type
    engine_command: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    calibration: CalibrationStatus | None = None  # the selected plan's, planned half

    def selected_plan(self) -> GpuPlanStatus | None:
        return next((p for p in self.plans if p.gpu_type == self.selected_gpu_type), None)

    def selected_capacity_plan(self) -> CapacityPlan | None:
        for status, plan in zip(self.plans, self.capacity_plans, strict=True):
            if status.gpu_type == self.selected_gpu_type:
                return plan
        return None


def resolve_gpu_types(spec: LLMDeploymentSpec) -> tuple[list[tuple[int, GpuSpec]], list[str]]:
    """The distinct catalog GPUs of spec.placement.gpuTypes (index of first mention each) and
    a warning per entry that names a GPU listed before under another name ('h100' and
    'NVIDIA-H100-80GB-HBM3' are one GPU: it is planned once)."""
    distinct: dict[str, tuple[int, GpuSpec]] = {}
    warnings = []
    for index, name in enumerate(spec.placement.gpu_types):
        path = f"spec.placement.gpuTypes[{index}]"
        try:
            gpu = find_gpu(name)
        except CapacityInputError as exc:
            raise SpecError(path, exc.problem, exc.fix) from exc
        if gpu.id in distinct:
            first = distinct[gpu.id][0]
            warnings.append(
                f"{path} {name!r} is {gpu.id}, as gpuTypes[{first}]"
                f" {spec.placement.gpu_types[first]!r}: planned once; fix: delete {path}"
            )
        else:
            distinct[gpu.id] = (index, gpu)
    return list(distinct.values()), warnings


def _plan_one(
    spec: LLMDeploymentSpec,
    index: int,
    gpu: GpuSpec,
    model: ModelGeometry,
    lookup: CalibrationLookup | None,
    *,
    online: OnlineQuantization | None,
) -> tuple[GpuPlanStatus, CapacityPlan, CapacityPlan]:
    gpu_path = f"spec.placement.gpuTypes[{index}]"
    gpu_type = spec.placement.gpu_types[index]
    model_ref = model_ref_of(spec.model)
    try:
        plan, modelled = calibrated_plan(
            spec, plan_request_for(spec, gpu, model, online), model_ref, lookup
        )
        verdict = estimate_safe_concurrency(
            plan, workload_profile_of(spec), slo_targets_of(spec), spec.kv_cache.headroom_fraction
        )
    except CapacityInputError as exc:
        raise _as_spec_error(exc, gpu_path) from exc
    safe = float(verdict.safe_concurrency) if plan.fits else 0.0
    reason = in_spec_terms(plan.reason)
    if plan.fits and safe <= 0:
        reason = _no_safe_concurrency(spec, verdict)
    status = GpuPlanStatus(
        gpu_type=gpu_type,
        kv_bytes_per_token=plan.kv_bytes_per_token,
        kv_cache_tokens=plan.kv_cache_tokens,
        num_blocks=plan.num_blocks,
        max_concurrency=round(plan.max_concurrency, 2),
        safe_concurrency=safe,
        limited_by=verdict.limited_by,
        fits=plan.fits,
        reason=reason,
        replicas_for_peak=verdict.replicas_for_peak or 0,
        usd_per_hour=(
            round(verdict.usd_per_hour_per_replica, 4)
            if verdict.usd_per_hour_per_replica is not None
            else None
        ),
        prefill_tokens_per_second=(
            round(prefill_capacity_tokens_per_s(plan), 1) if plan.fits else None
        ),
        warnings=[
            *(in_spec_terms(w) for w in plan.warnings),
            *_prefill_step_warning(spec, plan, verdict),
        ],
        observed_non_kv_bytes=plan.request.observed_non_kv_bytes,
        modelled_kv_cache_tokens=(None if modelled is plan else modelled.kv_cache_tokens),
    )
    return status, plan, modelled


def _prefill_step_warning(
    spec: LLMDeploymentSpec, plan: CapacityPlan, verdict: ConcurrencyVerdict
) -> list[str]:
    """Steps that prefill a prompt while the safe batch decodes, slower than the ITL target."""
    step_s = verdict.itl_with_prefill_at_safe_s
    target_s = spec.slo.itl_p95_seconds
    if step_s is None or step_s <= target_s:
        return []
    head = (
        f"a step that prefills a p95 prompt ({plan.max_num_batched_tokens}-token chunks)"
        f" while {verdict.safe_concurrency} requests decode takes ~{step_s:.3g} s, above"
        f" spec.slo.itlP95Seconds {target_s:g}: ITL p95 breaches when prompts arrive often"
    )
    chunk = verdict.chunk_for_itl_tokens
    if chunk is None:
        return [f"{head}; fix: relax spec.slo.itlP95Seconds or choose a faster GPU type"]
    seqs = ""
    if chunk < plan.max_num_seqs:  # vLLM refuses a step budget below its sequence cap
        seqs = f" and spec.engine.maxNumSeqs ≤ {chunk}"
    return [
        f"{head}; fix: spec.engine.maxNumBatchedTokens ≤ {chunk}{seqs}"
        " (prompts then take more steps: TTFT grows)"
    ]


def _no_safe_concurrency(spec: LLMDeploymentSpec, verdict: ConcurrencyVerdict) -> str:
    """Why a GPU type that holds the model serves no request safely, with the numbers."""
    slo = spec.slo
    unmet = []
    if verdict.itl_one_request_s > slo.itl_p95_seconds:
        unmet.append(
            f"spec.slo.itlP95Seconds {slo.itl_p95_seconds:g} s is below the"
            f" {verdict.itl_one_request_s:.3g} s per token of one request alone"
        )
    if verdict.ttft_one_request_s > slo.ttft_p95_seconds:
        unmet.append(
            f"spec.slo.ttftP95Seconds {slo.ttft_p95_seconds:g} s is below the"
            f" {verdict.ttft_one_request_s:.3g} s to prefill a p95 prompt alone"
        )
    if unmet:
        return "; ".join(unmet) + "; fix: relax spec.slo or choose a faster GPU type"
    return (
        f"no safe concurrency (limited by {verdict.limited_by}); fix: relax spec.slo,"
        " lower kvCache.headroomFraction or choose a faster GPU type"
    )


def _usd_per_concurrency(plan: GpuPlanStatus) -> float | None:
    if plan.usd_per_hour is None or plan.safe_concurrency <= 0:
        return None
    return plan.usd_per_hour / plan.safe_concurrency


def select_gpu_type(plans: tuple[GpuPlanStatus, ...]) -> tuple[str | None, str]:
    """The cheapest fitting GPU type per unit of safe concurrency, and why (one sentence)."""
    fitting = [p for p in plans if p.fits and p.safe_concurrency > 0]
    if not fitting:
        return None, "no candidate GPU type fits: " + "; ".join(
            f"{p.gpu_type}: {p.reason or 'safe concurrency is 0'}" for p in plans
        )
    order = {p.gpu_type: i for i, p in enumerate(plans)}

    def rank(p: GpuPlanStatus) -> tuple[int, float, int]:
        cost = _usd_per_concurrency(p)
        return (0 if cost is not None else 1, cost or 0.0, order[p.gpu_type])

    best = min(fitting, key=rank)
    cost = _usd_per_concurrency(best)
    if cost is None:
        why = "no fitting candidate has a price; first listed that fits"
    else:
        why = (
            f"cheapest per concurrent request: ${cost:.4f}/h"
            f" (${best.usd_per_hour:.2f}/h for safe concurrency {best.safe_concurrency:g})"
        )
    others = [p.gpu_type for p in plans if p.gpu_type != best.gpu_type]
    skipped = [p.gpu_type for p in plans if p not in fitting]
    detail = f"; {len(fitting)} of {len(plans)} fit" if others else ""
    if skipped:
        detail += f" (does not fit: {', '.join(skipped)})"
    return best.gpu_type, f"{best.gpu_type}: {why}{detail}"


def _replicas_warning(spec: LLMDeploymentSpec) -> tuple[str, ...]:
    running, s = spec.desired_replicas(), spec.scaling
    if spec.replicas is None or spec.replicas == running:
        return ()
    return (
        f"spec.replicas {spec.replicas} is outside [spec.scaling.minReplicas {s.min_replicas},"
        f" spec.scaling.maxReplicas {s.max_replicas}]: {running} run; fix: scale within the"
        " bounds or change them",
    )


def plan_deployment(
    spec: LLMDeploymentSpec,
    configmap_loader: ConfigMapLoader | None = None,
    calibration: CalibrationLookup | None = None,
) -> DeploymentPlanResult:
    """Plan every candidate GPU type of `spec`, select one and render its engine args.

    With a `calibration` lookup, a GPU type whose tuple the cluster has seen live is planned
    from the observed non-KV overhead instead of the model's.

    Raises `SpecError` for inputs that cannot be planned at all (unknown model or GPU type,
    unsupported engine release, context longer than the model supports). A spec that fits no
    GPU type is not an error here: `selected_gpu_type` is None and the reason says why.
    """
    base = source_geometry(spec.model, configmap_loader)
    online = online_quantization_of(spec, base)
    model = with_source_overrides(base, spec.model, spec.mode, online)
    if spec.max_context_length > model.max_position_embeddings:
        raise SpecError(
            "spec.maxContextLength",
            f"{spec.max_context_length} exceeds the model's max_position_embeddings"
            f" ({model.max_position_embeddings})",
            f"lower maxContextLength to ≤ {model.max_position_embeddings}",
        )
    gpus, plan_warnings = resolve_gpu_types(spec)
    if (unapplied := unapplied_quantization_warning(spec, base, online)) is not None:
        plan_warnings.append(unapplied)
    triples = [_plan_one(spec, i, gpu, model, calibration, online=online) for i, gpu in gpus]
    plans = tuple(p for p, _, _ in triples)
    capacity_plans = tuple(c for _, c, _ in triples)
    selected, reason = select_gpu_type(plans)
    result = DeploymentPlanResult(
        model, plans, capacity_plans, selected, reason, warnings=tuple(plan_warnings)
    )
    chosen = result.selected_capacity_plan()
    if chosen is None:
        return result
    modelled = next(m for _, c, m in triples if c is chosen)
    result = replace(
        result, calibration=planned_calibration(spec, chosen, modelled, model_ref_of(spec.model))
    )
    try:
        rendered = render(
            chosen,
            model_ref=model_ref_of(spec.model) or model.name,
            port=spec.engine.port,
            extra_args=spec.engine.extra_args,
        )
    except UnsupportedEngineError as exc:
        raise _as_spec_error(exc, "spec.engine") from exc
    return replace(
        result,
        engine_args=rendered.argv,
        engine_command=rendered.command,
        warnings=result.warnings + rendered.warnings + _capacity_warnings(spec, result),
    )


def _capacity_warnings(spec: LLMDeploymentSpec, result: DeploymentPlanResult) -> tuple[str, ...]:
    replicas = _replicas_warning(spec)
    chosen = result.selected_plan()
    if chosen is None or chosen.replicas_for_peak <= spec.scaling.max_replicas:
        return replicas
    return (
        *replicas,
        f"spec.scaling.maxReplicas {spec.scaling.max_replicas} is below the"
        f" {chosen.replicas_for_peak} replicas the peak of"
        f" {spec.workload.peak_requests_per_second:g} requests/s needs on {chosen.gpu_type}",
    )
