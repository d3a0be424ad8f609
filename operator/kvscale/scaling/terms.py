"""The demand terms of the scaling pipeline: each turns signals into a replica proposal.

A term returns a `StepResult` (its proposal, a reason constant and a message with the numbers)
or `None` when it abstains because its signal is unknown or quiet. The pipeline takes the
largest proposal, as the HPA does with several metrics: any one term can ask for capacity, and a
scale-down needs every term to agree.

Only the KV term is proportional and can propose fewer replicas; the queue, allocation-failure
and SLO terms push up. Latency terms add one replica per tick because latency is not linear in
replicas, and a tick later the new capacity is measured again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvscale.scaling import reasons
from kvscale.scaling.types import ScalerState, ScalingConfig, Signals, StepResult

_CEIL_EPS = 1e-9  # 3.0000000001 replicas is 3, not 4


@dataclass(frozen=True)
class Tick:
    """What every step of one tick sees (built once by `decide`)."""

    config: ScalingConfig
    state: ScalerState
    signals: Signals
    current: int  # the workload's replicas now (desired, including starting ones)
    starting: int  # replicas created but not Ready
    now_s: float

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
    reversed_direction = (ratio > 1.0 and needed <= tick.current) or (
        ratio < 1.0 and needed >= tick.current
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


def propose_queue(tick: Tick) -> StepResult | None:
    """Replicas that keep the waiting queue at its per-replica target, or +1 on queue time.

    Waiting requests are a sum over reporting pods (missing pods count as an empty queue, which
    can only understate the need). This catches prefill-heavy load that queues at low KV usage.
    """
    signals, config = tick.signals, tick.config
    best: StepResult | None = None
    waiting = signals.num_requests_waiting
    if waiting is not None and waiting > 0 and tick.current > 0:
        per_replica = waiting / tick.current
        needed = ceil_replicas(waiting / config.target_waiting_per_replica)
        over = per_replica > config.target_waiting_per_replica * (1.0 + config.tolerance_frac)
        if over and needed > tick.current:
            message = (
                f"{waiting:.0f} requests waiting ({per_replica:.1f}/replica > target"
                f" {config.target_waiting_per_replica:.1f}) → {needed}"
            )
            best = StepResult("queue", needed, reasons.QUEUE, message)
    queue_p95_s = signals.queue_time_p95_s
    limit_s = config.max_queue_wait_s
    if (
        queue_p95_s is not None
        and limit_s is not None
        and queue_p95_s > limit_s * (1.0 + config.tolerance_frac)
    ):
        message = f"queue time p95 {queue_p95_s:.2f}s > SLO {limit_s:.2f}s"
        bump = bump_one(tick, "queue", reasons.QUEUE, message)
        if best is None or bump.replicas > best.replicas:
            best = bump
    return best


def propose_allocation_failure(tick: Tick) -> StepResult | None:
    """+1 replica while the engine preempts or rejects, whatever the average KV usage says.

    Preemption means a request lost its KV blocks; rejections (429/503) mean admission limits
    were hit. Both are allocation failures that a mean KV% hides when load is uneven.
    """
    signals, config = tick.signals, tick.config
    findings: list[str] = []
    preemptions = signals.preemptions_per_s
    if preemptions is not None and preemptions > config.preemptions_per_s_threshold:
        findings.append(
            f"preemptions {preemptions:.2f}/s > {config.preemptions_per_s_threshold:.2f}/s"
        )
    rejections = signals.rejections_per_s
    if rejections is not None and rejections > config.rejections_per_s_threshold:
        findings.append(
            f"rejections {rejections:.2f}/s > {config.rejections_per_s_threshold:.2f}/s"
        )
    if not findings:
        return None
    kv_note = "" if signals.kv_usage_frac is None else f" at KV {signals.kv_usage_frac:.2f}"
    return bump_one(
        tick, "allocation_failure", reasons.ALLOCATION_FAILURE, ", ".join(findings) + kv_note
    )


def propose_slo(tick: Tick) -> StepResult | None:
    """+1 replica while TTFT or ITL p95 is above its target (beyond the tolerance)."""
    signals, config = tick.signals, tick.config
    findings = [
        f"{name} p95 {observed_s:.3f}s > target {target_s:.3f}s"
        for name, observed_s, target_s in (
            ("TTFT", signals.ttft_p95_s, config.ttft_p95_target_s),
            ("ITL", signals.itl_p95_s, config.itl_p95_target_s),
        )
        if observed_s is not None
        and target_s is not None
        and observed_s > target_s * (1.0 + config.tolerance_frac)
    ]
    if not findings:
        return None
    return bump_one(tick, "slo", reasons.SLO_BREACH, ", ".join(findings))


def bump_one(tick: Tick, step: str, reason: str, message: str) -> StepResult:
    """Current + 1, unless replicas already starting will bring that capacity (cold start)."""
    if tick.warming_up:
        note = f"{message}; {tick.starting} replica(s) starting count as incoming capacity"
        return StepResult(step, tick.current, reasons.COLD_START_HOLD, note)
    return StepResult(step, tick.current + 1, reason, f"{message} → +1 = {tick.current + 1}")


TERMS = (propose_kv_demand, propose_queue, propose_allocation_failure, propose_slo)
"""Declared order; on equal proposals the earlier term's reason wins."""
