"""Pure autoscaler wiring: replica counts, state round-trip, history, conditions, Events."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kvscale.api.status import AutoscalerStatus
from kvscale.controller.autoscaler_status import (
    HISTORY_MAX,
    PodFacts,
    bound_history,
    build_autoscaler_status,
    count_replicas,
    dump_scaler_state,
    load_scaler_state,
    metrics_condition,
    parse_time_s,
    pod_facts,
    scale_event,
    scaling_condition,
    signals_status,
)
from kvscale.metrics import Quality, SignalsReading
from kvscale.scaling import Decision, ReplicaCounts, ScalerState, Signals, reasons
from kvscale.scaling.types import SEASON_BINS, SeasonProfile

NOW_S = 1_800_000_000.0


def deployment(replicas: int | None, ready: int) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"spec": spec, "status": {"readyReplicas": ready}}


def pod(age_s: float, *, ready: bool = True, terminating: bool = False) -> PodFacts:
    return PodFacts(
        name="p",
        created_s=NOW_S - age_s,
        ready=ready,
        terminating=terminating,
        restarts=0,
        oom_killed=0,
        crash_looping=0,
        plan_hash=None,
    )


@pytest.mark.parametrize(
    ("dep", "pods", "want"),
    [
        (deployment(3, 3), [], ReplicaCounts(3, 3, 0)),
        (deployment(3, 1), [], ReplicaCounts(3, 1, 2)),  # two not Ready yet
        (deployment(None, 0), [], ReplicaCounts(1, 0, 1)),  # API default replicas is 1
        (deployment(3, 3), [pod(30), pod(500), pod(600)], ReplicaCounts(3, 3, 0, 1)),  # young
        (deployment(3, 2), [pod(30), pod(30, ready=False)], ReplicaCounts(3, 2, 1, 1)),
        (deployment(2, 2), [pod(10, terminating=True), pod(400)], ReplicaCounts(2, 2, 0)),
        (deployment(2, 4), [], ReplicaCounts(2, 2, 0)),  # scaling down: extra Ready pods
        (deployment(2, 2), [pod(1), pod(1), pod(1)], ReplicaCounts(2, 2, 0, 2)),  # capped
    ],
)
def test_count_replicas(dep: dict[str, Any], pods: list[PodFacts], want: ReplicaCounts) -> None:
    assert count_replicas(dep, pods, now_s=NOW_S, warmup_s=180.0) == want


def test_pod_facts_reads_restarts_oom_crashloop_and_hash() -> None:
    body = {
        "metadata": {
            "name": "chat-0",
            "creationTimestamp": "2027-01-15T08:00:00Z",
            "annotations": {"kvscale.dev/plan-hash": "abc"},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "restartCount": 3,
                    "lastState": {"terminated": {"reason": "OOMKilled"}},
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
                {"restartCount": 1, "state": {"running": {}}},
            ],
        },
    }
    facts = pod_facts(body)
    assert (facts.restarts, facts.oom_killed, facts.crash_looping) == (4, 1, 1)
    assert facts.plan_hash == "abc"
    assert facts.ready is False
    assert facts.created_s == parse_time_s("2027-01-15T08:00:00+00:00")


@pytest.mark.parametrize("raw", [None, "", "yesterday", 12])
def test_parse_time_rejects_garbage(raw: Any) -> None:
    assert parse_time_s(raw) is None


@pytest.mark.parametrize(
    "state",
    [
        ScalerState(),
        ScalerState(
            recommendations=((1.0, 3), (16.0, 4)),
            failed_reads=2,
            last_scale_time_s=10.0,
            last_scale_down_time_s=5.0,
            scale_down_cooldown_s=120.0,
            replicas_before_scale_down=5,
            starting_since_s=7.5,
            learned_prefill_utilization_frac=0.42,
            learned_prefill_at_s=12.0,
            latency_breach_since_s=9.0,
        ),
    ],
)
def test_scaler_state_round_trips_through_status(state: ScalerState) -> None:
    assert load_scaler_state(dump_scaler_state(state)) == state


def test_every_scaler_state_field_is_stored_in_the_crd_status() -> None:
    # Each field set to a non-default value must survive the CRD's status model (a field the
    # schema does not declare is pruned by the API server and silently forgotten).
    bins = tuple(None if i % 3 else 0.25 * i for i in range(SEASON_BINS))
    structured = {
        "recommendations": ((1.0, 3),),
        "failed_reads": 1,
        "demand_samples": ((1.0, 0.5, None), (16.0, None, 1.25)),
        "season": SeasonProfile(bins, bins[::-1], open_bin=7, open_kv_sum=1.5, open_kv_count=2),
    }
    full = ScalerState(
        **structured,
        **{
            f.name: 0.25 if f.type == "float | None" else 2
            for f in dataclasses.fields(ScalerState)
            if f.name not in structured
        },
    )
    assert all(
        getattr(full, f.name) != f.default
        for f in dataclasses.fields(ScalerState)
        if f.name != "recommendations"
    )
    stored = AutoscalerStatus.model_validate(dump_scaler_state(full))
    again = stored.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert load_scaler_state(again) == full


def test_malformed_status_starts_afresh_field_by_field() -> None:
    raw = {
        "recommendations": [{"timeSeconds": "x", "replicas": 2}, {"timeSeconds": 3, "replicas": 4}],
        "failedReads": "many",
        "lastScaleTimeSeconds": "soon",
    }
    state = load_scaler_state(raw)
    assert state.recommendations == ((3.0, 4),)
    assert state.failed_reads == 0
    assert state.last_scale_time_s is None


def entry(reason: str, frm: int, to: int) -> dict[str, Any]:
    return {"reason": reason, "fromReplicas": frm, "toReplicas": to, "time": "t"}


@pytest.mark.parametrize(
    ("history", "new", "want_len", "want_last_reason"),
    [
        ([], entry("KvDemand", 2, 4), 1, "KvDemand"),
        ([entry("WithinTolerance", 2, 2)], entry("WithinTolerance", 2, 2), 1, "WithinTolerance"),
        ([entry("WithinTolerance", 2, 2)], entry("Stabilising", 2, 2), 2, "Stabilising"),
        ([entry("KvDemand", 2, 4)], entry("KvDemand", 4, 6), 2, "KvDemand"),
        (
            [entry(f"R{i}", i, i + 1) for i in range(HISTORY_MAX)],
            entry("Cooldown", 9, 9),
            HISTORY_MAX,
            "Cooldown",
        ),
    ],
)
def test_history_is_bounded_and_skips_repeats(
    history: list[dict[str, Any]], new: dict[str, Any], want_len: int, want_last_reason: str
) -> None:
    result = bound_history(history, new)
    assert len(result) == want_len
    assert result[-1]["reason"] == want_last_reason


def test_history_drops_the_oldest_first() -> None:
    history = [entry(f"R{i}", i, i + 1) for i in range(HISTORY_MAX)]
    result = bound_history(history, entry("New", 0, 1))
    assert result[0]["reason"] == "R1"


def reading(signals: Signals | None, error: str | None = None) -> SignalsReading:
    return SignalsReading(signals, {"kv_usage_frac": Quality.OK}, error)


@pytest.mark.parametrize(
    ("read", "status", "reason"),
    [
        (None, "Unknown", "AwaitingFirstRead"),
        (reading(None, "Prometheus unreachable"), "False", "ReadFailed"),
        (reading(Signals(2, 0), "no series"), "False", "NoUsableSamples"),
        (reading(Signals(3, 2, kv_usage_frac=0.5)), "True", "SignalsPartial"),
        (reading(Signals(2, 2, kv_usage_frac=0.5)), "True", "SignalsRead"),
    ],
)
def test_metrics_condition(read: SignalsReading | None, status: str, reason: str) -> None:
    update = metrics_condition(read)
    assert (update.type, update.status, update.reason) == ("MetricsAvailable", status, reason)


def decision(replicas: int, reason: str, act: bool = True) -> Decision:
    return Decision(replicas, reason, f"because {reason}", act)


@pytest.mark.parametrize(
    ("dec", "auto", "status", "reason"),
    [
        (decision(4, reasons.KV_DEMAND), True, "True", "Acting"),
        (decision(4, reasons.METRICS_MISSING_HOLD, False), True, "False", "HoldingOnMissingData"),
        (decision(4, reasons.FALLBACK), True, "False", "HoldingOnMissingData"),
        (decision(4, reasons.RECOMMEND_ONLY, False), False, "False", "RecommendOnly"),
    ],
)
def test_scaling_condition(dec: Decision, auto: bool, status: str, reason: str) -> None:
    update = scaling_condition(dec, auto)
    assert (update.status, update.reason) == (status, reason)


@pytest.mark.parametrize(
    ("dec", "current", "auto", "want"),
    [
        (decision(4, reasons.KV_DEMAND), 2, True, ("Normal", "KvDemand", "scaled up 2 -> 4")),
        (
            decision(3, reasons.STEP_LIMITED),
            4,
            True,
            ("Normal", "StepLimited", "scaled down 4 -> 3"),
        ),
        (
            decision(5, reasons.SCALE_DOWN_REVERTED),
            4,
            True,
            ("Warning", "ScaleDownReverted", "scaled up 4 -> 5"),
        ),
        (decision(2, reasons.WITHIN_TOLERANCE, False), 2, True, None),
        (decision(4, reasons.RECOMMEND_ONLY, False), 2, False, None),
    ],
)
def test_scale_event(
    dec: Decision, current: int, auto: bool, want: tuple[str, str, str] | None
) -> None:
    event = scale_event(dec, current, auto)
    if want is None:
        assert event is None
    else:
        assert event is not None
        assert (event.type, event.reason) == want[:2]
        assert event.message.startswith(want[2])
        assert dec.message in event.message


def test_signals_status_keeps_unknown_as_null_and_drops_nan() -> None:
    signals = Signals(2, 2, kv_usage_frac=0.61, ttft_p95_s=float("nan"), num_gpu_blocks=3800)
    out = signals_status(reading(signals))
    assert out["kvUsage"] == 0.61
    assert out["ttftP95Seconds"] is None
    assert out["itlP95Seconds"] is None  # unknown, not 0
    assert out["numGpuBlocks"] == 3800
    cleared = signals_status(reading(None))
    assert set(cleared) == set(out)  # a failed read clears every number of the last good one
    assert all(value is None for value in cleared.values())


def test_autoscaler_status_records_desired_vs_current_and_history() -> None:
    previous = {"history": [entry("WithinTolerance", 2, 2)]}
    counts = ReplicaCounts(desired=2, ready=2, starting=0)
    state = ScalerState(failed_reads=0, last_scale_time_s=NOW_S)
    out = build_autoscaler_status(
        previous,
        decision(4, reasons.KV_DEMAND),
        state=state,
        counts=counts,
        reading=reading(Signals(2, 2, kv_usage_frac=0.9)),
        now_s=NOW_S,
    )
    assert (out["desiredReplicas"], out["currentReplicas"]) == (4, 2)
    assert out["lastDecisionTime"] == "2027-01-15T08:00:00Z"
    assert [h["reason"] for h in out["history"]] == ["WithinTolerance", "KvDemand"]
    assert out["lastScaleTimeSeconds"] == NOW_S
    assert out["metricsQuality"]["kvUsage"] == "ok"
    assert out["metricsQuality"]["ttftP95Seconds"] == "missing"
    assert set(out["metricsQuality"]) <= {*out["signals"], "kvCapacity"}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("signals", [Signals(3, 2, kv_usage_frac=0.7, num_gpu_blocks=10), None])
def test_every_field_written_is_declared_in_the_crd(signals: Signals | None) -> None:
    """The API server prunes undeclared status fields: what the autoscaler writes must survive
    a round trip through the model the CRD is generated from (minus nulls, which a merge
    patch turns into deletions)."""
    out = build_autoscaler_status(
        {},
        decision(3, reasons.KV_DEMAND),
        state=ScalerState(failed_reads=1, last_scale_time_s=NOW_S),
        counts=ReplicaCounts(desired=2, ready=1, starting=1),
        reading=reading(signals),
        now_s=NOW_S,
    )
    kept = AutoscalerStatus.model_validate(out).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    assert _without_nulls(kept) == _without_nulls(out)
