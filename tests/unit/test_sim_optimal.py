"""The hindsight-optimal schedule: the DP against brute force, and needs found by replay."""

from __future__ import annotations

import itertools
import random

import pytest

from kvscale.capacity import PlanRequest, SloTargets, find_gpu, find_model, plan_capacity
from kvscale.scaling import ScalingConfig
from kvscale.sim.optimal import schedule_from_needs, window_needs
from kvscale.sim.replay import ReplayOptions, size_static_replicas
from kvscale.sim.setup import SimSetup, build_sim_setup
from kvscale.sim.traces import Trace, default_azure_path, load_azure, ramp_trace, slice_trace


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


@pytest.fixture(scope="module")
def small() -> tuple[Trace, SimSetup]:
    plan = plan_capacity(
        PlanRequest(
            model=find_model("meta-llama/Llama-3.1-8B-Instruct"),
            gpu=find_gpu("l40s"),
            max_model_len_tokens=8192,
        )
    )
    config = ScalingConfig(min_replicas=1, max_replicas=8)
    setup = build_sim_setup("test", plan, config, SloTargets(2.0, 0.1))
    azure = slice_trace(load_azure(default_azure_path("conv")), 0.0, 120.0)
    return ramp_trace(azure, ((0.0, 1.0), (60.0, 1.0), (61.0, 4.0))), setup


def test_the_search_finds_the_same_count_from_any_start(small: tuple[Trace, SimSetup]) -> None:
    trace, setup = small
    options = ReplayOptions(warmup_s=30.0)
    plain = size_static_replicas(trace, setup, options)
    assert plain > 1  # the load needs more than one replica, so the search has work to do
    for start in (1, plain, plain + 3):
        assert size_static_replicas(trace, setup, options, start=start) == plain


def test_each_window_needs_what_its_own_load_needs(small: tuple[Trace, SimSetup]) -> None:
    trace, setup = small
    needs = window_needs(trace, setup, 60.0, preroll_s=30.0)
    assert len(needs) == 2
    assert needs[0] < needs[1]  # the second minute carries 4x the first one's rate


def test_the_schedule_starts_where_the_policies_start() -> None:
    # Needs 1 1 3 from a fleet of 3: free to start, the optimum drops to 1 at once; from 3 it
    # may shed one replica per window (step limit): 2, then 1, then two cold starts back to 3
    # (2·60 + 1·60 + 3·60 + 2·30 = 420 replica-seconds; holding 2 in window 1 costs 450).
    needs = [1, 1, 3]
    free = schedule_from_needs(
        needs, window_s=60.0, last_window_s=60.0, cold_start_s=30.0, max_down_per_window=1
    )
    shared = schedule_from_needs(
        needs,
        window_s=60.0,
        last_window_s=60.0,
        cold_start_s=30.0,
        max_down_per_window=1,
        initial=3,
    )
    assert free.replicas == (1, 1, 3)
    assert shared.replicas == (2, 1, 3)
    assert shared.gpu_hours * 3600.0 == pytest.approx(420.0)
    assert shared.gpu_hours > free.gpu_hours
    # from below the first need the start pays the cold starts it adds
    low = schedule_from_needs(
        [3, 3], window_s=60.0, last_window_s=60.0, cold_start_s=30.0, max_down_per_window=1,
        initial=1,
    )  # fmt: skip
    assert low.gpu_hours * 3600.0 == pytest.approx(3 * 60 + 3 * 60 + 2 * 30)
