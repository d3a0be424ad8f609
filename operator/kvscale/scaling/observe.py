"""Building a tick's `Observation`: the rules the operator and the simulator share.

The operator reads pods from the API and rates from Prometheus; the simulator reads its own
fleet and counters. Both turn what they saw into replica counts and windowed rates here, so
the policy sees the same observation for the same facts (the parity test replays a trace
through both paths and compares every decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvscale.scaling.types import ReplicaCounts

SIGNAL_WINDOW_S = 60.0  # the rate()/histogram_quantile() window of every demand signal
# The histogram_quantile() window of the SLO signals (TTFT and ITL p95): an SLO states a
# percentile over minutes, not over one minute's burst (ADR 0015).
LATENCY_WINDOW_S = 300.0


class PodState(Protocol):
    """What the replica count needs from one engine pod (the operator's `PodFacts` has it)."""

    @property
    def created_s(self) -> float | None: ...

    @property
    def ready(self) -> bool: ...

    @property
    def terminating(self) -> bool: ...


@dataclass(frozen=True)
class PodPhase:
    """A `PodState` as a value (the simulator's replicas report these)."""

    created_s: float | None
    ready: bool
    terminating: bool


def count_replicas(
    desired: int, ready: int, pods: Iterable[PodState], *, now_s: float, warmup_s: float
) -> ReplicaCounts:
    """Replica counts for the policy from the workload's desired and Ready counts and its pods.

    `starting` = replicas not yet Ready: capacity on its way, which the signals do not show.
    `warming` = Ready pods younger than the warm-up: they serve (their capacity is in the
    signals), but a replica that just turned Ready has an empty KV cache and a cold prefix
    cache, so its load is not yet representative and must not make the fleet look idle (no
    scale-down while any replica starts or warms). Terminating pods are neither.
    """
    desired = max(0, desired)
    ready = max(0, ready)
    not_ready = max(0, desired - ready)
    young = sum(
        1
        for pod in pods
        if pod.ready
        and not pod.terminating
        and pod.created_s is not None
        and now_s - pod.created_s < warmup_s
    )
    ready = min(ready, desired)
    return ReplicaCounts(
        desired=desired, ready=ready, starting=not_ready, warming=min(ready, young)
    )


def window_increase_rate(samples: Sequence[tuple[float, float]], now_s: float) -> float | None:
    """Per-second increase of a counter over the signal window, from (time_s, value) samples.

    The increase between the oldest sample inside `[now - SIGNAL_WINDOW_S, now]` and the newest,
    over the time between them — Prometheus's `rate(x[window])` on samples aligned with the
    window's ends. None with fewer than two samples in the window (rate() returns nothing).
    """
    inside = [(t_s, value) for t_s, value in samples if now_s - SIGNAL_WINDOW_S - 1e-9 <= t_s]
    if len(inside) < 2:
        return None
    (t0_s, first), (t1_s, last) = inside[0], inside[-1]
    if t1_s <= t0_s:
        return None
    return max(0.0, last - first) / (t1_s - t0_s)
