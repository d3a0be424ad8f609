"""Pure pieces of the autoscaler wiring: observation in, status patch and Event text out.

Everything here is a function of plain dicts and domain values (no kopf, no API calls, no
clock), so the timer in `kvscale.controller.autoscaler` stays a thin shell and every rule —
how replicas that are still starting are counted, how `ScalerState` round-trips through CR
status, how the decision history is bounded, what an Event says — is table-tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kvscale.api.vocabulary import ConditionType, MetricsReason, ScalingReason
from kvscale.controller.conditions import FALSE, TRUE, UNKNOWN, ConditionUpdate
from kvscale.controller.events import EventNote
from kvscale.controller.workload import ANNOTATION_PLAN_HASH
from kvscale.metrics.source import SIGNAL_NAMES, Quality, SignalsReading
from kvscale.scaling import observe, reasons
from kvscale.scaling.forecast import Demand, seed_profile
from kvscale.scaling.signals import SIGNAL_FIELDS
from kvscale.scaling.types import (
    SEASON_BINS,
    Decision,
    ReplicaCounts,
    ScalerState,
    SeasonProfile,
    Signals,
)

JsonDict = dict[str, Any]

HISTORY_MAX = 20  # decisions kept in status.autoscaler.history (newest last)
METRICS_AVAILABLE = ConditionType.METRICS_AVAILABLE
SCALING_ACTIVE = ConditionType.SCALING_ACTIVE
__all__ = ["MetricsReason", "ScalingReason"]  # re-exported: declared in kvscale.api.vocabulary


@dataclass(frozen=True)
class PodFacts:
    """What the autoscaler and the rollout guardrails need from one engine pod."""

    name: str
    created_s: float | None  # creationTimestamp, seconds since the Unix epoch
    ready: bool
    terminating: bool
    restarts: int  # container restarts, summed over containers
    oom_killed: int  # containers whose last termination was OOMKilled
    crash_looping: int  # containers waiting in CrashLoopBackOff
    plan_hash: str | None  # kvscale.dev/plan-hash of the template the pod was made from


def parse_time_s(value: Any) -> float | None:
    """RFC 3339 ('2026-01-01T00:00:00Z') to epoch seconds; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    """Summarise a Pod object (as the API serves it) for the autoscaler's index."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    restarts = oom = crash = 0
    for container in status.get("containerStatuses") or []:
        restarts += int(container.get("restartCount") or 0)
        terminated = (container.get("lastState") or {}).get("terminated") or {}
        oom += terminated.get("reason") == "OOMKilled"
        waiting = (container.get("state") or {}).get("waiting") or {}
        crash += waiting.get("reason") == "CrashLoopBackOff"
    annotations = meta.get("annotations") or {}
    return PodFacts(
        name=str(meta.get("name", "")),
        created_s=parse_time_s(meta.get("creationTimestamp")),
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
        restarts=restarts,
        oom_killed=oom,
        crash_looping=crash,
        plan_hash=annotations.get(ANNOTATION_PLAN_HASH),
    )


def count_replicas(
    deployment: Mapping[str, Any],
    pods: Sequence[PodFacts],
    *,
    now_s: float,
    warmup_s: float,
) -> ReplicaCounts:
    """Replica counts for the policy from the Deployment and (when known) its pods, by the
    rule the simulator also uses (`kvscale.scaling.observe.count_replicas`)."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    raw = spec.get("replicas")
    desired = 1 if raw is None else int(raw)  # the API server's default is 1
    ready = int(status.get("readyReplicas") or 0)
    return observe.count_replicas(desired, ready, pods, now_s=now_s, warmup_s=warmup_s)


def load_scaler_state(raw: Mapping[str, Any] | None) -> ScalerState:
    """`ScalerState` from status.autoscaler (tolerant: a malformed field starts afresh)."""
    raw = raw or {}
    samples: list[tuple[float, int]] = []
    for item in raw.get("recommendations") or []:
        try:
            samples.append((float(item["timeSeconds"]), int(item["replicas"])))
        except (KeyError, TypeError, ValueError):
            continue
    scalars = {attribute: read(raw.get(key)) for key, attribute, read in _SCALAR_STATE}
    return ScalerState(
        recommendations=tuple(samples),
        demand_samples=_load_demand_samples(raw.get("demandSamples")),
        season=_load_profile(raw.get("demandProfile")),
        **scalars,
    )


