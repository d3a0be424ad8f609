"""The demand terms of the scaling pipeline: each turns signals into a replica proposal.

A term returns a `StepResult` (its proposal, a reason constant and a message with the numbers)
or `None` when it abstains because its signal is unknown or quiet. The pipeline takes the
largest proposal, as the HPA does with several metrics: any one term can ask for capacity, and a
scale-down needs every term to agree.

The KV and prefill terms are proportional and can propose fewer replicas: KV tokens in use
against the pool, prompt tokens per second against the roofline's prefill rate (at a target
lowered for an hour when the SLO broke below it). The queue, allocation-failure and SLO terms
push up. Latency terms add one replica per tick because latency is not linear in replicas, and
a tick later the new capacity is measured again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kvscale.scaling import reasons
from kvscale.scaling.forecast import Demand, forecast_series, propose_forecast_units
from kvscale.scaling.observe import LATENCY_WINDOW_S
from kvscale.scaling.types import ScalerState, ScalingConfig, Signals, StepResult

_CEIL_EPS = 1e-9  # 3.0000000001 replicas is 3, not 4
SUSTAINED_BREACH_S = 15.0  # learn from a breach seen on two reads at least this far apart
MIN_LEARNED_SHARE_FRAC = 0.1  # a learned prefill target never drops below 10 % of the set one


@dataclass(frozen=True)
class Tick:
    """What every step of one tick sees (built once by `decide`)."""

    config: ScalingConfig
    state: ScalerState
    signals: Signals
    current: int  # the workload's replicas now (desired, including starting ones)
    starting: int  # replicas created but not Ready
    now_s: float
    warming: int = 0  # Ready replicas still inside their warm-up

    @property
    def missing_pods(self) -> int:
        return max(0, self.signals.pods_expected - self.signals.pods_reporting)

    @property
    def warming_up(self) -> bool:
        """Starting replicas are incoming capacity until the warm-up window has passed."""
        since_s = self.state.starting_since_s
        if self.starting <= 0:
            return False
        return since_s is None or self.now_s - since_s < self.config.warmup_s


def ceil_replicas(value: float) -> int:
    """Round a fractional replica need up, ignoring float noise."""
    return max(0, math.ceil(value - _CEIL_EPS))


def format_tokens(tokens: float) -> str:
    """182_400 -> '182k'; small values unchanged. Messages are read by humans."""
    if tokens >= 10_000:
        return f"{tokens / 1000:.0f}k"
    return f"{tokens:.0f}"


def live_capacity_tokens(signals: Signals, config: ScalingConfig) -> int | None:
    """KV tokens one replica holds: the engine's live figure, else the capacity plan's."""
    if signals.num_gpu_blocks is not None and signals.block_size_tokens is not None:
        return signals.num_gpu_blocks * signals.block_size_tokens
    return config.kv_capacity_tokens_per_replica


def propose_kv_demand(tick: Tick) -> StepResult | None:
    """Replicas that put the KV tokens in use at the target utilisation.

    Demand = mean usage x live capacity x reporting pods. Missing pods count as idle when the
    reporting pods ask for more and as busy (at the target) when they ask for less, and a result
    whose direction the missing pods reverse holds the current count (HPA rules).
    """
    signals, config = tick.signals, tick.config
    if signals.kv_usage_frac is None or signals.pods_reporting <= 0:
        return None
    target = config.target_kv_utilization_frac
    usage = min(1.0, max(0.0, signals.kv_usage_frac))
    ratio = usage / target
    if abs(ratio - 1.0) <= config.tolerance_frac:
        message = (
            f"KV usage {usage:.2f} within ±{config.tolerance_frac:.2f} of target {target:.2f};"
            f" holding {tick.current}"
        )
        return StepResult("kv_demand", tick.current, reasons.WITHIN_TOLERANCE, message)
    demand_units = usage * signals.pods_reporting  # replicas' worth of KV in use
    if ratio > 1.0:
        needed = ceil_replicas(demand_units / target)
    else:
        needed = ceil_replicas(demand_units / target + tick.missing_pods)
    message = _describe_kv_demand(tick, usage, needed)
    # With every pod reporting, an equal count is no reversal: rounding up at the floor (one
    # replica at low usage) keeps the current replicas and says so as KV demand.
    at_count = needed == tick.current and tick.missing_pods == 0
    reversed_direction = not at_count and (
        (ratio > 1.0 and needed <= tick.current) or (ratio < 1.0 and needed >= tick.current)
    )
    if reversed_direction:
        # The reporting pods point one way, the replica count the other: pods not reporting
        # or not yet Ready explain the gap. Hold rather than move against the signal.
        if tick.missing_pods > 0:
            note = f"{message}; {tick.missing_pods} pod(s) not reporting reverse it: holding"
            return StepResult("kv_demand", tick.current, reasons.METRICS_PARTIAL_HOLD, note)
        note = f"{message}; replicas not yet serving cover it: holding {tick.current}"
        return StepResult("kv_demand", tick.current, reasons.COLD_START_HOLD, note)
    return StepResult("kv_demand", needed, reasons.KV_DEMAND, message)


def _describe_kv_demand(tick: Tick, usage: float, needed: int) -> str:
    target = tick.config.target_kv_utilization_frac
    reporting = tick.signals.pods_reporting
    capacity = live_capacity_tokens(tick.signals, tick.config)
    if capacity is None:
        return f"KV usage {usage:.2f} over {reporting} replica(s) at target {target:.2f} → {needed}"
    demand = usage * capacity * reporting
    return (
        f"KV demand {format_tokens(demand)} tokens over {reporting} replica(s) of"
        f" {format_tokens(capacity)} at target {target:.2f} → {needed}"
    )


def propose_prefill_demand(tick: Tick) -> StepResult | None:
    """Replicas that keep the prompt-token rate at the target share of the prefill capacity.

    KV usage does not see compute: a prefill-heavy load (long prompts, short answers) saturates
    the prefill units while the KV pool is mostly empty, and the KV term alone then scales down
    into a queue. The demand is a rate of arrivals, not a backlog, so it neither chases a queue
    that replicas already starting will drain nor forgets capacity the moment the queue empties.
    The rate is a sum over reporting pods; missing pods can only understate it, so a result
    that would scale down while pods are missing holds.
    """
    config, inputs = tick.config, prefill_inputs(tick)
    if inputs is None or tick.current <= 0:
        return None
    capacity, rate = inputs
    target, learned = effective_prefill_target(config, tick.state, tick.now_s)
    demand_replicas = max(0.0, rate) / (capacity * target)
    ratio = demand_replicas / tick.current
    source = " (learned from an SLO breach)" if learned else ""
    summary = (
        f"prompt load {format_tokens(rate)} tokens/s = {rate / capacity:.2f} replica(s) of"
        f" {format_tokens(capacity)}/s prefill at target {target:.2f}{source}"
    )
    if abs(ratio - 1.0) <= config.tolerance_frac:
        message = f"{summary}, within ±{config.tolerance_frac:.2f}; holding {tick.current}"
        return StepResult("prefill_demand", tick.current, reasons.WITHIN_TOLERANCE, message)
    needed = ceil_replicas(demand_replicas)
    if needed < tick.current and tick.missing_pods > 0:
        note = f"{summary} → {needed}; {tick.missing_pods} pod(s) not reporting: holding"
        return StepResult("prefill_demand", tick.current, reasons.METRICS_PARTIAL_HOLD, note)
    return StepResult("prefill_demand", needed, reasons.PREFILL_DEMAND, f"{summary} → {needed}")


def effective_prefill_target(
    config: ScalingConfig, state: ScalerState, now_s: float
) -> tuple[float, bool]:
    """The prefill utilisation to size for, and whether it was learned from an SLO breach.

    The roofline is optimistic for some loads: long prompts prefill one at a time in chunks
    and block the requests behind them, and second-scale bursts queue at a low average rate.
    When the SLO broke at a lower utilisation than the target, that level (less the dead
    band) is the target for `prefill_headroom_memory_s`; every new breach renews it.
    """
    configured = config.target_prefill_utilization_frac
    learned = state.learned_prefill_utilization_frac
    at_s = state.learned_prefill_at_s
    if learned is None or at_s is None or now_s - at_s > config.prefill_headroom_memory_s:
        return configured, False
    if learned >= configured:
        return configured, False
    return learned, True


def learn_prefill_target(tick: Tick, *, scale_down_undone: bool = False) -> ScalerState:
    """Remember the prefill utilisation at which the SLO broke (see `effective_prefill_target`).

    Learned only from a sustained breach (a p95 read from coarse buckets crosses the target
    for a single tick by interpolation alone) on a settled fleet: no replica starting and no
    scale change within the latency window, so latency and rate describe the replicas now.
    Never when something else explains the breach — KV usage over its target, preemptions or
    rejections, or a fleet held at max_replicas — or the lesson would keep replicas for an
    hour that the KV pool needed only for minutes.
    """
    config, inputs = tick.config, prefill_inputs(tick)
    state = _track_breach(tick)
    if inputs is None or inputs[1] <= 0 or tick.current <= 0:
        return state
    capacity, rate = inputs
    if not (scale_down_undone or _settled_breach(tick, state)) or _kv_or_cap_explains(tick):
        return state
    utilization = rate / (capacity * tick.current)
    floor = MIN_LEARNED_SHARE_FRAC * config.target_prefill_utilization_frac
    learned = max(floor, utilization * (1.0 - config.tolerance_frac))
    current, was_learned = effective_prefill_target(config, state, tick.now_s)
    if was_learned:
        learned = min(learned, current)
    return replace(state, learned_prefill_utilization_frac=learned, learned_prefill_at_s=tick.now_s)


def _kv_or_cap_explains(tick: Tick) -> bool:
    config, signals = tick.config, tick.signals
    kv_short = beyond_tolerance(
        signals.kv_usage_frac, config.target_kv_utilization_frac, config.tolerance_frac
    )
    capped = tick.current >= config.max_replicas
    return kv_short or capped or bool(allocation_failures(config, signals))


def _settled_breach(tick: Tick, state: ScalerState) -> bool:
    since_s = state.latency_breach_since_s
    young = tick.starting + tick.warming  # a warming replica's capacity is not yet in the window
    if young > 0 or since_s is None or tick.now_s - since_s < SUSTAINED_BREACH_S:
        return False
    last_s = state.last_scale_time_s
    return last_s is None or tick.now_s - last_s >= LATENCY_WINDOW_S


def _track_breach(tick: Tick) -> ScalerState:
    """Start the breach clock on the first tick over the latency targets; stop it below."""
    state = tick.state
    if not latency_breaches(tick.config, tick.signals):
        if state.latency_breach_since_s is None:
            return state
        return replace(state, latency_breach_since_s=None)
    if state.latency_breach_since_s is None:
        return replace(state, latency_breach_since_s=tick.now_s)
    return state


def beyond_tolerance(observed: float | None, limit: float | None, tolerance_frac: float) -> bool:
    """observed > limit × (1 + tolerance): the dead band every over-target check shares (a p95
    read from coarse histogram buckets crosses a target inside a bucket by interpolation)."""
    return observed is not None and limit is not None and observed > limit * (1.0 + tolerance_frac)


def latency_breaches(config: ScalingConfig, signals: Signals) -> list[str]:
    """TTFT / ITL p95 over the SLO's latency window above target beyond the tolerance, while
    the breach is current (the SLO term's test, ADR 0015).

    The long window remembers a burst for minutes after it ended: a TTFT breach counts only
    while the last minute's TTFT p95 is beyond the target too, and no latency counts when no
    request got its first token in the last minute (nothing is being served late).
    """
    recent_s, tolerance = signals.ttft_p95_recent_s, config.tolerance_frac
    if recent_s is None:
        return []
    ttft_now = beyond_tolerance(recent_s, config.ttft_p95_target_s, tolerance)
    return [
        f"{name} p95 {observed_s:.3f}s > target {target_s:.3f}s"
        for name, observed_s, target_s, current in (
            ("TTFT", signals.ttft_p95_s, config.ttft_p95_target_s, ttft_now),
            ("ITL", signals.itl_p95_s, config.itl_p95_target_s, True),
        )
        if current and beyond_tolerance(observed_s, target_s, tolerance)
    ]


def propose_queue(tick: Tick) -> StepResult | None:
    """Replicas that keep the waiting queue at its per-replica target, or +1 on queue time.

    Waiting requests are a sum over reporting pods (missing pods count as an empty queue, which
    can only understate the need). This catches load that queues at low KV usage. The waiting
    count is an instantaneous gauge: under continuous batching some requests always sit
    between two engine steps, so it only counts when the latency signals confirm the wait
    costs the SLO (`queue_harm`), and never while replicas already starting will drain the
    backlog.
    """
    best = _propose_for_waiting(tick)
    bump = _propose_for_queue_time(tick)
    if bump is not None and (best is None or bump.replicas > best.replicas):
        best = bump
    return best


def queue_harm(config: ScalingConfig, signals: Signals) -> str | None:
    """Why the waiting requests matter ("" when no latency signal can tell), or None when the
    latency signals show they do not: queue time p95 within the queue SLO and TTFT p95 within
    its target (with the same tolerance as the SLO term) means the queue is ordinary batching,
    not a backlog that costs the SLO."""
    checks = (
        ("queue time", signals.queue_time_p95_s, config.max_queue_wait_s),
        ("TTFT", signals.ttft_p95_s, config.ttft_p95_target_s),
    )
    if all(None in (seen, limit) for _, seen, limit in checks):
        return ""
    for name, seen_s, limit_s in checks:
        if beyond_tolerance(seen_s, limit_s, config.tolerance_frac):
            return f"{name} p95 {seen_s:.2f}s > {limit_s:.2f}s"
    return None


def _propose_for_waiting(tick: Tick) -> StepResult | None:
    signals, config = tick.signals, tick.config
    waiting = signals.num_requests_waiting
    if waiting is None or waiting <= 0 or tick.current <= 0:
        return None
    per_replica = waiting / tick.current
    needed = ceil_replicas(waiting / config.target_waiting_per_replica)
    over = per_replica > config.target_waiting_per_replica * (1.0 + config.tolerance_frac)
    if not over or needed <= tick.current:
        return None
    message = (
        f"{waiting:.0f} requests waiting ({per_replica:.1f}/replica > target"
        f" {config.target_waiting_per_replica:.1f})"
    )
    harm = queue_harm(config, signals)
    if harm is None:
        note = f"{message}; queue time and TTFT within target: batching, holding {tick.current}"
        return StepResult("queue", tick.current, reasons.WITHIN_TOLERANCE, note)
    if harm:
        message = f"{message}, {harm}"
    if tick.warming_up:
        # The queue is a backlog, not a rate: it keeps growing until the replicas already
        # starting serve, and chasing it adds replicas that are not needed once they do.
        note = f"{message}; {tick.starting} replica(s) starting will drain it: holding"
        return StepResult("queue", tick.current, reasons.COLD_START_HOLD, note)
    if prefill_inputs(tick) is not None:
        # The prefill term sizes the arrival rate; a queue on top of it is a residual that a
        # burst left behind, and one replica more is measured again next tick.
        return bump_one(tick, "queue", reasons.QUEUE, message)
    return StepResult("queue", needed, reasons.QUEUE, f"{message} → {needed}")


def prefill_inputs(tick: Tick) -> tuple[float, float] | None:
    """(prefill tokens/s per replica from the plan, prompt tokens/s now), or None when either
    is unknown: then the prefill term abstains and nothing is learned."""
    capacity = tick.config.prefill_tokens_per_s_per_replica
    rate = tick.signals.prompt_tokens_per_s
    if capacity is None or capacity <= 0 or rate is None:
        return None
    return capacity, rate


def _propose_for_queue_time(tick: Tick) -> StepResult | None:
    signals, config = tick.signals, tick.config
    queue_p95_s = signals.queue_time_p95_s
    limit_s = config.max_queue_wait_s
    if not beyond_tolerance(queue_p95_s, limit_s, config.tolerance_frac):
        return None
    message = f"queue time p95 {queue_p95_s:.2f}s > SLO {limit_s:.2f}s"
    return bump_one(tick, "queue", reasons.QUEUE, message)


def propose_allocation_failure(tick: Tick) -> StepResult | None:
    """+1 replica while the engine preempts or rejects, whatever the average KV usage says.

    Preemption means a request lost its KV blocks; rejections (429/503) mean admission limits
    were hit. Both are allocation failures that a mean KV% hides when load is uneven.
    """
    signals = tick.signals
    findings = allocation_failures(tick.config, signals)
    if not findings:
        return None
    kv_note = "" if signals.kv_usage_frac is None else f" at KV {signals.kv_usage_frac:.2f}"
    return bump_one(
        tick, "allocation_failure", reasons.ALLOCATION_FAILURE, ", ".join(findings) + kv_note
    )


def allocation_failures(config: ScalingConfig, signals: Signals) -> list[str]:
    """Preemptions and engine rejections above their thresholds, with the numbers."""
    checks = (
        ("preemptions", signals.preemptions_per_s, config.preemptions_per_s_threshold),
        ("rejections", signals.rejections_per_s, config.rejections_per_s_threshold),
    )
    return [
        rate_over(name, observed, limit)
        for name, observed, limit in checks
        if observed is not None and observed > limit
    ]


def rate_over(name: str, observed_per_s: float, limit_per_s: float) -> str:
    """'preemptions 0.104/s > 0.1/s': the observed rate to 3 digits, the limit as configured
    (the scaling terms and the rollback guardrails word a rate breach alike)."""
    return f"{name} {observed_per_s:.3g}/s > {limit_per_s:g}/s"


def propose_slo(tick: Tick) -> StepResult | None:
    """+1 replica while TTFT or ITL p95 is above its target (beyond the tolerance)."""
    findings = latency_breaches(tick.config, tick.signals)
    if not findings:
        return None
    return bump_one(tick, "slo", reasons.SLO_BREACH, ", ".join(findings))


def bump_one(tick: Tick, step: str, reason: str, message: str) -> StepResult:
    """Current + 1, unless replicas already starting will bring that capacity (cold start)."""
    if tick.warming_up:
        note = f"{message}; {tick.starting} replica(s) starting count as incoming capacity"
        return StepResult(step, tick.current, reasons.COLD_START_HOLD, note)
    return StepResult(step, tick.current + 1, reason, f"{message} → +1 = {tick.current + 1}")


def demand_of(tick: Tick) -> Demand:
    """This tick's demand in replicas' worth at full use (the forecast's series).

    KV: mean usage over the reporting pods times their number. Prefill: the prompt-token rate
    over one replica's prefill rate. Both are what the KV and prefill terms size for. While the
    pool preempts or rejects, KV usage is capped by the fleet's size, not by demand: the KV
    sample is censored and left out (else a fleet growing out of saturation reads as a trend).
    """
    signals = tick.signals
    kv = None
    censored = bool(allocation_failures(tick.config, signals))
    if signals.kv_usage_frac is not None and signals.pods_reporting > 0 and not censored:
        kv = min(1.0, max(0.0, signals.kv_usage_frac)) * signals.pods_reporting
    inputs = prefill_inputs(tick)
    prefill = None if inputs is None else max(0.0, inputs[1]) / inputs[0]
    return Demand(kv, prefill)


def propose_forecast(tick: Tick) -> StepResult | None:
    """Replicas for the KV and prefill demand expected one horizon ahead (`kvscale.scaling.
    forecast`); abstains when neither demand is forecast to rise."""
    config, state = tick.config, tick.state
    horizon_s = config.forecast_horizon_s
    if horizon_s <= 0 or not state.demand_samples:
        return None
    prefill_target, _ = effective_prefill_target(config, state, tick.now_s)
    kv_target = config.target_kv_utilization_frac
    kv = forecast_series(state, 1, tick.now_s, horizon_s)
    prefill = forecast_series(state, 2, tick.now_s, horizon_s)
    candidates = (("KV demand", kv, kv_target), ("prompt load", prefill, prefill_target))
    return propose_forecast_units(candidates, horizon_s)


TERMS = (
    propose_kv_demand,
    propose_prefill_demand,
    propose_forecast,
    propose_queue,
    propose_allocation_failure,
    propose_slo,
)
"""Declared order; on equal proposals the earlier term's reason wins."""
