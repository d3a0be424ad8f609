"""The forecast term: trend and daily profile, one cold start ahead (ADR 0009)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from kvscale.scaling import Observation, ReplicaCounts, ScalerState, ScalingConfig, decide, reasons
from kvscale.scaling.forecast import (
    SEASON_BIN_S,
    SEASON_S,
    Demand,
    fold_sample,
    profile_at,
    seasonal_forecast,
    seed_profile,
    sure_fall,
    trend_forecast,
)
from kvscale.scaling.types import SEASON_BINS, SeasonProfile
from samples import signals

CONFIG = ScalingConfig(min_replicas=1, max_replicas=20, warmup_s=0.0, forecast_horizon_s=120.0)
TICK_S = 15.0


def test_a_steady_ramp_is_extrapolated_over_the_horizon() -> None:
    samples = [(t, 2.0 + t / 600.0) for t in range(0, 301, 15)]  # +0.1 replica/min
    forecast = trend_forecast(samples, 300.0, 120.0)
    assert forecast is not None
    assert forecast[0] == pytest.approx(2.5 + 0.2, rel=1e-6)


def test_a_rise_that_began_inside_the_window_counts_at_its_own_pace() -> None:
    # flat for three minutes, then +0.3 replica/min: neither one line nor one step fits the
    # window, the newer half is a clean line
    rng = random.Random(5)
    samples = [
        (float(t), 1.0 + max(0.0, t - 180.0) / 200.0 + rng.gauss(0.0, 0.01))
        for t in range(0, 301, 15)
    ]
    forecast = trend_forecast(samples, 300.0, 120.0)
    assert forecast is not None
    level, slope = samples[-1][1], forecast[1] * 60
    assert 0.2 < slope <= 0.3 + 0.02  # the rise's pace less its uncertainty, not diluted
    assert forecast[0] == pytest.approx(level + forecast[1] * 120.0)


@pytest.mark.parametrize(
    "shape",
    [
        lambda t, rng: 3.0 + rng.gauss(0.0, 0.3),  # flat and noisy (a bursty hour)
        lambda t, rng: 2.0 if t < 150 else 3.5,  # a step: a burst arrived and stays
        lambda t, rng: 2.0 if t < 240 else 3.5,  # the same step inside the newer half
        lambda t, rng: 4.0 - t / 300.0,  # falling: the reactive terms size for now
    ],
    ids=["noise", "step", "late-step", "falling"],
)
def test_noise_steps_and_falls_are_no_trend(shape) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(3)
    samples = [(float(t), shape(t, rng)) for t in range(0, 301, 15)]
    assert trend_forecast(samples, 300.0, 120.0) is None


def _tick(config: ScalingConfig, state: ScalerState, now_s: float, replicas: int, usage: float):  # type: ignore[no-untyped-def]
    observation = Observation(
        ReplicaCounts(replicas, replicas, 0), signals(replicas, kv_usage_frac=usage)
    )
    return decide(config, state, observation, now_s)


def test_a_ramp_scales_out_before_the_kv_term_would_and_says_why() -> None:
    config, state, replicas = CONFIG, ScalerState(), 4
    reactive = replace(CONFIG, forecast_horizon_s=0.0)
    reactive_state = ScalerState()
    first_forecast = first_reactive = None
    for index in range(40):
        now_s = index * TICK_S
        demand = 2.0 + now_s / 300.0  # replicas' worth of KV, rising 0.2/min
        decision, state = _tick(config, state, now_s, replicas, demand / replicas)
        plain, reactive_state = _tick(reactive, reactive_state, now_s, 4, demand / 4)
        if first_forecast is None and decision.replicas > replicas:
            first_forecast = (now_s, decision)
        if first_reactive is None and plain.replicas > 4:
            first_reactive = now_s
    assert first_forecast is not None and first_reactive is not None
    at_s, decision = first_forecast
    assert at_s < first_reactive
    assert decision.reason == reasons.FORECAST
    assert "trend" in decision.message and "in 120s" in decision.message


def _daily_ramp(t_s: float) -> float:
    """Demand in replicas' worth: 2 at night, 8 from 08:00 (as 10-minute bins see a ramp)."""
    return 8.0 if (t_s % SEASON_S) >= 8 * 3600.0 else 2.0


YESTERDAY = seed_profile([(t, Demand(_daily_ramp(t), None)) for t in range(0, 86400, 60)])


def test_the_daily_profile_pre_scales_before_the_ramp_and_names_itself() -> None:
    state = ScalerState(season=YESTERDAY)
    now_s = SEASON_S + 8 * 3600.0 - 30.0  # 30 s before today's ramp, demand still flat
    for index in range(12):  # a flat morning so far: no trend
        at_s = now_s - (11 - index) * TICK_S
        decision, state = _tick(CONFIG, state, at_s, 3, 2.0 / 3)
    assert decision.reason == reasons.FORECAST
    assert "daily profile" in decision.message
    assert decision.replicas > 3


