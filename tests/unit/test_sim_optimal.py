"""The hindsight-optimal schedule: the DP against brute force, and needs found by replay."""

from __future__ import annotations

import itertools
import random

import pytest

from kvscale.sim.optimal import schedule_from_needs


def _brute_force(needs: list[int], window_s: float, cold_s: float, max_down: int) -> float:
    best = float("inf")
    top = max(needs)
    for schedule in itertools.product(range(top + 1), repeat=len(needs)):
        if any(x < n for x, n in zip(schedule, needs, strict=True)):
            continue
        if any(b < a - max_down for a, b in itertools.pairwise(schedule)):
            continue
        cost = sum(schedule) * window_s + cold_s * sum(
            max(0, b - a) for a, b in itertools.pairwise(schedule)
        )
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_schedule_is_the_cheapest_feasible_one(seed: int) -> None:
    rng = random.Random(seed)
    needs = [rng.randint(0, 4) for _ in range(6)]
    cold_s, max_down = rng.choice([10.0, 60.0, 250.0]), rng.choice([1, 2])
    got = schedule_from_needs(
        needs,
        window_s=100.0,
        last_window_s=100.0,
        cold_start_s=cold_s,
        max_down_per_window=max_down,
    )
    assert got.gpu_hours * 3600.0 == pytest.approx(_brute_force(needs, 100.0, cold_s, max_down))
    assert all(x >= n for x, n in zip(got.replicas, needs, strict=True))
    assert all(b >= a - max_down for a, b in itertools.pairwise(got.replicas))


def test_a_short_dip_is_kept_when_a_cold_start_costs_more_than_it_saves() -> None:
    needs = [3, 2, 3]
    keep = schedule_from_needs(
        needs, window_s=60.0, last_window_s=60.0, cold_start_s=90.0, max_down_per_window=1
    )
    follow = schedule_from_needs(
        needs, window_s=60.0, last_window_s=60.0, cold_start_s=30.0, max_down_per_window=1
    )
    assert keep.replicas == (3, 3, 3)
    assert follow.replicas == (3, 2, 3)
    assert keep.peak_need == 3
