"""Spec -> core inputs (ScalingConfig, Guardrails, PlanRequest) and the GPU-type selection."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, get_args

import pytest

from kvscale.api.convert import (
    SpecError,
    plan_deployment,
    plan_request_for,
    select_gpu_type,
    source_geometry,
)
from kvscale.api.docs import MINIMAL_SPEC
from kvscale.api.models import LLMDeploymentSpec, ModelSource, Quantization
from kvscale.api.policy_config import to_guardrails, to_scaling_config
from kvscale.api.quantization import with_source_overrides
from kvscale.api.status import GpuPlanStatus
from kvscale.capacity import ModelGeometry, find_gpu, find_model
from kvscale.capacity.weights import DECLARED_QUANT_BITS
from kvscale.scaling.rollback import Guardrails
from kvscale.scaling.types import Mode, ScalingConfig

BASE: dict[str, Any] = MINIMAL_SPEC


def resolve_model(source: ModelSource) -> ModelGeometry:
    """The geometry `plan_deployment` plans: the source's, with the spec's overrides."""
    return with_source_overrides(source_geometry(source), source)


# spec.scaling field -> (a non-default value, the ScalingConfig attribute it must land in)
SCALING_MAP: dict[str, tuple[Any, str]] = {
    "minReplicas": (2, "min_replicas"),
    "maxReplicas": (7, "max_replicas"),
    "mode": ("recommend", "mode"),
    "targetKvUtilization": (0.6, "target_kv_utilization_frac"),
    "tolerance": (0.2, "tolerance_frac"),
    "targetWaitingPerReplica": (3.5, "target_waiting_per_replica"),
    "preemptionsPerSecondThreshold": (0.3, "preemptions_per_s_threshold"),
    "scaleUpStabilizationSeconds": (30, "scale_up_stabilization_s"),
    "scaleDownStabilizationSeconds": (900, "scale_down_stabilization_s"),
    "maxScaleUpStep": (2, "max_scale_up_step"),
    "maxScaleDownStep": (3, "max_scale_down_step"),
    "scaleDownCooldownSeconds": (120, "scale_down_cooldown_s"),
    "warmupSeconds": (240, "warmup_s"),
    "failedReadsBeforeFallback": (5, "failed_reads_before_fallback"),
    "fallbackReplicas": (3, "fallback_replicas"),
    "minReportingFraction": (0.7, "min_reporting_frac"),
    "rejectionsPerSecondThreshold": (0.05, "rejections_per_s_threshold"),
    "scaleDownGuardWindowSeconds": (200, "scale_down_guard_window_s"),
    "scaleDownMaxTtftFraction": (0.8, "scale_down_max_ttft_frac"),
    "maxScaleDownCooldownSeconds": (1800, "max_scale_down_cooldown_s"),
    "targetPrefillUtilization": (0.55, "target_prefill_utilization_frac"),
    "prefillHeadroomMemorySeconds": (900, "prefill_headroom_memory_s"),
    "forecastHorizonSeconds": (90, "forecast_horizon_s"),
}
FROM_PLAN_OR_SLO = {
    "safe_concurrency_per_replica",
    "kv_capacity_tokens_per_replica",
    "prefill_tokens_per_s_per_replica",
    "max_queue_wait_s",
    "ttft_p95_target_s",
    "itl_p95_target_s",
}


def make_spec(**overrides: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({**BASE, **overrides})


def test_every_scaling_config_field_comes_from_the_spec():
    assert {f.name for f in dataclasses.fields(ScalingConfig)} == {
        attr for _, attr in SCALING_MAP.values()
    } | FROM_PLAN_OR_SLO


def test_scaling_values_land_in_the_policy_config():
    spec = make_spec(
        scaling={k: v for k, (v, _) in SCALING_MAP.items()},
        slo={"ttftP95Seconds": 1.2, "itlP95Seconds": 0.04, "maxQueueWaitSeconds": 0.5},
    )
    config = to_scaling_config(spec, safe_concurrency=12.0, kv_tokens=34567)
    for field, (value, attr) in SCALING_MAP.items():
        expected = Mode(value) if field == "mode" else value
        assert getattr(config, attr) == expected, field
    assert (config.ttft_p95_target_s, config.itl_p95_target_s, config.max_queue_wait_s) == (
        1.2,
        0.04,
        0.5,
    )
    assert (config.safe_concurrency_per_replica, config.kv_capacity_tokens_per_replica) == (
        12.0,
        34567,
    )


def test_guardrails_keep_each_latency_factor():
    """Before, min() folded both into one: a loose TTFT factor of 1.8 became 1.3."""
    spec = make_spec(rollout={"maxTtftRegressionFactor": 1.8, "maxItlRegressionFactor": 1.3})
    guardrails = to_guardrails(spec)
    assert (guardrails.ttft_baseline_factor_max, guardrails.itl_baseline_factor_max) == (1.8, 1.3)
    assert guardrails.ttft_p95_target_s == spec.slo.ttft_p95_seconds


def test_the_rollback_cores_defaults_are_the_crds():
    """Guardrails() was 600 s / factor 2.0 / 0 restarts against the CRD's 300 s / 1.5 / 2."""
    spec = make_spec()
    from_spec = to_guardrails(spec)
    assert (from_spec.ttft_baseline_factor_max, from_spec.itl_baseline_factor_max) == (
        Guardrails().baseline_factor_max,
        Guardrails().baseline_factor_max,
    )
    unset = dataclasses.replace(
        from_spec,
        ttft_p95_target_s=None,
        itl_p95_target_s=None,
        ttft_baseline_factor_max=None,
        itl_baseline_factor_max=None,
    )
    assert unset == Guardrails()


