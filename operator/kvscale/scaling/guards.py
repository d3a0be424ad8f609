"""The guard steps of the scaling pipeline: they shape the raw proposal into the decision.

Each guard takes the verdict so far (a `StepResult`) and returns it unchanged or replaced, with
the reason saying why. They run in the order of `GUARDS` after the terms are combined; the
stabilisation guard also returns the bounded recommendation history to remember.
"""

from __future__ import annotations

from dataclasses import replace

from kvscale.scaling import reasons
from kvscale.scaling.forecast import sure_fall
from kvscale.scaling.terms import Tick
from kvscale.scaling.types import ScalingConfig, StepResult

MAX_HISTORY = 256  # recommendations kept at most, whatever the windows (bounded state)


def hold_partial_data(tick: Tick, verdict: StepResult) -> StepResult:
    """No scale-down while too few pods report or the KV signal is unknown (fail-safe)."""
    signals, config = tick.signals, tick.config
    if verdict.replicas >= tick.current:
        return verdict
    coverage = signals.pods_reporting / signals.pods_expected if signals.pods_expected else 0.0
    if signals.kv_usage_frac is None:
        problem = "KV usage unknown"
    elif coverage < config.min_reporting_frac:
        problem = (
            f"only {signals.pods_reporting} of {signals.pods_expected} pods report"
            f" (< {config.min_reporting_frac:.0%})"
        )
    else:
        return verdict
    message = f"{problem}: no scale-down on partial data (would be {verdict.replicas})"
    return StepResult("partial_data", tick.current, reasons.METRICS_PARTIAL_HOLD, message)


def hold_cold_start(tick: Tick, verdict: StepResult) -> StepResult:
    """No scale-down while any replica is starting or warming up: its load is not visible yet."""
    if tick.starting + tick.warming <= 0 or verdict.replicas >= tick.current:
        return verdict
    young = f"{tick.starting} replica(s) starting" if tick.starting else ""
    if tick.warming:
        young = f"{young}{', ' if young else ''}{tick.warming} warming up"
    message = f"{young}: no scale-down (would be {verdict.replicas})"
    return StepResult("cold_start", tick.current, reasons.COLD_START_HOLD, message)


def hold_latency_headroom(tick: Tick, verdict: StepResult) -> StepResult:
    """No scale-down while TTFT p95 is above `scale_down_max_ttft_frac` of its target.

    Read over the last signal window (`ttft_p95_recent_s`), not the SLO's longer latency
    window: the SLO term waits for a breach the SLO would count, the scale-in waits for the
    last minute to be quiet too. No first token in the last minute is a quiet minute.

    The replicas that stay take the removed one's share (n/(n-1) the load each), and near its
    target TTFT grows faster than the load: a fleet that just meets the SLO breaks it after
    the step. The KV and prefill terms size minute averages; second-scale bursts show only in
    latency. The hold is recorded as this tick's recommendation, so the stabilisation window
    keeps the count until TTFT has stayed low for the whole window (no extra state).
    """
    if verdict.replicas >= tick.current:
        return verdict
    config, signals = tick.config, tick.signals
    frac, target, observed = (
        config.scale_down_max_ttft_frac,
        config.ttft_p95_target_s,
        signals.ttft_p95_recent_s,
    )
    if target is None or observed is None or observed <= frac * target:
        return verdict
    message = (
        f"{verdict.message}; TTFT p95 {observed:.2f}s > {frac:.0%} of its {target:.2f}s target:"
        f" no scale-down (would be {verdict.replicas})"
    )
    return StepResult("latency_headroom", tick.current, reasons.LATENCY_HEADROOM_HOLD, message)


def record_recommendation(tick: Tick, replicas: int) -> tuple[tuple[float, int], ...]:
    """Append this tick's recommendation and drop entries older than both windows."""
    config = tick.config
    horizon_s = max(config.scale_up_stabilization_s, config.scale_down_stabilization_s)
    kept = tuple(
        (time_s, value)
        for time_s, value in tick.state.recommendations
        if tick.now_s - time_s <= horizon_s and time_s <= tick.now_s
    )
    return (*kept, (tick.now_s, replicas))[-MAX_HISTORY:]


