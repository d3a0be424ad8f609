"""`LLMDeployment` status: conditions, the per-GPU plan, the selection, replicas and selector.

The operator writes these models with `model_dump(by_alias=True, exclude_none=True,
mode="json")`. Because the CRD schema is structural and has no blanket
preserve-unknown-fields, a status field that is not declared here is pruned by the API
server: add it here (and regenerate the CRD) before writing it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, create_model
from pydantic.alias_generators import to_snake

from kvscale.api.base import StatusModel
from kvscale.api.status_calibration import CalibrationStatus
from kvscale.api.vocabulary import ConditionType
from kvscale.scaling.forecast import MAX_DEMAND_SAMPLES
from kvscale.scaling.rollback import (
    MAX_REFUSED_HASHES,
    GuardrailSnapshot,
    RolloutPhase,
    RolloutState,
)
from kvscale.scaling.signals import SIGNAL_FIELDS
from kvscale.scaling.types import SEASON_BINS

__all__ = ["ConditionType", "StatusModel"]  # re-exported: declared in vocabulary and base

_Line = Annotated[str, Field(max_length=4096)]
_Hash = Annotated[str, Field(max_length=128)]


ConditionStatus = Literal["True", "False", "Unknown"]

_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
_CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class Condition(StatusModel):
    """One observation in the Kubernetes API convention shape (metav1.Condition)."""

    type: str = Field(
        description="Condition type, e.g. Ready, Planned, CapacitySufficient.",
        min_length=1,
        max_length=316,
        pattern=_CONDITION_TYPE,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase machine-readable reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=_REASON,
    )
    message: str = Field(
        default="", description="Human-readable detail, with the numbers.", max_length=32768
    )
    last_transition_time: datetime = Field(
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed from.", ge=0
    )


class GpuPlanStatus(StatusModel):
    """The capacity plan of one replica on one candidate GPU type."""

    gpu_type: str = Field(description="Catalog GPU type.", max_length=63)
    kv_bytes_per_token: int = Field(description="KV-cache bytes one token costs per GPU.", ge=0)
    kv_cache_tokens: int = Field(description="Tokens the replica's KV cache holds.", ge=0)
    num_blocks: int = Field(description="KV blocks the engine allocates per replica.", ge=0)
    max_concurrency: float = Field(
        description="Requests of maxContextLength tokens that fit at once (KV bound).", ge=0
    )
    safe_concurrency: float = Field(
        description="Concurrent requests one replica serves within the SLOs and KV headroom.", ge=0
    )
    limited_by: str = Field(
        description="What bounds safe concurrency: kv, slo or engine_cap.", max_length=63
    )
    fits: bool = Field(description="Whether one maxContextLength request fits on a replica.")
    reason: str = Field(
        default="",
        description="Why it does not fit, with needed vs available and the fix.",
        max_length=4096,
    )
    replicas_for_peak: int = Field(
        description="Replicas needed for the workload's peak request rate.", ge=0
    )
    usd_per_hour: float | None = Field(
        default=None, description="Indicative price of one replica per hour, US dollars.", ge=0
    )
    prefill_tokens_per_second: float | None = Field(
        default=None,
        description=(
            "Prompt tokens per second one replica prefills in full chunks (roofline); the"
            " autoscaler sizes the prompt load against it."
        ),
        ge=0,
    )
    warnings: list[_Line] = Field(
        default_factory=list, description="Planner warnings for this GPU type.", max_length=32
    )
    observed_non_kv_bytes: int | None = Field(
        default=None,
        description=(
            "Non-KV bytes per GPU this plan uses, as observed on live engines of the same model,"
            " GPU type, engine release, TP, sampler path and batch shape (the cluster's"
            " calibration record); null: the planner's model."
        ),
        ge=0,
    )
    modelled_kv_cache_tokens: int | None = Field(
        default=None,
        description="KV tokens the planner's model alone predicts (set with observedNonKvBytes).",
        ge=0,
    )


class RecommendationSample(StatusModel):
    """One raw replica recommendation remembered for stabilisation windows."""

    time_seconds: float = Field(description="When it was made, seconds since the Unix epoch.")
    replicas: int = Field(description="Recommended replicas.", ge=0)


class DemandSample(StatusModel):
    """One tick's demand in replicas' worth at full use (the forecast's trend window)."""

    time_seconds: float = Field(description="When it was seen, seconds since the Unix epoch.")
    kv_units: float | None = Field(default=None, description="KV demand, replicas' worth.")
    prefill_units: float | None = Field(
        default=None, description="Prompt-token rate, replicas' worth of prefill."
    )


class DemandProfile(StatusModel):
    """Demand by time of day in 10-minute bins (the forecast's seasonal profile), compact:
    one comma-separated number per bin, empty where never seen."""

    kv_units: str = Field(default="", description="KV demand per bin.", max_length=4096)
    prefill_units: str = Field(default="", description="Prompt demand per bin.", max_length=4096)
    open_bin: int | None = Field(
        default=None, description="Bin being filled.", ge=0, le=SEASON_BINS - 1
    )
    open_kv_sum: float = Field(default=0.0, description="Its KV demand so far (sum).", ge=0)
    open_prefill_sum: float = Field(
        default=0.0, description="Its prompt demand so far (sum).", ge=0
    )
    open_kv_count: int = Field(default=0, description="Ticks in its KV sum.", ge=0)
    open_prefill_count: int = Field(default=0, description="Ticks in its prompt sum.", ge=0)


def _signals_status_model() -> type[StatusModel]:
    """`SignalsStatus` from the signal table: one nullable, non-negative field per row."""
    fields: dict[str, Any] = {
        to_snake(f.status_key): (
            int | None if f.integer else float | None,
            Field(default=None, description=f.description, ge=0),
        )
        for f in SIGNAL_FIELDS
    }
    return create_model(
        "SignalsStatus",
        __base__=StatusModel,
        __doc__="The serving signals the last decision saw; unknown stays null (never 0).",
        **fields,
    )


if TYPE_CHECKING:
    SignalsStatus = StatusModel
else:
    SignalsStatus = _signals_status_model()


class DecisionRecord(StatusModel):
    """One entry of the bounded decision history (a new entry only when something changed)."""

    time: datetime = Field(description="When it was decided (RFC 3339).")
    from_replicas: int = Field(description="Replicas before the decision.", ge=0)
    to_replicas: int = Field(description="Replicas decided on.", ge=0)
    reason: str = Field(description="Reason constant.", max_length=256)
    message: str = Field(default="", description="Detail, with the numbers.", max_length=512)
    acted: bool = Field(description="Whether the decision was acted on.")


class AutoscalerStatus(StatusModel):
    """The autoscaler's last decision and the state it carries between ticks (ScalerState)."""

    desired_replicas: int | None = Field(default=None, description="Replicas it decided on.", ge=0)
    current_replicas: int | None = Field(
        default=None, description="Replicas the workload asked for at the decision.", ge=0
    )
    ready_replicas: int | None = Field(
        default=None, description="Replicas ready at the decision.", ge=0
    )
    starting_replicas: int | None = Field(
        default=None, description="Replicas still in their cold start at the decision.", ge=0
    )
    signals: SignalsStatus | None = Field(
        default=None, description="The serving signals the last decision saw."
    )
    metrics_quality: dict[str, Annotated[str, Field(max_length=32)]] = Field(
        default_factory=dict,
        description="Per signal: ok, partial, stale, missing, nan or unsupported.",
        max_length=32,
    )
    history: list[DecisionRecord] = Field(
        default_factory=list,
        description="The last decisions that changed something, newest last.",
        max_length=20,
    )
    reason: str | None = Field(
        default=None, description="Reason constant of the last decision.", max_length=256
    )
    message: str | None = Field(
        default=None, description="The last decision, with the numbers.", max_length=4096
    )
    act: bool | None = Field(default=None, description="Whether the decision was acted on.")
    last_decision_time: datetime | None = Field(
        default=None, description="When it last decided (RFC 3339)."
    )
    last_scale_time_seconds: float | None = Field(
        default=None, description="Last replica change, seconds since the Unix epoch."
    )
    last_scale_down_time_seconds: float | None = Field(
        default=None, description="Last scale-down, seconds since the Unix epoch."
    )
    scale_down_cooldown_seconds: float | None = Field(
        default=None,
        description="Scale-down cooldown in force (lengthened after a bad scale-down), seconds.",
        ge=0,
    )
    replicas_before_scale_down: int | None = Field(
        default=None, description="Replicas before the last scale-down (to undo it).", ge=0
    )
    starting_since_seconds: float | None = Field(
        default=None, description="First tick with replicas starting, seconds since the Unix epoch."
    )
    learned_prefill_utilization: float | None = Field(
        default=None,
        description=(
            "Share of the planned prefill rate at which the latency SLO last broke; the"
            " autoscaler keeps the prompt load below it until it expires."
        ),
        ge=0,
    )
    learned_prefill_time_seconds: float | None = Field(
        default=None, description="When that share was learned, seconds since the Unix epoch."
    )
    latency_breach_since_seconds: float | None = Field(
        default=None,
        description="Start of the current TTFT/ITL breach, seconds since the Unix epoch.",
    )
    failed_reads: int = Field(default=0, description="Consecutive failed metric reads.", ge=0)
    recommendations: list[RecommendationSample] = Field(
        default_factory=list, description="Recent raw recommendations.", max_length=512
    )
    demand_samples: list[DemandSample] = Field(
        default_factory=list,
        description="Recent demand (the forecast's trend).",
        max_length=MAX_DEMAND_SAMPLES,
    )
    demand_profile: DemandProfile | None = Field(
        default=None, description="Demand by time of day (the forecast's daily profile)."
    )


class GuardrailBaseline(StatusModel):
    """Serving signals taken before the change under watch."""

    preemptions_per_second: float | None = Field(default=None, description="Preemptions/s.")
    rejections_per_second: float | None = Field(default=None, description="Rejections/s.")
    ttft_p95_seconds: float | None = Field(default=None, description="TTFT p95, seconds.")
    itl_p95_seconds: float | None = Field(default=None, description="ITL p95, seconds.")

    @classmethod
    def from_snapshot(cls, snapshot: GuardrailSnapshot) -> GuardrailBaseline:
        return cls(
            preemptions_per_second=snapshot.preemptions_per_s,
            rejections_per_second=snapshot.rejections_per_s,
            ttft_p95_seconds=snapshot.ttft_p95_s,
            itl_p95_seconds=snapshot.itl_p95_s,
        )

    def to_snapshot(self) -> GuardrailSnapshot:
        return GuardrailSnapshot(
            self.preemptions_per_second,
            self.rejections_per_second,
            self.ttft_p95_seconds,
            self.itl_p95_seconds,
        )


class RolloutStatus(StatusModel):
    """Where the rollback guardrail stands for the last change (RolloutState), and the one
    conversion between the two (`from_state`, `to_state`)."""

    phase: RolloutPhase = Field(
        default=RolloutPhase.IDLE, description="idle, baking (a change is watched) or rolled_back."
    )
    reason: str | None = Field(
        default=None, description="Reason constant of the last transition.", max_length=256
    )
    message: str | None = Field(
        default=None, description="Detail of the last transition.", max_length=4096
    )
    last_known_good_hash: str | None = Field(
        default=None, description="Hash of the last pod template that passed.", max_length=128
    )
    candidate_hash: str | None = Field(
        default=None, description="Hash of the pod template under watch.", max_length=128
    )
    baseline: GuardrailBaseline | None = Field(
        default=None, description="Signals before the change under watch."
    )
    bake_started_seconds: float | None = Field(
        default=None, description="When the bake window started, seconds since the Unix epoch."
    )
    refused_hashes: list[_Hash] = Field(
        default_factory=list,
        description="Pod-template hashes rolled back before (not applied again).",
        max_length=MAX_REFUSED_HASHES,
    )
    healthy_checks: int = Field(
        default=0, description="Ticks of this bake that passed every guardrail.", ge=0
    )

    @classmethod
    def from_state(cls, state: RolloutState) -> RolloutStatus:
        return cls(
            phase=state.phase,
            last_known_good_hash=state.last_known_good_hash,
            candidate_hash=state.candidate_hash,
            baseline=GuardrailBaseline.from_snapshot(state.baseline),
            bake_started_seconds=state.bake_started_s,
            refused_hashes=list(state.refused_hashes),
            healthy_checks=state.healthy_checks,
        )

    def to_state(self) -> RolloutState:
        return RolloutState(
            phase=self.phase,
            last_known_good_hash=self.last_known_good_hash or None,
            candidate_hash=self.candidate_hash or None,
            baseline=(self.baseline or GuardrailBaseline()).to_snapshot(),
            bake_started_s=self.bake_started_seconds,
            refused_hashes=tuple(self.refused_hashes),
            healthy_checks=self.healthy_checks,
        )


class LLMDeploymentStatus(StatusModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects.", ge=0
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (summary), Planned, CapacitySufficient and others.",
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    model: str | None = Field(
        default=None, description="The served model (for display).", max_length=1024
    )
    plans: list[GpuPlanStatus] = Field(
        default_factory=list,
        description="The capacity plan per candidate GPU type.",
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["gpuType"],
        },
    )
    selected_gpu_type: str | None = Field(
        default=None, description="The GPU type replicas run on.", max_length=63
    )
    selection_reason: str | None = Field(
        default=None, description="Why that GPU type was selected.", max_length=4096
    )
    safe_concurrency: float | None = Field(
        default=None, description="Safe concurrency per replica on the selected GPU type.", ge=0
    )
    engine_args: list[_Line] = Field(
        default_factory=list, description="The rendered engine arguments.", max_length=256
    )
    warnings: list[_Line] = Field(
        default_factory=list,
        description="What the planner and the engine renderer warn about for the selected GPU"
        " type, e.g. maxReplicas below what the declared peak needs (each GPU type's own"
        " warnings are in plans[].warnings).",
        max_length=32,
    )
    engine_image: str | None = Field(
        default=None, description="The engine image in use.", max_length=512
    )
    replicas: int | None = Field(
        default=None, description="Current replicas of the workload (scale subresource).", ge=0
    )
    ready_replicas: int | None = Field(default=None, description="Replicas that are Ready.", ge=0)
    selector: str | None = Field(
        default=None,
        description="Label selector of the pods (scale subresource, for HPA/KEDA).",
        max_length=4096,
    )
    kv_utilization: float | None = Field(
        default=None, description="Mean KV-cache usage over ready replicas, 0..1.", ge=0, le=1
    )
    live_num_blocks: int | None = Field(
        default=None,
        description="KV blocks the running engines report (vs the planned numBlocks).",
        ge=0,
    )
    calibration: CalibrationStatus | None = Field(
        default=None,
        description="Planned vs live KV pool of the selected GPU type and the implied overhead.",
    )
    autoscaler: AutoscalerStatus | None = Field(default=None, description="The autoscaler's state.")
    rollout: RolloutStatus | None = Field(
        default=None, description="The rollback guardrail's state."
    )
    kopf: dict[str, Any] | None = Field(
        default=None,
        description="Reserved for the kopf framework's own bookkeeping.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Return `conditions` with `new` in place of the same type.

    lastTransitionTime only moves when the status value changes, as the API convention asks.
    """
    result: list[Condition] = []
    replaced = False
    for old in conditions:
        if old.type != new.type:
            result.append(old)
            continue
        replaced = True
        if old.status == new.status:
            result.append(new.model_copy(update={"last_transition_time": old.last_transition_time}))
        else:
            result.append(new)
    if not replaced:
        result.append(new)
    return result
