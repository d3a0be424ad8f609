"""Replay a trace through a fleet under one policy and score it.

Time runs from `-warmup_s` (a pre-roll: the trace's first minutes replayed once, with their own
prefix-hash namespace, so every autoscaler reaches its own steady state before scoring starts)
to the end of the trace; scoring covers arrivals in [0, end] and GPU time in [0, end].

A request meets the SLO when it finished, its TTFT is within the TTFT target and its mean
inter-token latency (TPOT) is within the ITL target; rejected (400/503) and aborted (drained past
the grace period) requests miss it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from kvscale.scaling import Signals
from kvscale.scaling.observe import (
    LATENCY_WINDOW_S,
    SIGNAL_WINDOW_S,
    count_replicas,
    window_increase_rate,
)
from kvscale.sim.engine import SimRequest
from kvscale.sim.fleet import Fleet, FleetTotals
from kvscale.sim.policies import FleetView, Policy
from kvscale.sim.router import build_router
from kvscale.sim.stats import (
    FINE_BOUNDS_S,
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    FloatArray,
    estimate_histogram_quantile,
)
from kvscale.sim.traces import Trace, slice_trace

if TYPE_CHECKING:
    from kvscale.sim.setup import SimSetup

ProgressFn = Callable[[float], None]
_PREROLL_HASH_OFFSET = -(1 << 50)


@dataclass(frozen=True)
class ReplayOptions:
    tick_s: float = 15.0  # policy period (HPA sync period, operator timer)
    warmup_s: float = 300.0  # pre-roll length (0: start cold at t=0)
    router: str = "least-kv"
    drain_limit_s: float = 3600.0  # after the last arrival, stop waiting for stragglers
    abort_after_misses: int | None = None  # stop early once this many requests missed the SLO
    # What the pre-roll replays (its first warmup_s): by default the trace's own first minutes.
    # A scenario whose first minutes are not the steady state it starts from (a ramp) passes
    # the load the service ran at before it.
    preroll: Trace | None = None


class ReplayAbortedError(Exception):
    """The run already missed the SLO for more requests than the caller allows."""


@dataclass(frozen=True)
class TickSample:
    """One policy tick, for plots."""

    t_s: float
    desired: int
    ready: int
    starting: int
    arrivals_per_s: float
    kv_usage_frac: float | None
    waiting: float
    ttft_p95_s: float | None
    preemptions: int


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    trace: str
    requests: int
    gpu_hours: float
    slo_attainment: float
    ttft_p95_s: float
    itl_p95_s: float
    preemptions: int
    rejected: int
    scale_events: int
    peak_replicas: int
    wall_s: float
    samples: tuple[TickSample, ...] = field(default=(), repr=False)
    reasons: dict[str, int] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, float | int]:
        """The `kvscale simulate -o json` record (contract: camelCase, these keys)."""
        return {
            "gpuHours": round(self.gpu_hours, 4),
            "sloAttainment": round(self.slo_attainment, 5),
            "ttftP95S": round(self.ttft_p95_s, 4),
            "itlP95S": round(self.itl_p95_s, 5),
            "preemptions": self.preemptions,
            "rejected": self.rejected,
            "scaleEvents": self.scale_events,
            "peakReplicas": self.peak_replicas,
        }


def _window_quantile(bounds: tuple[float, ...], counts: FloatArray) -> float | None:
    """p95 of the observations in the signal window (histogram_quantile over rate())."""
    return estimate_histogram_quantile(0.95, np.asarray(bounds), counts)


def meets_slo(req: SimRequest, setup: SimSetup) -> bool:
    """Finished, TTFT within target and mean inter-token latency within the ITL target."""
    if req.status != "finished" or req.first_token_s is None:
        return False
    ttft, itl = setup.slo.ttft_p95_s, setup.slo.itl_p95_s
    if ttft is not None and req.first_token_s - req.arrival_s > ttft:
        return False
    return itl is None or req.tpot_s <= itl


def build_requests(
    trace: Trace, warmup_s: float, preroll: Trace | None = None
) -> tuple[list[SimRequest], int]:
    """Pre-roll copies (negative times, own hash namespace) of the first `warmup_s` of
    `preroll` (default: the trace itself) + the trace; returns (all, n_pre)."""
    reqs: list[SimRequest] = []
    if warmup_s > 0:
        pre = slice_trace(trace if preroll is None else preroll, 0.0, warmup_s)
        for i in range(len(pre)):
            hashes = (
                () if pre.hashes is None else tuple(h + _PREROLL_HASH_OFFSET for h in pre.hashes[i])
            )
            reqs.append(_request(-1 - i, float(pre.arrival_s[i]) - warmup_s, pre, i, hashes))
    n_pre = len(reqs)
    for i in range(len(trace)):
        hashes = () if trace.hashes is None else trace.hashes[i]
        reqs.append(_request(i, float(trace.arrival_s[i]), trace, i, hashes))
    return reqs, n_pre


def _request(rid: int, at_s: float, trace: Trace, i: int, hashes: tuple[int, ...]) -> SimRequest:
    return SimRequest(rid, at_s, int(trace.prompt_tokens[i]), int(trace.output_tokens[i]), hashes)


class _Replay:
    """State of one run (kept in one object so the loop stays readable)."""

    def __init__(self, trace: Trace, setup: SimSetup, policy: Policy, opts: ReplayOptions):
        self.trace = trace
        self.setup = setup
        self.policy = policy
        self.opts = opts
        self.fleet = Fleet(setup.engine, build_router(opts.router), setup.cold_start_s, self._done)
        self.rejected_total = 0
        self.history: deque[tuple[float, FleetTotals, int]] = deque()  # the signal window
        self.latency_history: deque[tuple[float, FleetTotals]] = deque()  # the SLO quantiles'
        self.samples: list[TickSample] = []
        self.arrivals_in_tick = 0
        self.scale_events = 0
        self.peak = 0
        self.totals_at_zero: FleetTotals | None = None
        self.misses = 0

    def _done(self, req: SimRequest) -> None:
        if req.status in ("rejected", "aborted"):
            self.rejected_total += 1
        if self.opts.abort_after_misses is None or req.arrival_s < 0:
            return
        if not meets_slo(req, self.setup):
            self.misses += 1
            if self.misses > self.opts.abort_after_misses:
                raise ReplayAbortedError(f"{self.misses} requests missed the SLO")

    def tick(self, t_s: float) -> None:
        fleet = self.fleet
        fleet.advance_to(t_s)
        if self.totals_at_zero is None and t_s >= 0:
            self.totals_at_zero = fleet.totals()
        view, sample = self._observe(t_s)
        desired = self.policy.desired_replicas(t_s, view)
        if desired != view.replicas.desired:
            fleet.scale_to(desired, t_s)
            if t_s >= 0:
                self.scale_events += 1
        if t_s >= 0:
            self.peak = max(self.peak, fleet.desired)
            self.samples.append(sample)
        self.arrivals_in_tick = 0

    def _observe(self, t_s: float) -> tuple[FleetView, TickSample]:
        """What the operator would see now: pod facts → replica counts and windowed rates by
        the rules in `kvscale.scaling.observe`, gauges averaged or summed over every pod that
        serves /metrics (draining ones included, as Prometheus scrapes them)."""
        fleet = self.fleet
        pods = tuple(fleet.pod_phases(t_s))
        counts = count_replicas(
            fleet.desired, fleet.ready, pods, now_s=t_s, warmup_s=self.setup.scaling.warmup_s
        )
        engines = fleet.snapshot_engines()
        totals = fleet.totals()
        self.history.append((t_s, totals, self.rejected_total))
        while self.history and self.history[0][0] < t_s - SIGNAL_WINDOW_S - 1e-9:
            self.history.popleft()
        old = self.history[0][1]
        self.latency_history.append((t_s, totals))
        while self.latency_history[0][0] < t_s - LATENCY_WINDOW_S - 1e-9:
            self.latency_history.popleft()
        slo_old = self.latency_history[0][1]
        n = len(engines)
        usage = sum(e.pool.usage_frac for e in engines) / n if n else None
        waiting = float(sum(len(e.waiting) for e in engines)) if n else None
        ttft_p95 = _window_quantile(TTFT_BUCKETS_S, totals.ttft_counts - slo_old.ttft_counts)
        ttft_recent = _window_quantile(TTFT_BUCKETS_S, totals.ttft_counts - old.ttft_counts)
        itl_p95 = _window_quantile(ITL_BUCKETS_S, totals.itl_counts - slo_old.itl_counts)
        queue_p95 = _window_quantile(
            REQUEST_LATENCY_BUCKETS_S, totals.queue_counts - old.queue_counts
        )
        signals = Signals(
            pods_expected=fleet.ready,
            pods_reporting=n,  # every pod serving /metrics, as the Prometheus adapter counts
            kv_usage_frac=usage,
            num_requests_running=float(sum(len(e.running) for e in engines)) if n else None,
            num_requests_waiting=waiting,
            preemptions_per_s=self._rate(lambda tot, _: tot.preemptions, t_s) if n else None,
            rejections_per_s=self._rate(lambda _, rejected: rejected, t_s),
            ttft_p95_s=ttft_p95,
            ttft_p95_recent_s=ttft_recent,
            itl_p95_s=itl_p95,
            queue_time_p95_s=queue_p95,
            prompt_tokens_per_s=self._rate(lambda tot, _: tot.prompt_tokens, t_s) if n else None,
            num_gpu_blocks=self.setup.plan.num_blocks,
            block_size_tokens=self.setup.plan.block_size_tokens,
        )
        prev = self.history[-2][1].preemptions if len(self.history) > 1 else old.preemptions
        sample = TickSample(
            t_s=t_s,
            desired=counts.desired,
            ready=counts.ready,
            starting=counts.starting,
            arrivals_per_s=self.arrivals_in_tick / self.opts.tick_s,
            kv_usage_frac=usage,
            waiting=waiting or 0.0,
            ttft_p95_s=ttft_recent,  # the last minute, as plotted
            preemptions=totals.preemptions - prev,
        )
        return FleetView(t_s, counts, signals, pods), sample

    def _rate(self, counter: Callable[[FleetTotals, int], float], t_s: float) -> float | None:
        samples = [(at_s, counter(totals, rejected)) for at_s, totals, rejected in self.history]
        return window_increase_rate(samples, t_s)

    def run(self, progress: ProgressFn | None) -> list[SimRequest]:
        opts = self.opts
        reqs, n_pre = build_requests(self.trace, opts.warmup_s, opts.preroll)
        t0 = -opts.warmup_s if opts.warmup_s > 0 else 0.0
        self.fleet.scale_to(self.policy.initial_replicas(), t0, warm=True)
        self.policy.start(t0)
        next_tick = t0 + opts.tick_s
        step = max(1, len(reqs) // 100)
        for i, req in enumerate(reqs):
            while next_tick <= req.arrival_s:
                self.tick(next_tick)
                next_tick += opts.tick_s
            self.arrivals_in_tick += 1
            if not self.fleet.route(req, req.arrival_s):
                self.rejected_total += 1
                req.status = "rejected"
                self._done_misses_only(req)
            if progress is not None and i % step == 0:
                progress(i / len(reqs))
        end_s = self.trace.duration_s
        limit_s = end_s + opts.drain_limit_s
        while next_tick <= end_s or (self._busy() and next_tick <= limit_s):
            self.tick(next_tick)
            next_tick += opts.tick_s
        if progress is not None:
            progress(1.0)
        return reqs[n_pre:]

    def _done_misses_only(self, req: SimRequest) -> None:
        if self.opts.abort_after_misses is not None and req.arrival_s >= 0:
            self.misses += 1
            if self.misses > self.opts.abort_after_misses:
                raise ReplayAbortedError(f"{self.misses} requests missed the SLO")

    def _busy(self) -> bool:
        return any(r.engine.has_work for r in self.fleet.alive)


def run_replay(
    trace: Trace,
    setup: SimSetup,
    policy: Policy,
    options: ReplayOptions | None = None,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Replay `trace` under `policy`; deterministic for a given trace, setup and options."""
    opts = options or ReplayOptions()
    started = time.perf_counter()
    run = _Replay(trace, setup, policy, opts)
    measured = run.run(progress)
    end_s = trace.duration_s
    fleet = run.fleet
    zero = run.totals_at_zero or fleet.totals()
    final = fleet.totals()
    ok = 0
    ttfts: list[float] = []
    rejected = 0
    for req in measured:
        if req.status != "finished" or req.first_token_s is None:
            rejected += 1
            continue
        ttfts.append(req.first_token_s - req.arrival_s)
        if meets_slo(req, setup):
            ok += 1
    itl_p95 = estimate_histogram_quantile(
        0.95, FINE_BOUNDS_S, final.itl_fine_counts - zero.itl_fine_counts
    )
    reasons = dict(getattr(policy, "reasons", {}))
    return ReplayResult(
        policy=policy.name,
        trace=trace.name,
        requests=len(measured),
        gpu_hours=fleet.gpu_seconds(0.0, end_s) * setup.gpus_per_replica / 3600.0,
        slo_attainment=ok / len(measured) if measured else 1.0,
        ttft_p95_s=float(np.percentile(ttfts, 95)) if ttfts else math.nan,
        itl_p95_s=itl_p95 if itl_p95 is not None else math.nan,
        preemptions=final.preemptions - zero.preemptions,
        rejected=rejected,
        scale_events=run.scale_events,
        peak_replicas=run.peak,
        wall_s=time.perf_counter() - started,
        samples=tuple(run.samples),
        reasons=reasons,
    )