def stabilise(
    tick: Tick, verdict: StepResult, history: tuple[tuple[float, int], ...]
) -> StepResult:
    """HPA stabilisation: scale up to the min over the up window, down to the max over the down.

    Fast up (short window), slow down (long window): a dip must last the whole down window
    before capacity is removed, so noisy load does not flap. A sure fall is no dip: while
    every demand series surely falls (`forecast.sure_fall`, the trend's own test mirrored),
    the down window is one forecast horizon — a recommendation older than a cold start was
    made for demand that has gone and that the forecast does not see coming back.
    """
    config = tick.config
    # The down window only matters for a scale-down: this tick's recommendation is in every
    # window, so a verdict at or above the current count keeps the ceiling above it.
    down_s, falling = (
        _down_window(tick)
        if verdict.replicas < tick.current
        else (config.scale_down_stabilization_s, "")
    )
    up_floor = min(_window_values(history, tick.now_s, config.scale_up_stabilization_s))
    down_ceiling = max(_window_values(history, tick.now_s, down_s))
    if tick.current < up_floor:
        target = up_floor
    elif tick.current > down_ceiling:
        target = down_ceiling
    else:
        target = tick.current
    if target == verdict.replicas:
        if falling and target < tick.current:  # the shortened window let it through: say so
            return replace(verdict, message=f"{verdict.message}{falling}")
        return verdict
    if target == tick.current:
        window_s = down_s if verdict.replicas < tick.current else config.scale_up_stabilization_s
        message = (
            f"{verdict.message}; held at {tick.current} by the {window_s:.0f}s stabilisation"
            f" window{falling}"
        )
        return StepResult("stabilise", tick.current, reasons.STABILISING, message)
    message = f"{verdict.message}; stabilised to {target}{falling}"
    return StepResult("stabilise", target, verdict.reason, message)


def _down_window(tick: Tick) -> tuple[float, str]:
    """The scale-down window this tick, and what shortened it (empty when nothing did)."""
    config = tick.config
    window_s = config.scale_down_stabilization_s
    if 0 < config.forecast_horizon_s < window_s:
        fall = sure_fall(tick.state, tick.now_s)
        if fall is not None:
            return config.forecast_horizon_s, f" (demand surely falling, {fall * 60:+.2f}/min)"
    return window_s, ""


def _window_values(
    history: tuple[tuple[float, int], ...], now_s: float, window_s: float
) -> list[int]:
    """Recommendations made within the last `window_s` (always includes this tick's)."""
    return [value for time_s, value in history if now_s - time_s <= window_s]


def effective_cooldown_s(tick: Tick) -> float:
    """The configured cooldown, or the lengthened one after a scale-down was undone."""
    lengthened = tick.state.scale_down_cooldown_s
    return tick.config.scale_down_cooldown_s if lengthened is None else lengthened


def hold_cooldown(tick: Tick, verdict: StepResult) -> StepResult:
    """No scale-down sooner than the cooldown after any scale change."""
    last_s = tick.state.last_scale_time_s
    if verdict.replicas >= tick.current or last_s is None:
        return verdict
    cooldown_s = effective_cooldown_s(tick)
    elapsed_s = tick.now_s - last_s
    if elapsed_s >= cooldown_s:
        return verdict
    message = (
        f"{verdict.message}; last scale change {elapsed_s:.0f}s ago < cooldown"
        f" {cooldown_s:.0f}s: holding {tick.current}"
    )
    return StepResult("cooldown", tick.current, reasons.COOLDOWN, message)


def limit_step(tick: Tick, verdict: StepResult) -> StepResult:
    """At most `max_scale_up_step` added / `max_scale_down_step` removed per decision."""
    config = tick.config
    low = tick.current - config.max_scale_down_step
    high = tick.current + config.max_scale_up_step
    limited = min(high, max(low, verdict.replicas))
    if limited == verdict.replicas:
        return verdict
    message = f"{verdict.message}; limited to {limited} ({verdict.reason}, step limit)"
    return StepResult("step_limit", limited, reasons.STEP_LIMITED, message)


def clamp(config: ScalingConfig, verdict: StepResult) -> StepResult:
    """Keep the count within [min_replicas, max_replicas]."""
    if verdict.replicas < config.min_replicas:
        message = f"{verdict.message}; raised to min_replicas {config.min_replicas}"
        return StepResult("clamp", config.min_replicas, reasons.CLAMPED_MIN, message)
    if verdict.replicas > config.max_replicas:
        message = f"{verdict.message}; capped at max_replicas {config.max_replicas}"
        return StepResult("clamp", config.max_replicas, reasons.CLAMPED_MAX, message)
    return verdict