def test_no_scale_in_while_the_profile_says_demand_is_coming_back() -> None:
    config = replace(CONFIG, scale_down_stabilization_s=0.0, scale_down_cooldown_s=0.0)
    now_s = SEASON_S + 8 * 3600.0 - 60.0
    # 1.2 replicas' worth on 3: the KV term alone would remove one
    reactive, _ = _tick(config, ScalerState(), now_s, 3, 0.4)
    decision, _ = _tick(config, ScalerState(season=YESTERDAY), now_s, 3, 0.4)
    assert reactive.replicas == 2
    assert decision.replicas == 3
    assert decision.reason == reasons.FORECAST


def test_the_profile_blends_each_day_into_its_bin() -> None:
    profile = SeasonProfile()
    for day, level in enumerate((4.0, 2.0)):
        for minute in range(11):  # 10:00-10:10, and the first tick of the next bin
            profile = fold_sample(
                profile, day * SEASON_S + 36000.0 + 60 * minute, Demand(level, 1.0)
            )
    index = int(36000.0 // SEASON_BIN_S)
    assert profile.kv_units[index] == pytest.approx(3.0)  # half today, half the days before
    assert profile.prefill_units[index] == pytest.approx(1.0)
    assert profile.kv_units[index + 1] == pytest.approx(4.0)  # day 1's last tick, closed on day 2
    assert sum(v is not None for v in profile.kv_units) == 2


def test_seasonal_forecast_is_todays_level_times_the_profiles_growth() -> None:
    bins = tuple(float(1 + i // 72) for i in range(SEASON_BINS))  # 1 until noon, 2 after
    noon = 12 * 3600.0
    forecast = seasonal_forecast(bins, noon - 300.0, 600.0, level=3.0)
    assert forecast is not None
    assert forecast[1] == pytest.approx(2.0)
    assert forecast[0] == pytest.approx(6.0)
    assert profile_at((None,) * SEASON_BINS, noon) is None
    assert math.isclose(profile_at(bins, noon) or 0.0, 1.5)


def test_an_unknown_demand_is_no_evidence_of_a_quiet_bin() -> None:
    profile = SeasonProfile()
    for minute, kv in enumerate((3.0, None, None, 3.0)):  # KV censored twice (preempting)
        profile = fold_sample(profile, 60.0 * minute, Demand(kv, 1.0))
    profile = fold_sample(profile, SEASON_BIN_S, Demand(1.0, 1.0))  # closes bin 0
    assert profile.kv_units[0] == pytest.approx(3.0)
    assert profile.prefill_units[0] == pytest.approx(1.0)


def _fall_state(kv: list[tuple[float, float]], prefill: list[tuple[float, float]]) -> ScalerState:
    samples = tuple((t, k, p) for (t, k), (_, p) in zip(kv, prefill, strict=True))
    return ScalerState(demand_samples=samples)


def test_a_sure_fall_needs_every_known_series_to_fall() -> None:
    times = [float(t) for t in range(0, 301, 15)]
    falling = [(t, 3.0 - t / 300.0) for t in times]  # -0.2 replica/min
    flat = [(t, 1.5) for t in times]
    both = sure_fall(_fall_state(falling, falling), 300.0)
    assert both is not None
    assert both * 60 == pytest.approx(-0.2)  # an exact line: all of it is sure
    assert sure_fall(_fall_state(falling, flat), 300.0) is None  # prompt load holds up
    rng = random.Random(7)
    noisy = [(t, 1.5 + rng.gauss(0.0, 0.3)) for t in times]
    assert sure_fall(_fall_state(noisy, noisy), 300.0) is None
    assert sure_fall(ScalerState(), 300.0) is None


def _scale_in_delay_s(demand: Callable[[float], float]) -> tuple[float, str] | None:
    """Seconds from the first tick whose demand asks fewer than 4 replicas (KV at its target)
    until the fleet of 4 scales in, and that decision's message (None: it never did)."""
    config = replace(CONFIG, scale_down_cooldown_s=0.0, scale_down_max_ttft_frac=1.0)
    state, replicas, asked_fewer_s = ScalerState(), 4, None
    for index in range(61):
        now_s = index * TICK_S
        units = demand(now_s)
        if asked_fewer_s is None and math.ceil(units / config.target_kv_utilization_frac) < 4:
            asked_fewer_s = now_s
        observation = Observation(
            ReplicaCounts(replicas, replicas, 0), signals(replicas, kv_usage_frac=units / replicas)
        )
        decision, state = decide(config, state, observation, now_s)
        if decision.act and decision.replicas < replicas and asked_fewer_s is not None:
            return now_s - asked_fewer_s, decision.message
    return None


def test_a_sure_fall_scales_in_one_horizon_after_demand_asks_a_dip_waits_the_window() -> None:
    # 3 replicas' worth at full use until t = 120 s, then a steady fall (-0.3/min) or a dip
    fall = _scale_in_delay_s(lambda t: 3.0 if t <= 120 else 3.0 - (t - 120) / 200.0)
    dip = _scale_in_delay_s(lambda t: 3.0 if t <= 120 else 1.6)
    assert fall is not None and dip is not None
    assert dip[0] >= CONFIG.scale_down_stabilization_s - TICK_S
    assert fall[0] <= CONFIG.forecast_horizon_s + TICK_S
    assert "surely falling" in fall[1] and "surely falling" not in dip[1]