def _load_demand_samples(raw: Any) -> tuple[tuple[float, float | None, float | None], ...]:
    samples = []
    for item in raw if isinstance(raw, list) else []:
        time_s = _float_or_none(item.get("timeSeconds")) if isinstance(item, Mapping) else None
        if time_s is not None:
            kv, prefill = item.get("kvUnits"), item.get("prefillUnits")
            samples.append((time_s, _float_or_none(kv), _float_or_none(prefill)))
    return tuple(samples)


def _load_profile(raw: Any) -> SeasonProfile | None:
    """The daily profile from status (None when absent or malformed: it is learned afresh)."""
    if not isinstance(raw, Mapping):
        return None
    kv, prefill = _load_bins(raw.get("kvUnits")), _load_bins(raw.get("prefillUnits"))
    open_bin = _int_or_none(raw.get("openBin"))
    if kv is None or prefill is None or (open_bin is not None and not 0 <= open_bin < SEASON_BINS):
        return None
    return SeasonProfile(
        kv_units=kv,
        prefill_units=prefill,
        open_bin=open_bin,
        open_kv_sum=_float_or_none(raw.get("openKvSum")) or 0.0,
        open_prefill_sum=_float_or_none(raw.get("openPrefillSum")) or 0.0,
        open_kv_count=_int_or(raw.get("openKvCount"), 0),
        open_prefill_count=_int_or(raw.get("openPrefillCount"), 0),
    )


def _load_bins(text: Any) -> tuple[float | None, ...] | None:
    if not isinstance(text, str):
        return None
    parts = text.split(",")
    if len(parts) != SEASON_BINS:
        return None
    try:
        return tuple(float(part) if part else None for part in parts)
    except ValueError:
        return None


def seed_demand_profile(
    status: Mapping[str, Any], history: Sequence[tuple[float, float | None, float | None]]
) -> JsonDict:
    """Status with a daily profile learned from `history` ((time_s, KV demand, prompt tokens/s)
    from Prometheus), unless it already holds one or the history is empty. The prompt rate is
    counted in replicas' worth of the selected plan's prefill rate, as the ticks count it."""
    autoscaler = dict(status.get("autoscaler") or {})
    if autoscaler.get("demandProfile") or not history:
        return dict(status)
    capacity = planned_prefill_tokens_per_s_of(status)
    profile = seed_profile(
        [
            (time_s, Demand(kv, None if rate is None or capacity is None else rate / capacity))
            for time_s, kv, rate in history
        ]
    )
    autoscaler["demandProfile"] = _dump_profile(profile)
    return {**status, "autoscaler": autoscaler}


def _dump_profile(profile: SeasonProfile | None) -> JsonDict | None:
    if profile is None:
        return None
    return {
        "kvUnits": ",".join("" if v is None else repr(v) for v in profile.kv_units),
        "prefillUnits": ",".join("" if v is None else repr(v) for v in profile.prefill_units),
        "openBin": profile.open_bin,
        "openKvSum": profile.open_kv_sum,
        "openPrefillSum": profile.open_prefill_sum,
        "openKvCount": profile.open_kv_count,
        "openPrefillCount": profile.open_prefill_count,
    }


def dump_scaler_state(state: ScalerState) -> JsonDict:
    """The camelCase status fields of `ScalerState` (None written as null so merges clear)."""
    return {
        "recommendations": [
            {"timeSeconds": time_s, "replicas": replicas}
            for time_s, replicas in state.recommendations
        ],
        **{key: getattr(state, attribute) for key, attribute, _ in _SCALAR_STATE},
        "demandSamples": [
            {"timeSeconds": time_s, "kvUnits": kv, "prefillUnits": prefill}
            for time_s, kv, prefill in state.demand_samples
        ],
        "demandProfile": _dump_profile(state.season),
    }


