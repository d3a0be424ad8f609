"""`decide`: one autoscaling tick as a pipeline of small pure steps.

Order (declared here, traced in `Decision.steps`):

1. data check — no usable read: hold, and after N failed reads apply the fallback count;
2. scale-down undo — a guardrail breach soon after a scale-down restores the count at once;
3. terms — KV demand, prefill demand, queue, allocation failure, SLO; the largest wins
   (a breach of the latency targets first updates the learned prefill target);
4. guards — partial data, cold start, stabilisation, cooldown, step limit, min/max clamp;
5. mode — recommend mode writes the decision but does not act.

The clock is the `now_s` argument; the caller keeps `ScalerState` (e.g. in CR status) and passes
it back next tick. Nothing here reads a clock, a metric or the API.
"""

from __future__ import annotations

from dataclasses import replace

from kvscale.scaling import guards, reasons
from kvscale.scaling.forecast import record_demand
from kvscale.scaling.signals import is_usable
from kvscale.scaling.terms import (
    TERMS,
    Tick,
    allocation_failures,
    demand_of,
    latency_breaches,
    learn_prefill_target,
)
from kvscale.scaling.types import (
    Decision,
    Mode,
    Observation,
    ScalerState,
    ScalingConfig,
    Signals,
    StepResult,
)


def decide(
    config: ScalingConfig, state: ScalerState, observation: Observation, now_s: float
) -> tuple[Decision, ScalerState]:
    """Return the replica decision for this tick and the state to pass to the next one."""
    counts = observation.replicas
    state = _track_starting(state, counts.starting, now_s)
    signals = observation.signals
    if signals is not None and signals.pods_expected == 0 and counts.starting > 0:
        message = f"no engine pod running yet, {counts.starting} starting: holding {counts.desired}"
        held = StepResult("data_check", counts.desired, reasons.COLD_START_HOLD, message)
        return _finish(config, state, counts.desired, (held,), now_s=now_s)
    if signals is None or not is_usable(signals):
        return _decide_without_data(config, state, counts.desired, signals, now_s)
    state = replace(state, failed_reads=0)
    tick = Tick(config, state, signals, counts.desired, counts.starting, now_s, counts.warming)
    state = learn_prefill_target(tick)
    if config.forecast_horizon_s > 0:
        state = record_demand(state, now_s, demand_of(tick))
    tick = replace(tick, state=state)
    undo = undo_regressed_scale_down(tick)
    if undo is not None:
        state = _remember_regression(tick)
        return _finish(config, state, counts.desired, (undo,), now_s=now_s)
    return _run_pipeline(tick)


def _run_pipeline(tick: Tick) -> tuple[Decision, ScalerState]:
    trace: list[StepResult] = []
    proposals: list[StepResult] = []
    for term in TERMS:
        proposal = term(tick)
        step = term.__name__.removeprefix("propose_")
        if proposal is None:
            trace.append(StepResult(step, tick.current, reasons.NO_PRESSURE, "abstains"))
        else:
            trace.append(proposal)
            proposals.append(proposal)
    verdict = _combine(tick, proposals)
    trace.append(verdict)
    for guard in (guards.hold_partial_data, guards.hold_cold_start, guards.hold_latency_headroom):
        verdict = _traced(trace, verdict, guard(tick, verdict))
    history = guards.record_recommendation(tick, verdict.replicas)
    verdict = _traced(trace, verdict, guards.stabilise(tick, verdict, history))
    for guard in (guards.hold_cooldown, guards.limit_step):
        verdict = _traced(trace, verdict, guard(tick, verdict))
    state = replace(tick.state, recommendations=history)
    return _finish(
        tick.config, state, tick.current, tuple(trace), now_s=tick.now_s, verdict=verdict
    )


def _combine(tick: Tick, proposals: list[StepResult]) -> StepResult:
    """The largest proposal; on a tie the earlier term (declared order) keeps its reason."""
    if not proposals:
        message = f"no demand signal known (KV usage, queue, latency): holding {tick.current}"
        return StepResult("combine", tick.current, reasons.METRICS_PARTIAL_HOLD, message)
    best = proposals[0]
    for proposal in proposals[1:]:
        if proposal.replicas > best.replicas:
            best = proposal
    return StepResult("combine", best.replicas, best.reason, best.message)


def _traced(trace: list[StepResult], before: StepResult, after: StepResult) -> StepResult:
    if after is not before:
        trace.append(after)
    return after


