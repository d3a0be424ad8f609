"""Domain types of the autoscaling policy (pure; shared by the operator and the simulator).

The policy is `decide(config, state, observation, now_s) -> (Decision, new_state)`; it never
reads a clock or does I/O. The operator feeds it Prometheus signals; the simulator feeds it the
simulated engines' metrics through the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    AUTO = "auto"  # act on the decision
    RECOMMEND = "recommend"  # write the decision to status only


@dataclass(frozen=True)
class Signals:
    """One deployment's serving signals at one tick, aggregated over its pods.

    `None` means "not known" (no sample, NaN/Inf, stale). It is never the same as 0.
    """

    pods_expected: int  # pods that should report (Running engine pods)
    pods_reporting: int  # pods with a fresh sample, draining ones included (their load moves)
    kv_usage_frac: float | None = None  # mean KV-cache usage, 0..1
    num_requests_running: float | None = None  # sum over pods
    num_requests_waiting: float | None = None  # sum over pods
    preemptions_per_s: float | None = None  # sum over pods, rate over the query window
    rejections_per_s: float | None = None  # 429/503 / allocation failures, sum over pods
    ttft_p95_s: float | None = None  # over the latency window (the SLO's, observe.py)
    itl_p95_s: float | None = None  # over the latency window
    queue_time_p95_s: float | None = None  # over the signal window, as the rates
    num_gpu_blocks: int | None = None  # live KV blocks per replica (cache_config_info)
    block_size_tokens: int | None = None
    # --- added by kvscale.scaling (optional) ---
    prompt_tokens_per_s: float | None = None  # sum over pods, rate of prompt tokens prefilled
    ttft_p95_recent_s: float | None = None  # TTFT p95 over the signal window (scale-in guard)


@dataclass(frozen=True)
class ReplicaCounts:
    """What the workload looks like now."""

    desired: int  # spec.replicas of the workload now
    ready: int  # Ready (serving) replicas
    starting: int  # created but not yet Ready (pending / loading weights / warming up)
    warming: int = 0  # Ready and serving, but younger than the warm-up (load not representative)


@dataclass(frozen=True)
class Observation:
    """Everything the policy sees at one tick."""

    replicas: ReplicaCounts
    signals: Signals | None  # None: the metrics read failed entirely


@dataclass(frozen=True)
class ScalingConfig:
    """Targets, windows and guards (seconds in `_s`, fractions in `_frac`)."""

    min_replicas: int = 1
    max_replicas: int = 10
    mode: Mode = Mode.AUTO
    target_kv_utilization_frac: float = 0.75  # replicas so that KV demand sits at this level
    tolerance_frac: float = 0.1  # dead band around the target: no change inside it
    safe_concurrency_per_replica: float | None = None  # from the capacity plan
    kv_capacity_tokens_per_replica: int | None = None  # from the plan (live value preferred)
    max_queue_wait_s: float | None = None  # SLO on queueing
    target_waiting_per_replica: float = 2.0  # queued requests one replica may hold
    ttft_p95_target_s: float | None = None
    itl_p95_target_s: float | None = None
    preemptions_per_s_threshold: float = 0.1  # sustained preemptions above this -> +1 at least
    scale_up_stabilization_s: float = 0.0  # take the min recommendation over this window
    scale_down_stabilization_s: float = 300.0  # take the max recommendation over this window
    max_scale_up_step: int = 4  # replicas added in one decision at most
    max_scale_down_step: int = 1  # replicas removed in one decision at most
    scale_down_cooldown_s: float = 60.0  # no scale-down this soon after any scale change
    warmup_s: float = 180.0  # a replica this young still counts as incoming capacity
    failed_reads_before_fallback: int = 3
    fallback_replicas: int | None = None  # None: hold the current count on outage
    min_reporting_frac: float = 0.5  # below this coverage, data is "partial"
    # --- added by kvscale.scaling (optional, defaults keep the original behaviour) ---
    rejections_per_s_threshold: float = 0.0  # engine rejections (429/503) above this -> +1
    scale_down_guard_window_s: float = 300.0  # a breach this soon after a scale-down undoes it
    # scale in only while TTFT p95 stayed <= this share of its target for the down window
    scale_down_max_ttft_frac: float = 0.5
    max_scale_down_cooldown_s: float = 3600.0  # ceiling of the doubled cooldown after undo
    prefill_tokens_per_s_per_replica: float | None = None  # roofline prefill rate (from the plan)
    target_prefill_utilization_frac: float = 0.7  # share of that rate the prompt load may use
    prefill_headroom_memory_s: float = 3600.0  # a target learned from an SLO breach lasts this
    forecast_horizon_s: float = 120.0  # size for the demand this far ahead (0: no forecast)


@dataclass(frozen=True)
class StepResult:
    """One step of the pipeline: what it proposed and why."""

    step: str
    replicas: int
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick."""

    replicas: int  # what to set (== current when holding)
    reason: str  # a constant from `reasons`
    message: str  # human-readable, with the numbers
    act: bool  # False in recommend mode or when nothing changes
    steps: tuple[StepResult, ...] = field(default_factory=tuple)


SEASON_BINS = 144  # 10-minute bins of a day (the forecast's seasonal profile)


@dataclass(frozen=True)
class SeasonProfile:
    """Demand by time of day: `SEASON_BINS` (kv, prefill) means, None where never seen."""

    kv_units: tuple[float | None, ...] = (None,) * SEASON_BINS
    prefill_units: tuple[float | None, ...] = (None,) * SEASON_BINS
    # the bin being filled now: its index and running sums over its ticks
    open_bin: int | None = None
    open_kv_sum: float = 0.0
    open_prefill_sum: float = 0.0
    open_kv_count: int = 0  # ticks with a known (uncensored) KV demand
    open_prefill_count: int = 0


@dataclass(frozen=True)
class ScalerState:
    """What the policy remembers between ticks (the caller stores it, e.g. in CR status)."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (time_s, raw replicas), bounded
    failed_reads: int = 0
    last_scale_time_s: float | None = None
    last_scale_down_time_s: float | None = None
    scale_down_cooldown_s: float | None = None  # lengthened after a bad scale-down
    # --- added by kvscale.scaling (optional) ---
    replicas_before_scale_down: int | None = None  # what the last scale-down removed from
    starting_since_s: float | None = None  # first tick with replicas starting (warm-up clock)
    learned_prefill_utilization_frac: float | None = None  # prefill share that breached the SLO
    learned_prefill_at_s: float | None = None  # when it was last (re)learned
    latency_breach_since_s: float | None = None  # first tick of the current TTFT/ITL breach
    # (time_s, KV demand, prefill demand) in replicas' worth, over the forecast's trend window
    demand_samples: tuple[tuple[float, float | None, float | None], ...] = ()
    season: SeasonProfile | None = None  # demand by time of day (the forecast's profile)