_SIGNAL_FIELDS: tuple[tuple[str, str], ...] = tuple(  # status key, Signals attribute
    (f.status_key, f.attribute) for f in SIGNAL_FIELDS
)


def signals_status(reading: SignalsReading | None) -> JsonDict:
    """status.autoscaler.signals: the values the decision saw (unknown stays null, never 0).

    Every key is always present: a failed read writes nulls, so a merge patch clears the
    numbers of the last good read instead of leaving them on display during an outage.
    """
    signals = None if reading is None else reading.signals
    out: JsonDict = {}
    for key, attribute in _SIGNAL_FIELDS:
        value = None if signals is None else getattr(signals, attribute)
        out[key] = _finite(value) if isinstance(value, float) else value
    return out


# metricsQuality uses the keys of status.autoscaler.signals; kv_capacity covers both pool keys.
_QUALITY_KEY_OF_SIGNAL: dict[str, str] = {
    **{attribute: key for key, attribute in _SIGNAL_FIELDS},
    "kv_capacity": "kvCapacity",
}


def quality_status(reading: SignalsReading | None) -> JsonDict:
    """status.autoscaler.metricsQuality: one quality word per signal, keyed like `signals`."""
    if reading is None:
        return {}
    return {
        _QUALITY_KEY_OF_SIGNAL.get(name, _camel(name)): str(reading.quality_of(name))
        for name in SIGNAL_NAMES
    }


def bound_history(
    history: Iterable[Mapping[str, Any]], entry: JsonDict, limit: int = HISTORY_MAX
) -> list[JsonDict]:
    """Append `entry` when it says something new (replicas or reason changed); keep `limit`.

    Repeating the same hold every 15 s would push every real change out of a 20-entry list;
    the last decision is always in `status.autoscaler` itself.
    """
    kept = [dict(item) for item in history if isinstance(item, Mapping)]
    last = kept[-1] if kept else None
    same = (
        last is not None
        and last.get("reason") == entry.get("reason")
        and last.get("fromReplicas") == entry.get("fromReplicas")
        and last.get("toReplicas") == entry.get("toReplicas")
    )
    if not same:
        kept.append(entry)
    return kept[-limit:]


def build_autoscaler_status(
    previous: Mapping[str, Any] | None,
    decision: Decision,
    *,
    state: ScalerState,
    counts: ReplicaCounts,
    reading: SignalsReading | None,
    now_s: float,
) -> JsonDict:
    """The whole status.autoscaler object after one tick."""
    previous = previous or {}
    stamp = format_time(now_s)
    entry: JsonDict = {
        "time": stamp,
        "fromReplicas": counts.desired,
        "toReplicas": decision.replicas,
        "reason": decision.reason,
        "message": decision.message[:512],
        "acted": decision.act,
    }
    return {
        "desiredReplicas": decision.replicas,
        "currentReplicas": counts.desired,
        "readyReplicas": counts.ready,
        "startingReplicas": counts.starting,
        "reason": decision.reason,
        "message": decision.message[:4096],
        "act": decision.act,
        "lastDecisionTime": stamp,
        "signals": signals_status(reading),
        "metricsQuality": quality_status(reading),
        "history": bound_history(previous.get("history") or [], entry),
        **dump_scaler_state(state),
    }


def metrics_condition(reading: SignalsReading | None) -> ConditionUpdate:
    """MetricsAvailable from one reading (True also for partial data, with the coverage)."""
    if reading is None:
        return ConditionUpdate(
            METRICS_AVAILABLE, UNKNOWN, MetricsReason.AWAITING, "no metrics read yet"
        )
    signals = reading.signals
    if signals is None:
        return ConditionUpdate(
            METRICS_AVAILABLE, FALSE, MetricsReason.READ_FAILED, reading.error or "read failed"
        )
    if signals.pods_reporting <= 0:
        detail = reading.error or "no pod reported a usable sample"
        return ConditionUpdate(METRICS_AVAILABLE, FALSE, MetricsReason.NO_SAMPLES, detail)
    coverage = f"{signals.pods_reporting}/{signals.pods_expected} pods reporting"
    if reading.quality_of("kv_usage_frac") is Quality.PARTIAL or (
        signals.pods_reporting < signals.pods_expected
    ):
        return ConditionUpdate(METRICS_AVAILABLE, TRUE, MetricsReason.PARTIAL, coverage)
    return ConditionUpdate(METRICS_AVAILABLE, TRUE, MetricsReason.OK, coverage)