def _decide_without_data(
    config: ScalingConfig,
    state: ScalerState,
    current: int,
    signals: Signals | None,
    now_s: float,
) -> tuple[Decision, ScalerState]:
    """Hold on a failed read; after N in a row the fallback count applies as a floor.

    The fallback never lowers the count: a monitoring outage is not evidence that load fell.
    """
    failed = state.failed_reads + 1
    state = replace(state, failed_reads=failed)
    what = "metrics read failed" if signals is None else "no pod reported a usable sample"
    fallback = config.fallback_replicas
    if fallback is not None and failed >= config.failed_reads_before_fallback:
        replicas = max(current, fallback)
        message = (
            f"{what} {failed} time(s) in a row (≥ {config.failed_reads_before_fallback}):"
            f" fallback {fallback} applies → {replicas}"
        )
        step = StepResult("data_check", replicas, reasons.FALLBACK, message)
    else:
        message = f"{what} ({failed} in a row): holding {current}, never scaling down on it"
        step = StepResult("data_check", current, reasons.METRICS_MISSING_HOLD, message)
    return _finish(config, state, current, (step,), now_s=now_s)


def undo_regressed_scale_down(tick: Tick) -> StepResult | None:
    """A scale-down followed by an allocation failure or SLO breach inside its guard window is
    undone at once (no stabilisation, no step limit): the removed capacity was needed."""
    state, config, signals = tick.state, tick.config, tick.signals
    before = state.replicas_before_scale_down
    last_down_s = state.last_scale_down_time_s
    if before is None or last_down_s is None or before <= tick.current:
        return None
    if tick.now_s - last_down_s > config.scale_down_guard_window_s:
        return None
    breaches = _guardrail_breaches(config, signals)
    if not breaches:
        return None
    message = (
        f"{', '.join(breaches)} {tick.now_s - last_down_s:.0f}s after scaling down to"
        f" {tick.current}: restoring {before}"
    )
    return StepResult("scale_down_undo", before, reasons.SCALE_DOWN_REVERTED, message)


def _guardrail_breaches(config: ScalingConfig, signals: Signals) -> list[str]:
    """Allocation failures over their thresholds, latencies over target beyond the tolerance:
    the same tests as the allocation-failure and SLO terms, so a reading those terms accept
    (a p95 a little over target inside a coarse histogram bucket) cannot undo a scale-down."""
    return allocation_failures(config, signals) + latency_breaches(config, signals)


def _remember_regression(tick: Tick) -> ScalerState:
    """What an undone scale-down teaches: the prefill load per replica that was too much.

    With the prompt-token rate and the prefill capacity known, the utilisation at the breach
    becomes the prefill term's target (renewed on every breach), so the same load is not
    tried again while a lower load may still scale down. Without them the only memory is
    time: the scale-down cooldown doubles, up to `max_scale_down_cooldown_s`.
    """
    state = learn_prefill_target(tick, scale_down_undone=True)
    state = replace(state, replicas_before_scale_down=None)
    if state.learned_prefill_at_s == tick.now_s:
        return state
    config = tick.config
    cooldown_s = min(config.max_scale_down_cooldown_s, 2.0 * guards.effective_cooldown_s(tick))
    return replace(state, scale_down_cooldown_s=cooldown_s)


def _track_starting(state: ScalerState, starting: int, now_s: float) -> ScalerState:
    """Start the warm-up clock on the first tick with replicas starting; stop it at zero."""
    if starting <= 0:
        return state if state.starting_since_s is None else replace(state, starting_since_s=None)
    if state.starting_since_s is None:
        return replace(state, starting_since_s=now_s)
    return state


def _finish(
    config: ScalingConfig,
    state: ScalerState,
    current: int,
    trace: tuple[StepResult, ...],
    *,
    now_s: float,
    verdict: StepResult | None = None,
) -> tuple[Decision, ScalerState]:
    """Clamp, apply the mode, and remember when the workload was scaled."""
    verdict = trace[-1] if verdict is None else verdict
    clamped = guards.clamp(config, verdict)
    if clamped is not verdict:
        trace = (*trace, clamped)
    changed = clamped.replicas != current
    if config.mode is Mode.RECOMMEND:
        message = f"recommend mode, not applied: {clamped.reason}: {clamped.message}"
        decision = Decision(clamped.replicas, reasons.RECOMMEND_ONLY, message, False, trace)
        return decision, state
    if changed:
        state = replace(state, last_scale_time_s=now_s)
        if clamped.replicas < current:
            state = replace(state, last_scale_down_time_s=now_s, replicas_before_scale_down=current)
    decision = Decision(clamped.replicas, clamped.reason, clamped.message, changed, trace)
    return decision, state
