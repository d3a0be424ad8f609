"""spec.scaling and spec.rollout (+ the SLOs and the selected plan's figures) as the pure
core's configs: `ScalingConfig` for the scaling pipeline, `Guardrails` for the rollback.

The operator (`controller/autoscaler.py`) and the simulator (`cli/simulate_cmd.py`) build them
here, so both decide with the same numbers.
"""

from __future__ import annotations

from kvscale.api.models import LLMDeploymentSpec
from kvscale.scaling.rollback import Guardrails
from kvscale.scaling.types import Mode, ScalingConfig


def to_scaling_config(
    spec: LLMDeploymentSpec,
    safe_concurrency: float | None,
    kv_tokens: int | None,
    prefill_tokens_per_s: float | None = None,
) -> ScalingConfig:
    """spec.scaling (+ the SLOs and the selected plan's figures) as the policy's config.

    The plan's figures come from the status plan (`GpuPlanStatus`) in the operator and in
    the simulator alike, so both scale against the same capacity; None leaves a term without
    its capacity, and the term abstains.
    """
    s = spec.scaling
    return ScalingConfig(
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        mode=Mode(s.mode),
        target_kv_utilization_frac=s.target_kv_utilization,
        tolerance_frac=s.tolerance,
        safe_concurrency_per_replica=safe_concurrency,
        kv_capacity_tokens_per_replica=kv_tokens,
        max_queue_wait_s=spec.slo.max_queue_wait_seconds,
        target_waiting_per_replica=s.target_waiting_per_replica,
        ttft_p95_target_s=spec.slo.ttft_p95_seconds,
        itl_p95_target_s=spec.slo.itl_p95_seconds,
        preemptions_per_s_threshold=s.preemptions_per_second_threshold,
        scale_up_stabilization_s=float(s.scale_up_stabilization_seconds),
        scale_down_stabilization_s=float(s.scale_down_stabilization_seconds),
        max_scale_up_step=s.max_scale_up_step,
        max_scale_down_step=s.max_scale_down_step,
        scale_down_cooldown_s=float(s.scale_down_cooldown_seconds),
        warmup_s=float(s.warmup_seconds),
        failed_reads_before_fallback=s.failed_reads_before_fallback,
        fallback_replicas=s.fallback_replicas,
        min_reporting_frac=s.min_reporting_fraction,
        rejections_per_s_threshold=s.rejections_per_second_threshold,
        scale_down_guard_window_s=float(s.scale_down_guard_window_seconds),
        scale_down_max_ttft_frac=s.scale_down_max_ttft_fraction,
        max_scale_down_cooldown_s=float(s.max_scale_down_cooldown_seconds),
        prefill_tokens_per_s_per_replica=prefill_tokens_per_s,
        target_prefill_utilization_frac=s.target_prefill_utilization,
        prefill_headroom_memory_s=float(s.prefill_headroom_memory_seconds),
        forecast_horizon_s=float(s.forecast_horizon_seconds),
    )


def to_guardrails(spec: LLMDeploymentSpec) -> Guardrails:
    """spec.rollout (+ the SLOs) as the rollback guardrails: each latency keeps its own
    regression factor (maxTtftRegressionFactor, maxItlRegressionFactor); the core's
    `baseline_factor_max` (for a rate already over its limit before the change) stays the
    core default, which is also the CRD's default for both latency factors."""
    r = spec.rollout
    return Guardrails(
        bake_window_s=float(r.bake_window_seconds),
        preemptions_per_s_max=r.max_preemptions_per_second,
        rejections_per_s_max=r.max_rejections_per_second,
        ttft_p95_target_s=spec.slo.ttft_p95_seconds,
        itl_p95_target_s=spec.slo.itl_p95_seconds,
        ttft_baseline_factor_max=r.max_ttft_regression_factor,
        itl_baseline_factor_max=r.max_itl_regression_factor,
        restarts_max=r.max_restarts,
        plan_drift_frac=r.plan_drift_fraction,
    )
