"""Invariants of `decide` over many seeded random ticks (a cheap property test).

The fail-safe promise is absolute, so it is checked over a wide, random space rather than a
few hand-picked cases: with no usable data, partial coverage or unknown KV usage, the decision
never lowers the replica count (except to respect a lowered max_replicas), and it always stays
within [min_replicas, max_replicas].
"""

from __future__ import annotations

import random
from dataclasses import replace

from kvscale.scaling import (
    Mode,
    Observation,
    ReplicaCounts,
    ScalerState,
    ScalingConfig,
    Signals,
    decide,
)

TRIALS = 3000


def random_config(rng: random.Random) -> ScalingConfig:
    low = rng.randint(1, 3)
    return ScalingConfig(
        min_replicas=low,
        max_replicas=rng.randint(low, 12),
        mode=rng.choice([Mode.AUTO, Mode.RECOMMEND]),
        target_kv_utilization_frac=rng.uniform(0.5, 0.9),
        scale_down_stabilization_s=rng.choice([0.0, 60.0, 300.0]),
        scale_down_cooldown_s=rng.choice([0.0, 60.0]),
        max_scale_down_step=rng.randint(1, 4),
        fallback_replicas=rng.choice([None, rng.randint(1, 8)]),
        ttft_p95_target_s=rng.choice([None, 1.0]),
    )


def random_state(rng: random.Random, now_s: float) -> ScalerState:
    history = tuple(
        (now_s - rng.uniform(0, 600), rng.randint(1, 12)) for _ in range(rng.randint(0, 5))
    )
    return ScalerState(
        recommendations=tuple(sorted(history)),
        failed_reads=rng.randint(0, 5),
        last_scale_time_s=rng.choice([None, now_s - rng.uniform(0, 900)]),
    )


def degraded_signals(rng: random.Random, pods: int) -> Signals | None:
    """No read, nobody reporting, KV unknown, or fewer than half the pods reporting."""
    kind = rng.choice(["none", "silent", "kv_unknown", "sparse"])
    if kind == "none":
        return None
    if kind == "silent":
        return Signals(pods_expected=pods, pods_reporting=0)
    usage = rng.uniform(0.0, 1.0)
    if kind == "kv_unknown":
        return Signals(pods_expected=pods, pods_reporting=pods, num_requests_waiting=0.0)
    reporting = rng.randint(1, max(1, (pods - 1) // 2)) if pods > 2 else 0
    return Signals(pods_expected=pods, pods_reporting=reporting, kv_usage_frac=usage)


def test_degraded_data_never_scales_down() -> None:
    rng = random.Random(20261122)
    for _ in range(TRIALS):
        now_s = 10_000.0
        config = random_config(rng)
        desired = rng.randint(config.min_replicas, config.max_replicas)
        starting = rng.randint(0, desired)
        counts = ReplicaCounts(desired, desired - starting, starting)
        signals = degraded_signals(rng, pods=desired - starting)
        decision, _ = decide(config, random_state(rng, now_s), Observation(counts, signals), now_s)
        assert decision.replicas >= desired, (config, counts, signals, decision.message)


def test_decisions_stay_within_bounds() -> None:
    rng = random.Random(7)
    for _ in range(TRIALS):
        now_s = 10_000.0
        config = random_config(rng)
        desired = rng.randint(0, 15)
        counts = ReplicaCounts(desired, desired, 0)
        signals = Signals(
            pods_expected=desired,
            pods_reporting=desired,
            kv_usage_frac=rng.uniform(0, 1),
            num_requests_waiting=rng.uniform(0, 50),
            preemptions_per_s=rng.uniform(0, 2),
            ttft_p95_s=rng.uniform(0, 3),
        )
        decision, state = decide(
            config, random_state(rng, now_s), Observation(counts, signals), now_s
        )
        assert config.min_replicas <= decision.replicas <= config.max_replicas
        assert decision.act == (config.mode is Mode.AUTO and decision.replicas != desired)
        assert len(state.recommendations) <= 256


def test_lowered_max_is_the_only_way_down_during_an_outage() -> None:
    config = ScalingConfig(min_replicas=1, max_replicas=3)
    counts = ReplicaCounts(5, 5, 0)
    decision, _ = decide(config, ScalerState(), Observation(counts, None), 0.0)
    assert decision.replicas == 3
    decision, _ = decide(
        replace(config, max_replicas=8), ScalerState(), Observation(counts, None), 0.0
    )
    assert decision.replicas == 5
