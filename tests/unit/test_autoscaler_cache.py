"""The batched signal cache and the pure tick (`plan_tick`) of the autoscaler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kvscale.api.models import LLMDeploymentSpec
from kvscale.controller.autoscaler import plan_tick
from kvscale.controller.autoscaler_metrics import AutoscalerMetrics
from kvscale.controller.signals_cache import SignalsCache
from kvscale.metrics import DeploymentKey, DeploymentTarget, SignalsReading
from kvscale.scaling import Signals
from samples import llama8b_spec


class CountingSource:
    """Counts fetch calls and the targets of each; one 'query' per fetch per engine."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.queries_sent = 0

    def fetch(self, targets: Sequence[DeploymentTarget]) -> dict[DeploymentKey, SignalsReading]:
        self.calls.append(len(targets))
        if self.fail:
            raise RuntimeError("boom")
        self.queries_sent = len({t.engine for t in targets})
        return {
            t.key: SignalsReading(Signals(t.pods_expected, t.pods_expected, 0.5)) for t in targets
        }


def target(i: int, engine: str = "vllm") -> DeploymentTarget:
    return DeploymentTarget("ns", f"d{i}", engine, "0.11.0", 2)


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


async def test_one_fetch_per_cycle_for_all_targets() -> None:
    source = CountingSource()
    metrics = AutoscalerMetrics(CollectorRegistry())
    cache = SignalsCache(source, interval_s=15.0, metrics=metrics, clock=Clock())
    for i in range(50):
        cache.track(target(i, "vllm" if i % 2 else "sglang"))
    await cache.refresh()
    assert source.calls == [50]
    assert cache.last_queries == 2
    assert metrics.registry.get_sample_value("kvscale_signals_queries_per_cycle") == 2
    reading = cache.reading(DeploymentKey("ns", "d7"))
    assert reading is not None and reading.signals is not None


async def test_untracked_targets_are_dropped_after_some_cycles() -> None:
    source = CountingSource()
    cache = SignalsCache(source, interval_s=15.0, clock=Clock(), forget_after_cycles=2)
    cache.track(target(1))
    cache.track(target(2))
    await cache.refresh()
    for _ in range(3):
        cache.track(target(2))  # only d2's timer keeps asking
        await cache.refresh()
    assert source.calls == [2, 2, 1, 1]  # two cycles without a track(), then dropped
    assert cache.reading(DeploymentKey("ns", "d1")) is None


@pytest.mark.parametrize(
    ("age_s", "usable"),
    [(10.0, True), (44.0, True), (46.0, False)],  # three intervals of 15 s
)
async def test_a_stale_cache_reads_as_a_failed_read(age_s: float, usable: bool) -> None:
    clock = Clock()
    cache = SignalsCache(CountingSource(), interval_s=15.0, clock=clock)
    cache.track(target(1))
    await cache.refresh()
    clock.now_s += age_s
    reading = cache.reading(DeploymentKey("ns", "d1"))
    assert reading is not None
    assert (reading.signals is not None) is usable


async def test_a_raising_source_becomes_failed_readings() -> None:
    cache = SignalsCache(CountingSource(fail=True), interval_s=15.0, clock=Clock())
    cache.track(target(1))
    await cache.refresh()
    reading = cache.reading(DeploymentKey("ns", "d1"))
    assert reading is not None and reading.signals is None
    assert reading.error is not None and "boom" in reading.error


async def test_no_reading_before_the_first_cycle() -> None:
    cache = SignalsCache(CountingSource(), interval_s=15.0, clock=Clock())
    cache.track(target(1))
    assert cache.reading(DeploymentKey("ns", "d1")) is None


SPEC: dict[str, Any] = llama8b_spec(
    "l40s", scaling={"targetKvUtilization": 0.5, "warmupSeconds": 0}
)
DEPLOYMENT = {"spec": {"replicas": 2}, "status": {"readyReplicas": 2}}


@pytest.mark.parametrize(
    ("mode", "kv", "scale_to", "event_reason"),
    [
        ("auto", 0.9, 4, "KvDemand"),  # 0.9 x 2 replicas at target 0.5 -> 4
        ("auto", 0.5, None, None),  # within tolerance
        ("recommend", 0.9, None, None),  # recommended in status, not applied, no Event
    ],
)
def test_plan_tick(mode: str, kv: float, scale_to: int | None, event_reason: str | None) -> None:
    spec = LLMDeploymentSpec.model_validate({**SPEC, "scaling": {**SPEC["scaling"], "mode": mode}})
    reading = SignalsReading(Signals(2, 2, kv_usage_frac=kv))
    plan = plan_tick(
        spec, {}, deployment=DEPLOYMENT, pods=[], reading=reading, now_s=1_800_000_000.0
    )
    assert plan.scale_to == scale_to
    assert (plan.event.reason if plan.event else None) == event_reason
    if mode == "recommend":
        assert plan.autoscaler_status["desiredReplicas"] == 4
        assert plan.autoscaler_status["reason"] == "RecommendOnly"


def test_plan_tick_holds_on_a_failed_read_and_counts_it() -> None:
    spec = LLMDeploymentSpec.model_validate(SPEC)
    previous = {"autoscaler": {"failedReads": 1}}
    reading = SignalsReading(None, {}, "Prometheus unreachable")
    plan = plan_tick(
        spec, previous, deployment=DEPLOYMENT, pods=[], reading=reading, now_s=1_800_000_000.0
    )
    assert plan.scale_to is None
    assert plan.autoscaler_status["failedReads"] == 2
    assert plan.autoscaler_status["reason"] == "MetricsMissingHold"
    assert [c.status for c in plan.conditions] == ["False", "False"]


@pytest.mark.parametrize(
    ("interval_s", "last", "now_s", "due"),
    [
        (None, "2027-01-15T08:00:00Z", 1_800_000_001.0, True),  # operator interval only
        (10, "2027-01-15T08:00:00Z", 1_800_000_001.0, True),  # not longer than 15 s
        (60, "2027-01-15T08:00:00Z", 1_800_000_030.0, False),
        (60, "2027-01-15T08:00:00Z", 1_800_000_057.0, True),  # within a quarter tick of 60 s
        (60, None, 1_800_000_000.0, True),  # never decided
    ],
)
def test_spec_interval_longer_than_the_operators_is_honoured(
    interval_s: int | None, last: str | None, now_s: float, due: bool
) -> None:
    from kvscale.controller.autoscaler import Autoscaler
    from kvscale.controller.rollout_wiring import RolloutMemory
    from kvscale.controller.settings import ReconcileSettings, Settings

    settings = Settings(reconcile=ReconcileSettings(scaling_interval_s=15.0))
    cache = SignalsCache(CountingSource(), interval_s=15.0)
    metrics = AutoscalerMetrics(CollectorRegistry())
    autoscaler = Autoscaler(
        settings,
        None,  # type: ignore[arg-type]  # is_due makes no API call
        cache=cache,
        metrics=metrics,
        memory=RolloutMemory(),
    )
    raw_spec = {} if interval_s is None else {"scaling": {"intervalSeconds": interval_s}}
    status = {} if last is None else {"autoscaler": {"lastDecisionTime": last}}
    assert autoscaler.is_due(raw_spec, status, now_s) is due