def size_static_replicas(
    trace: Trace,
    setup: SimSetup,
    options: ReplayOptions | None = None,
    target_frac: float = 0.99,
    build: Callable[[int], Policy] | None = None,
    *,
    start: int | None = None,
) -> int:
    """Smallest fixed replica count meeting the SLO for `target_frac` of requests (peak
    provisioning sized by load test, the strongest static baseline); max_replicas if none does.

    Galloping search from `start` (default min_replicas, cheap for light loads) up or down,
    then bisection; a run stops as soon as it has missed more requests than the target allows.
    """
    from kvscale.sim.policies import StaticPolicy

    make = build or StaticPolicy
    base = options or ReplayOptions()
    allowed = int(len(trace) * (1.0 - target_frac))
    opts = replace(base, abort_after_misses=allowed)

    def meets(count: int) -> bool:
        return _static_meets(trace, setup, make(count), opts)

    lo, hi = setup.scaling.min_replicas, setup.scaling.max_replicas
    probe = min(hi, max(lo, 1, start or 0))
    failed = lo - 1  # largest count known to miss
    if start is not None and meets(probe):  # gallop down from a count that meets
        step = 1
        while probe - step > failed and meets(probe - step):
            probe -= step
            step *= 2
        failed = max(failed, probe - step)
    else:
        step = probe if start is None else 1
        while not meets(probe):  # gallop up: failing runs stop early
            failed = probe
            if probe >= hi:
                return hi
            probe, step = min(hi, probe + step), step * 2
    while probe - failed > 1:  # probe meets the SLO, failed does not
        mid = (failed + probe) // 2
        if meets(mid):
            probe = mid
        else:
            failed = mid
    return probe


def _static_meets(trace: Trace, setup: SimSetup, policy: Policy, opts: ReplayOptions) -> bool:
    try:
        _Replay(trace, setup, policy, opts).run(None)
    except ReplayAbortedError:
        return False
    return True