def test_plan_request_carries_the_spec_knobs():
    spec = make_spec(
        kvCache={"dtype": "fp8", "blockSize": 32, "prefixCaching": False},
        placement={"gpuTypes": ["h100_sxm_80gb"], "gpusPerReplica": 2},
        engine={"version": "0.10.2", "gpuMemoryUtilization": 0.85, "maxNumSeqs": 64},
    )
    model = find_model("meta-llama/Llama-3.1-8B-Instruct")
    request = plan_request_for(spec, find_gpu("h100_sxm_80gb"), model)
    assert (request.kv_cache_dtype, request.block_size_tokens) == ("fp8", 32)
    assert request.enable_prefix_caching is False
    assert (request.tensor_parallel, request.max_model_len_tokens) == (2, 8192)
    assert (str(request.engine_version), request.gpu_memory_utilization) == ("0.10.2", 0.85)
    assert request.max_num_seqs == 64


def test_inline_config_resolves_to_the_same_geometry_as_the_catalog():
    catalog = find_model("Qwen/Qwen3-8B")
    config_text = json.dumps(catalog_config("Qwen__Qwen3-8B.json"))
    inline = resolve_model(ModelSource(config=config_text, uri="Qwen/Qwen3-8B"))
    assert inline.layer_kinds == catalog.layer_kinds
    assert (inline.num_kv_heads, inline.head_dim_k) == (catalog.num_kv_heads, catalog.head_dim_k)


def catalog_config(file_name: str) -> dict[str, Any]:
    from importlib.resources import files

    text = files("kvscale").joinpath("data/catalog/models", file_name).read_text("utf-8")
    config: dict[str, Any] = json.loads(text)["config"]
    return config


def test_source_overrides_apply_to_the_geometry():
    model = resolve_model(
        ModelSource(name="Qwen/Qwen3-8B", weights_bytes=8_000_000_000, quantization="fp8")
    )
    assert (model.weights_bytes, model.quantization) == (8_000_000_000, "fp8")


def test_a_declared_quantization_shrinks_the_catalog_weights():
    # spec.model.quantization without weightsBytes sizes the checkpoint model.uri loads (it
    # used to keep the bf16 figure, so a 4-bit 70B planned as 131 GiB and was refused)
    base = find_model("meta-llama/Llama-3.3-70B-Instruct")
    fp8_uri, awq_uri = "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "org/llama-3.3-70b-awq"
    fp8 = resolve_model(ModelSource(name=base.name, uri=fp8_uri, quantization="fp8"))
    awq = resolve_model(ModelSource(name=base.name, uri=awq_uri, quantization="awq"))
    assert base.weights_bytes is not None and fp8.weights_bytes is not None
    assert awq.weights_bytes is not None
    assert base.weights_bytes / 2 < fp8.weights_bytes < 0.55 * base.weights_bytes
    assert base.weights_bytes / 4 < awq.weights_bytes < fp8.weights_bytes
    # without an engine that quantizes as it loads (plan_deployment decides that: see
    # test_capacity_quantload), the catalog id's own 16-bit weights stand
    same = resolve_model(ModelSource(name=base.name, quantization="fp8"))
    assert (same.weights_bytes, same.quantization) == (base.weights_bytes, "fp8")


def test_quantization_on_the_catalog_checkpoint_is_named_and_an_adopted_one_is_sized():
    # a managed engine loading the catalog id itself loads 16-bit weights: the plan keeps them
    # and says why the declared quantization does not size them; an adopted engine loads its
    # own checkpoint, which the declared quantization describes
    model = {"name": "meta-llama/Llama-3.1-8B-Instruct", "quantization": "awq"}
    managed = plan_deployment(make_spec(model=model))
    assert any("spec.model.uri" in w and "awq" in w for w in managed.warnings)
    adopt = {"mode": "adopt", "targetRef": {"name": "llama"}}
    adopted = plan_deployment(make_spec(model=model, **adopt))
    assert not any("spec.model.uri" in w for w in adopted.warnings)
    managed_weights = managed.selected_capacity_plan()
    adopted_weights = adopted.selected_capacity_plan()
    assert managed_weights is not None and adopted_weights is not None
    assert adopted_weights.weights_bytes < managed_weights.weights_bytes / 2  # 4-bit layers


