"""Fleet replay: determinism, scoring, the baselines' HPA arithmetic, cold start and drain."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kvscale.capacity import PlanRequest, SloTargets, find_gpu, find_model, plan_capacity
from kvscale.scaling import ReplicaCounts, ScalingConfig, Signals
from kvscale.sim.engine import SimRequest
from kvscale.sim.fleet import ColdStart, Fleet
from kvscale.sim.policies import FleetView, HpaPolicy, build_policy
from kvscale.sim.replay import ReplayOptions, build_requests, run_replay
from kvscale.sim.router import LeastKvRouter, RoundRobinRouter
from kvscale.sim.setup import SimSetup, build_sim_setup
from kvscale.sim.traces import default_azure_path, generate_servegen, load_azure, slice_trace

SERVEGEN = Path(__file__).resolve().parents[2] / "data" / "traces" / "servegen"


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    plan = plan_capacity(
        PlanRequest(
            model=find_model("meta-llama/Llama-3.1-8B-Instruct"),
            gpu=find_gpu("l40s"),
            max_model_len_tokens=8192,
        )
    )
    config = ScalingConfig(
        min_replicas=1, max_replicas=6, ttft_p95_target_s=2.0, itl_p95_target_s=0.1
    )
    return build_sim_setup("test", plan, config, SloTargets(2.0, 0.1))


def _servegen_trace(seed: int):  # type: ignore[no-untyped-def]
    lengths = load_azure(default_azure_path("conv"))
    path = SERVEGEN / "m-large_rate_per_10min.csv"
    return generate_servegen(path, lengths, duration_s=120.0, rate_scale=0.03, seed=seed)


@pytest.mark.parametrize("policy", ["kvscale", "kv-threshold"])
def test_same_seed_same_result(setup: SimSetup, policy: str) -> None:
    opts = ReplayOptions(warmup_s=30.0)
    runs = [
        run_replay(_servegen_trace(7), setup, build_policy(policy, setup.scaling, 2, 1), opts)
        for _ in range(2)
    ]
    assert runs[0].to_json() == runs[1].to_json()
    assert runs[0].samples == runs[1].samples


def test_a_different_seed_gives_a_different_trace() -> None:
    a, b = _servegen_trace(1), _servegen_trace(2)
    assert len(a) != len(b) or a.arrival_s.tolist() != b.arrival_s.tolist()


def test_static_run_is_scored(setup: SimSetup) -> None:
    trace = slice_trace(load_azure(default_azure_path("conv")), 0.0, 120.0)
    result = run_replay(
        trace, setup, build_policy("static", setup.scaling, 2), ReplayOptions(warmup_s=0)
    )
    assert result.requests == len(trace)
    assert result.peak_replicas == 2 and result.scale_events == 0
    assert result.gpu_hours == pytest.approx(2 * trace.duration_s / 3600)
    assert 0.0 <= result.slo_attainment <= 1.0
    assert set(result.to_json()) == {
        "gpuHours", "sloAttainment", "ttftP95S", "itlP95S", "preemptions", "rejected",
        "scaleEvents", "peakReplicas",
    }  # fmt: skip


def test_the_pre_roll_replays_the_given_load_before_t0() -> None:
    conv = load_azure(default_azure_path("conv"))
    trace = slice_trace(conv, 0.0, 60.0)
    own, n_own = build_requests(trace, 30.0)
    given, n_given = build_requests(trace, 30.0, preroll=slice_trace(conv, 600.0, 700.0))
    assert n_own == sum(1 for r in own if r.arrival_s < 0) > 0
    assert n_given == sum(1 for r in given if r.arrival_s < 0) > 0
    assert [r.prompt_tokens for r in own[:n_own]] != [r.prompt_tokens for r in given[:n_given]]
    assert [r.prompt_tokens for r in own[n_own:]] == [r.prompt_tokens for r in given[n_given:]]
    assert all(-30.0 <= r.arrival_s < 0 for r in given[:n_given])


def _view(desired: int, ready: int, starting: int, **signals: float) -> FleetView:
    sig = Signals(pods_expected=ready, pods_reporting=ready, **signals)  # type: ignore[arg-type]
    return FleetView(0.0, ReplicaCounts(desired, ready, starting), sig)


@pytest.mark.parametrize(
    ("waiting", "current", "expected"),
    [
        (12.0, 1, 3),  # ceil(12 / 5)
        (10.0, 2, 2),  # exactly on target
        (10.5, 2, 2),  # within the 10 % tolerance
        (100.0, 2, 6),  # +4 pods per period at most (greater of 100 % and 4)
        (100.0, 10, 20),  # +100 % per period
    ],
)
def test_keda_queue_baseline_follows_the_hpa_formula(
    waiting: float, current: int, expected: int
) -> None:
    policy = HpaPolicy("queue", "waiting_total", 5.0, 1, 40)
    policy.start(-1000.0)
    assert (
        policy.desired_replicas(0.0, _view(current, current, 0, num_requests_waiting=waiting))
        == expected
    )


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    policy = HpaPolicy("queue", "waiting_total", 5.0, 1, 40, initial=4)
    policy.start(0.0)
    assert policy.desired_replicas(15.0, _view(4, 4, 0, num_requests_waiting=0.0)) == 4
    assert policy.desired_replicas(299.0, _view(4, 4, 0, num_requests_waiting=0.0)) == 4
    assert policy.desired_replicas(301.0, _view(4, 4, 0, num_requests_waiting=0.0)) == 1


@pytest.mark.parametrize(
    ("usage", "ready", "starting", "expected"),
    [
        (0.96, 4, 0, 5),  # 4 * 0.96 / 0.8 = 4.8
        (0.96, 4, 2, 6),  # recount with 2 unready pods at 0: ratio 0.8 -> hold current (6)
        (1.0, 4, 1, 5),  # 4 / (5 * 0.8) = 1.0 -> hold
        (0.85, 4, 0, 4),  # within tolerance
    ],
)
def test_kv_threshold_baseline_counts_unready_pods_as_idle(
    usage: float, ready: int, starting: int, expected: int
) -> None:
    policy = HpaPolicy("kv-threshold", "kv_usage_per_pod", 0.8, 1, 40)
    policy.start(-1000.0)
    view = _view(ready + starting, ready, starting, kv_usage_frac=usage)
    assert policy.desired_replicas(0.0, view) == expected


def test_cold_start_is_weights_over_bandwidth_plus_fixed_parts() -> None:
    cold = ColdStart(fixed_s=30.0, weights_load_bytes_per_s=2e9, warmup_s=20.0)
    assert cold.seconds(16_000_000_000) == pytest.approx(58.0)


def test_new_replicas_take_no_traffic_until_ready(setup: SimSetup) -> None:
    done: list[SimRequest] = []
    fleet = Fleet(setup.engine, RoundRobinRouter(), 60.0, done.append)
    fleet.scale_to(1, 0.0, warm=True)
    fleet.scale_to(2, 0.0)
    assert [pod.ready for pod in fleet.pod_phases(59.0)] == [True, False]
    assert [pod.ready for pod in fleet.pod_phases(60.0)] == [True, True]
    assert fleet.ready == 2
    assert fleet.gpu_seconds(0.0, 100.0) == pytest.approx(200.0)


def test_scale_down_drains_then_aborts_after_the_grace_period(setup: SimSetup) -> None:
    done: list[SimRequest] = []
    fleet = Fleet(setup.engine, LeastKvRouter(), 60.0, done.append, drain_grace_s=30.0)
    fleet.scale_to(1, 0.0, warm=True)
    long_req = SimRequest(0, 0.0, 500, 8000)
    assert fleet.route(long_req, 0.0)
    fleet.scale_to(0, 1.0)
    fleet.advance_to(40.0)
    assert long_req.status == "aborted" and done == [long_req]
    assert fleet.gpu_seconds(0.0, math.inf) == pytest.approx(31.0)