def scaling_condition(decision: Decision, auto: bool) -> ConditionUpdate:
    """ScalingActive: True while the autoscaler may act; False while it only holds or recommends."""
    # The reason only (numbers are in status.autoscaler.message): a message that changed
    # every tick would rewrite the shared conditions list every tick.
    text = f"last decision: {decision.reason}"
    if not auto:
        return ConditionUpdate(SCALING_ACTIVE, FALSE, ScalingReason.RECOMMENDING, text)
    if decision.reason in (reasons.METRICS_MISSING_HOLD, reasons.FALLBACK):
        return ConditionUpdate(SCALING_ACTIVE, FALSE, ScalingReason.HOLDING, text)
    return ConditionUpdate(SCALING_ACTIVE, TRUE, ScalingReason.ACTING, text)


def scale_event(decision: Decision, current: int, auto: bool) -> EventNote | None:
    """The Event for a replica change (None when nothing changes or nothing is applied).

    In recommend mode nothing is applied, so there is no Event: the recommendation is in
    status and on /metrics.
    """
    if not auto or not decision.act or decision.replicas == current:
        return None
    direction = "up" if decision.replicas > current else "down"
    kind = "Warning" if decision.reason == reasons.SCALE_DOWN_REVERTED else "Normal"
    message = f"scaled {direction} {current} -> {decision.replicas}: {decision.message}"
    return EventNote(kind, decision.reason, message[:1024])


def kv_pool_blocks(signals: Signals | None) -> int | None:
    """Live KV pool per replica in the engine's blocks (tokens for token-pool engines)."""
    return None if signals is None else signals.num_gpu_blocks


def planned_kv_tokens_of(status: Mapping[str, Any]) -> int | None:
    """kvCacheTokens of the selected GPU type's plan in status (None when not planned)."""
    tokens = selected_plan_figure(status, "kvCacheTokens")
    return None if tokens is None else int(tokens)


def planned_prefill_tokens_per_s_of(status: Mapping[str, Any]) -> float | None:
    """prefillTokensPerSecond of the selected GPU type's plan in status (None when unknown:
    a status written before the field existed, or a plan that does not fit)."""
    rate = selected_plan_figure(status, "prefillTokensPerSecond")
    return None if rate is None or rate <= 0 else float(rate)


def selected_plan_figure(status: Mapping[str, Any], key: str) -> int | float | None:
    """A finite number from the selected GPU type's entry of status.plans (None otherwise)."""
    selected = status.get("selectedGpuType")
    for plan in status.get("plans") or []:
        if isinstance(plan, Mapping) and plan.get("gpuType") == selected:
            value = plan.get(key)
            return value if isinstance(value, int | float) and math.isfinite(value) else None
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _int_or_none(value: Any) -> int | None:
    return None if value is None else _int_or(value, 0)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# The scalar fields of `ScalerState` in status.autoscaler: (status key, attribute, reader).
# Structured fields (recommendations, demand samples, the daily profile) have their own codecs.
_SCALAR_STATE: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("failedReads", "failed_reads", lambda v: _int_or(v, 0)),
    ("lastScaleTimeSeconds", "last_scale_time_s", _float_or_none),
    ("lastScaleDownTimeSeconds", "last_scale_down_time_s", _float_or_none),
    ("scaleDownCooldownSeconds", "scale_down_cooldown_s", _float_or_none),
    ("replicasBeforeScaleDown", "replicas_before_scale_down", _int_or_none),
    ("startingSinceSeconds", "starting_since_s", _float_or_none),
    ("learnedPrefillUtilization", "learned_prefill_utilization_frac", _float_or_none),
    ("learnedPrefillTimeSeconds", "learned_prefill_at_s", _float_or_none),
    ("latencyBreachSinceSeconds", "latency_breach_since_s", _float_or_none),
)
