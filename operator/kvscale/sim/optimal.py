"""The hindsight-optimal schedule: the fewest GPU-hours a policy with the same cold start and
step limits could spend while meeting the SLO, knowing the whole trace in advance.

Model (documented in docs/simulator.md):

1. **Needs.** The trace is cut into windows of `window_s`. A window's need is the smallest fixed
   replica count that meets the SLO for `target_frac` of the window's requests, found by replay
   (the load test that sizes the static baseline, on the window alone, after a pre-roll of its
   own first minutes so that it starts warm).
2. **Schedule.** Dynamic programming over the windows chooses a count x_w ≥ need_w for every
   window. Replicas serving window w are billed for all of it; a replica added at a window
   boundary is billed for one cold start before it (it must be Ready when the window starts);
   a replica removed is billed no drain. A scale-down is limited to `max_down_per_window`
   replicas per window (the policy's step limit times the decisions its cooldown allows); a
   scale-up is not limited (started early enough, any step fits).

It is a bound, not a policy: it knows the future, pays no drain and no stabilisation, and each
window meets the SLO on its own, so the whole trace does. Coarser windows make the bound looser
(a window's need is its busiest minute's); finer ones cost more replays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kvscale.sim.replay import ReplayOptions, size_static_replicas
from kvscale.sim.setup import SimSetup
from kvscale.sim.traces import Trace, slice_trace


@dataclass(frozen=True)
class OptimalSchedule:
    window_s: float
    needs: tuple[int, ...]  # per window: the smallest fixed count meeting the SLO there
    replicas: tuple[int, ...]  # per window: the schedule's count
    gpu_hours: float

    @property
    def peak_need(self) -> int:
        """Static provisioned for the trace's peak: the busiest window's need, all along."""
        return max(self.needs, default=0)


def window_needs(
    trace: Trace,
    setup: SimSetup,
    window_s: float,
    *,
    preroll_s: float = 120.0,
    target_frac: float = 0.99,
    progress: Callable[[float], None] | None = None,
) -> list[int]:
    """Per window, the smallest fixed count meeting the SLO for `target_frac` of its requests
    (0 for a window without requests)."""
    windows = max(1, math.ceil(trace.duration_s / window_s))
    options = ReplayOptions(warmup_s=preroll_s)
    needs: list[int] = []
    previous: int | None = None
    for index in range(windows):
        part = slice_trace(trace, index * window_s, window_s)
        if len(part) == 0:
            needs.append(0)
            continue
        previous = size_static_replicas(
            part, setup, options, target_frac=target_frac, start=previous
        )
        needs.append(previous)
        if progress is not None:
            progress((index + 1) / windows)
    return needs


def schedule_from_needs(
    needs: list[int],
    *,
    window_s: float,
    last_window_s: float,
    cold_start_s: float,
    max_down_per_window: int,
    gpus_per_replica: int = 1,
    initial: int | None = None,
) -> OptimalSchedule:
    """The cheapest schedule x_w ≥ needs[w] (dynamic programming, see the module doc)."""
    if not needs:
        return OptimalSchedule(window_s, (), (), 0.0)
    top = max(*needs, initial or 0)
    counts = range(0, top + 1)
    lengths = [window_s] * (len(needs) - 1) + [last_window_s]

    # cost[x]: the cheapest replica-seconds up to this window ending at x replicas. Before
    # window 0 the fleet is at `initial` (a policy's start); with no start, any count is free.
    cost = [0.0 if initial is None or x == initial else math.inf for x in counts]
    choices: list[list[int]] = []
    for index, need in enumerate(needs):
        new_cost, choice = [], []
        for x in counts:
            if x < need:
                new_cost.append(math.inf)
                choice.append(-1)
                continue
            best, arg = math.inf, -1
            for before in counts:
                if cost[before] == math.inf or x < before - max_down_per_window:
                    continue
                total = cost[before] + cold_start_s * max(0, x - before)
                if total < best:
                    best, arg = total, before
            new_cost.append(best + x * lengths[index])
            choice.append(arg)
        cost = new_cost
        choices.append(choice)
    end = min(counts, key=lambda x: cost[x])
    schedule = [end]
    for choice in reversed(choices[1:]):  # choices[0] points at the start, not a window
        schedule.append(choice[schedule[-1]])
    schedule.reverse()
    gpu_hours = cost[end] * gpus_per_replica / 3600.0
    return OptimalSchedule(window_s, tuple(needs), tuple(schedule), gpu_hours)


def hindsight_optimal(
    trace: Trace,
    setup: SimSetup,
    window_s: float,
    *,
    tick_s: float = ReplayOptions.tick_s,
    progress: Callable[[float], None] | None = None,
    initial: int | None = None,
) -> OptimalSchedule:
    """Needs by replay, then the cheapest schedule under the deployment's limits (from
    `initial` replicas when the policies it is compared with start there)."""
    needs = window_needs(trace, setup, window_s, progress=progress)
    scaling = setup.scaling
    decisions = window_s / max(tick_s, scaling.scale_down_cooldown_s)
    last_window_s = trace.duration_s - window_s * (len(needs) - 1)
    return schedule_from_needs(
        needs,
        window_s=window_s,
        last_window_s=max(0.0, last_window_s),
        cold_start_s=setup.cold_start_s,
        max_down_per_window=max(1, int(decisions) * scaling.max_scale_down_step),
        gpus_per_replica=setup.gpus_per_replica,
        initial=initial,
    )