def test_every_quantization_the_crd_accepts_has_a_width():
    assert set(get_args(Quantization)) <= set(DECLARED_QUANT_BITS)


def test_configmap_without_loader_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        resolve_model(ModelSource.model_validate({"configMapRef": {"name": "cfg"}}))
    assert err.value.path == "spec.model.configMapRef"


def gpu_plan(gpu: str, safe: float, usd: float | None, fits: bool = True) -> GpuPlanStatus:
    return GpuPlanStatus(
        gpu_type=gpu,
        kv_bytes_per_token=1,
        kv_cache_tokens=1,
        num_blocks=1,
        max_concurrency=1.0,
        safe_concurrency=safe,
        limited_by="kv",
        fits=fits,
        reason="" if fits else f"{gpu} too small",
        replicas_for_peak=1,
        usd_per_hour=usd,
    )


SELECTION_CASES = [
    ("cheapest-per-unit", [gpu_plan("a", 10, 2.0), gpu_plan("b", 40, 4.0)], "b"),
    ("tie-first-listed", [gpu_plan("a", 10, 1.0), gpu_plan("b", 20, 2.0)], "a"),
    ("priced-before-unpriced", [gpu_plan("a", 99, None), gpu_plan("b", 1, 9.0)], "b"),
    ("unpriced-first-listed", [gpu_plan("a", 1, None), gpu_plan("b", 9, None)], "a"),
    ("skip-not-fitting", [gpu_plan("a", 50, 0.1, fits=False), gpu_plan("b", 5, 5.0)], "b"),
    ("skip-zero-safe", [gpu_plan("a", 0, 0.1), gpu_plan("b", 5, 5.0)], "b"),
    ("none-fits", [gpu_plan("a", 5, 1.0, fits=False)], None),
]


@pytest.mark.parametrize(
    ("plans", "expected"), [c[1:] for c in SELECTION_CASES], ids=[c[0] for c in SELECTION_CASES]
)
def test_select_gpu_type(plans: list[GpuPlanStatus], expected: str | None):
    selected, reason = select_gpu_type(tuple(plans))
    assert selected == expected
    if expected is None:
        assert "a too small" in reason
    else:
        assert reason.startswith(f"{expected}: ")


def test_plan_deployment_plans_every_type_in_order_and_renders_the_selected():
    spec = make_spec(placement={"gpuTypes": ["l4", "l40s", "h100_sxm_80gb"]})
    result = plan_deployment(spec)
    assert [p.gpu_type for p in result.plans] == ["l4", "l40s", "h100_sxm_80gb"]
    assert result.selected_gpu_type in {"l4", "l40s", "h100_sxm_80gb"}
    assert result.selected_capacity_plan() is not None
    assert "--max-model-len" in result.engine_args
    assert result.engine_args[result.engine_args.index("--max-model-len") + 1] == "8192"
    assert "meta-llama/Llama-3.1-8B-Instruct" in result.engine_command


def test_plan_deployment_warns_when_max_replicas_cannot_cover_the_peak():
    spec = make_spec(
        workload={**BASE["workload"], "peakRequestsPerSecond": 500},
        placement={"gpuTypes": ["l40s"]},
        scaling={"minReplicas": 1, "maxReplicas": 1},
    )
    result = plan_deployment(spec)
    assert any("maxReplicas 1 is below" in w for w in result.warnings)


def test_sampler_path_and_pinned_pool_reach_the_plan_and_the_flags():
    spec = make_spec(
        placement={"gpuTypes": ["h100_sxm_80gb"]},
        engine={"version": "0.11", "samplerPath": "flashinfer"},
        kvCache={"pool": "pinned"},
    )
    model = find_model("meta-llama/Llama-3.1-8B-Instruct")
    request = plan_request_for(spec, find_gpu("h100_sxm_80gb"), model)
    assert (request.sampler_path, request.pin_kv_pool) == ("flashinfer", True)
    result = plan_deployment(spec)
    plan = result.selected_capacity_plan()
    assert plan is not None and plan.sampler_path == "flashinfer"
    pool = plan.num_blocks * plan.page_bytes * plan.group_size_layers
    args = list(result.engine_args)
    assert args[args.index("--kv-cache-memory-bytes") + 1] == str(pool)
    assert "--gpu-memory-utilization" not in args
