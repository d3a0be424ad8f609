"""`spec.scaling` and `spec.rollout`: the autoscaling policy and the rollback guardrails.

Split from `models.py` to keep modules short; `kvscale.api.convert` maps these 1:1 onto
`kvscale.scaling.ScalingConfig` and `kvscale.scaling.rollback.Guardrails`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvscale.api.base import ApiModel, CelRule, ordered_rule
from kvscale.scaling.rollback import Guardrails

_GUARDRAILS = Guardrails()  # the rollback core's defaults are spec.rollout's

ScalingMode = Literal["auto", "recommend"]


class ScalingSpec(ApiModel):
    """Autoscaling targets, windows and guards (maps 1:1 onto kvscale.scaling.ScalingConfig)."""

    min_replicas: int = Field(default=1, description="Fewest replicas.", ge=1, le=1000)
    max_replicas: int = Field(default=10, description="Most replicas.", ge=1, le=1000)
    mode: ScalingMode = Field(
        default="auto", description="auto acts on decisions; recommend only writes them to status."
    )
    target_kv_utilization: float = Field(
        default=0.75, description="KV-cache usage fraction to hold each replica at.", ge=0.05, le=1
    )
    tolerance: float = Field(
        default=0.1,
        description="Dead band around the target (fraction) with no change.",
        ge=0,
        le=0.5,
    )
    target_waiting_per_replica: float = Field(
        default=2.0,
        description="Queued requests one replica may hold before scaling up.",
        ge=0,
        le=10000,
    )
    preemptions_per_second_threshold: float = Field(
        default=0.1,
        description="Sustained preemptions per second that force a scale-up.",
        ge=0,
        le=10000,
    )
    scale_up_stabilization_seconds: int = Field(
        default=0,
        description="Window over which the lowest scale-up recommendation wins.",
        ge=0,
        le=3600,
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        description=(
            "Window over which the highest recommendation wins before scaling down; one"
            " forecast horizon while the KV and prompt demand surely fall."
        ),
        ge=0,
        le=3600,
    )
    max_scale_up_step: int = Field(
        default=4, description="Replicas added in one decision at most.", ge=1, le=100
    )
    max_scale_down_step: int = Field(
        default=1, description="Replicas removed in one decision at most.", ge=1, le=100
    )
    scale_down_cooldown_seconds: int = Field(
        default=60,
        description="No scale-down this soon after any scale change, seconds.",
        ge=0,
        le=3600,
    )
    warmup_seconds: int = Field(
        default=180,
        description="A replica this young still counts as incoming capacity, seconds.",
        ge=0,
        le=3600,
    )
    failed_reads_before_fallback: int = Field(
        default=3,
        description="Consecutive failed metric reads before fallbackReplicas applies.",
        ge=1,
        le=100,
    )
    fallback_replicas: int | None = Field(
        default=None,
        description="Replicas to hold during a metrics outage; unset holds the current count.",
        ge=1,
        le=1000,
    )
    min_reporting_fraction: float = Field(
        default=0.5,
        description="Share of pods that must report before the data counts as complete.",
        ge=0,
        le=1,
    )
    rejections_per_second_threshold: float = Field(
        default=0.0,
        description="Engine rejections (HTTP 429/503) per second above which it scales up.",
        ge=0,
        le=10000,
    )
    scale_down_guard_window_seconds: int = Field(
        default=300,
        description="A breach this soon after a scale-down undoes it, seconds.",
        ge=0,
        le=86400,
    )
    scale_down_max_ttft_fraction: float = Field(
        default=0.5,
        description=(
            "Scale in only while TTFT p95 has stayed at or below this share of"
            " spec.slo.ttftP95Seconds for the whole scale-down stabilisation window (1: only"
            " the SLO itself holds a scale-in)."
        ),
        gt=0,
        le=1,
    )
    max_scale_down_cooldown_seconds: int = Field(
        default=3600,
        description="Ceiling of the cooldown that doubles after an undone scale-down, seconds.",
        ge=0,
        le=86400,
    )
    target_prefill_utilization: float = Field(
        default=0.7,
        description=(
            "Share of the planned prefill rate (prompt tokens per second per replica) the"
            " prompt load may use before scaling up."
        ),
        gt=0,
        le=1,
    )
    prefill_headroom_memory_seconds: int = Field(
        default=3600,
        description="How long a lower prefill target learned from an SLO breach lasts, seconds.",
        gt=0,
        le=604800,
    )
    forecast_horizon_seconds: int = Field(
        default=120,
        description=(
            "Size for the KV and prompt demand forecast this far ahead (trend and daily"
            " profile), seconds: a replica's cold start plus half the 60 s signal window and"
            " one decision interval. 0 turns the forecast off."
        ),
        ge=0,
        le=3600,
    )
    interval_seconds: int = Field(
        default=15, description="Seconds between autoscaling decisions.", ge=5, le=600
    )

    cel_rules = (
        ordered_rule(
            "minReplicas",
            "maxReplicas",
            "must be ≥ minReplicas",
            "raise maxReplicas or lower minReplicas",
        ),
        CelRule(
            rule="!has(self.fallbackReplicas) || (self.fallbackReplicas >= self.minReplicas"
            " && self.fallbackReplicas <= self.maxReplicas)",
            message="must lie within [minReplicas, maxReplicas]",
            fix="set fallbackReplicas between minReplicas and maxReplicas",
            field="fallbackReplicas",
            violation=lambda s: (
                None
                if s.fallback_replicas is None
                or s.min_replicas <= s.fallback_replicas <= s.max_replicas
                else f"{s.fallback_replicas} outside [{s.min_replicas}, {s.max_replicas}]"
            ),
        ),
    )


class RolloutSpec(ApiModel):
    """Guardrails that roll back a flag/capacity change or a scale-down that regresses serving."""

    enabled: bool = Field(default=True, description="Watch changes and roll back regressions.")
    bake_window_seconds: int = Field(
        default=round(_GUARDRAILS.bake_window_s),
        description="How long a change is watched before it is kept, seconds.",
        ge=0,
        le=86400,
    )
    max_preemptions_per_second: float = Field(
        default=_GUARDRAILS.preemptions_per_s_max,
        description="Preemptions per second above which a change is rolled back.",
        ge=0,
        le=10000,
    )
    max_ttft_regression_factor: float = Field(
        default=_GUARDRAILS.baseline_factor_max,
        description="TTFT p95 growth (new/old) above which a change is rolled back.",
        ge=1,
        le=100,
    )
    max_itl_regression_factor: float = Field(
        default=_GUARDRAILS.baseline_factor_max,
        description="ITL p95 growth (new/old) above which a change is rolled back.",
        ge=1,
        le=100,
    )
    max_rejections_per_second: float = Field(
        default=_GUARDRAILS.rejections_per_s_max,
        description="Rejected requests per second above which a change is rolled back.",
        ge=0,
        le=10000,
    )
    max_restarts: int = Field(
        default=_GUARDRAILS.restarts_max,
        description="Engine container restarts during the bake window that roll back.",
        ge=0,
        le=100,
    )
    plan_drift_fraction: float = Field(
        default=_GUARDRAILS.plan_drift_frac,
        description="Relative gap between planned and live KV blocks that is reported as drift.",
        ge=0,
        le=1,
    )
