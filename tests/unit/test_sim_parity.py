"""The simulator decides exactly as the operator does.

A replay records, at every tick, the pod facts and metric samples the simulated fleet showed
and the decision the simulator's kvscale policy took. The operator's own tick (`plan_tick`:
Deployment + pod facts → replica counts, spec → scaling config, CR status → scaler state,
status written back) is then fed the same facts tick by tick, and must take the same decision
every time — scale-ups, holds during warm-up, scale-downs and their messages alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from kvscale.api.convert import plan_deployment
from kvscale.api.models import LLMDeploymentSpec
from kvscale.cli.simulate_cmd import default_deployment_path, load_deployment
from kvscale.controller.autoscaler import plan_tick
from kvscale.controller.autoscaler_status import PodFacts
from kvscale.controller.autoscaler_status import count_replicas as operator_count
from kvscale.metrics.source import SignalsReading
from kvscale.scaling import Decision, Observation, ReplicaCounts, ScalerState, decide, reasons
from kvscale.scaling.observe import count_replicas, window_increase_rate
from kvscale.sim.fleet import Fleet
from kvscale.sim.policies import FleetView, KvscalePolicy
from kvscale.sim.replay import ReplayOptions, run_replay
from kvscale.sim.router import LeastKvRouter
from kvscale.sim.traces import default_azure_path, load_azure, ramp_trace, slice_trace
from samples import signals


def _operator_status(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The plan part of status as the reconcile writes it (selected GPU type, plans)."""
    result = plan_deployment(spec)
    selected = result.selected_plan()
    assert selected is not None
    return {
        "plans": [
            p.model_dump(by_alias=True, exclude_none=True, mode="json") for p in result.plans
        ],
        "selectedGpuType": result.selected_gpu_type,
        "safeConcurrency": selected.safe_concurrency,
    }


def _operator_tick(
    spec: LLMDeploymentSpec, status: dict[str, Any], view: FleetView
) -> tuple[Decision, dict[str, Any], int | None]:
    deployment = {
        "spec": {"replicas": view.replicas.desired},
        "status": {"readyReplicas": view.signals.pods_expected},
    }
    pods = [
        PodFacts(f"pod-{i}", pod.created_s,
                 pod.ready, pod.terminating, 0, 0, 0, None)
        for i, pod in enumerate(view.pods)
    ]  # fmt: skip
    plan = plan_tick(
        spec,
        status,
        deployment=deployment,
        pods=pods,
        reading=SignalsReading(view.signals),
        now_s=view.now_s,  # the operator's clock is injected: the replay's
    )
    return plan.decision, {**status, "autoscaler": plan.autoscaler_status}, plan.scale_to


@pytest.fixture(scope="module")
def recorded() -> tuple[LLMDeploymentSpec, list[tuple[FleetView, Decision]]]:
    path = default_deployment_path()
    spec = LLMDeploymentSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
    setup = load_deployment(path).setup
    # 15 minutes of Azure conv at x6 for the first 4 minutes and x1 after, from one replica:
    # the fleet scales out, new replicas warm up, and when the load falls it scales back in.
    azure = slice_trace(load_azure(default_azure_path("conv")), 0.0, 900.0)
    trace = ramp_trace(azure, ((0.0, 6.0), (240.0, 6.0), (241.0, 1.0)))
    policy = KvscalePolicy(setup.scaling, initial=1, record=True)
    run_replay(trace, setup, policy, ReplayOptions(warmup_s=60.0, drain_limit_s=900.0))
    return spec, policy.decisions


def test_the_replay_exercises_scale_out_warm_up_and_scale_in(
    recorded: tuple[LLMDeploymentSpec, list[tuple[FleetView, Decision]]],
) -> None:
    _, decisions = recorded
    seen = {decision.reason for _, decision in decisions}
    ups = [d for v, d in decisions if d.act and d.replicas > v.replicas.desired]
    downs = [d for v, d in decisions if d.act and d.replicas < v.replicas.desired]
    assert ups and downs
    assert any(view.replicas.warming > 0 for view, _ in decisions), "no pod warming up"
    assert reasons.COLD_START_HOLD in seen or reasons.WITHIN_TOLERANCE in seen


def test_operator_takes_the_simulators_decision_at_every_tick(
    recorded: tuple[LLMDeploymentSpec, list[tuple[FleetView, Decision]]],
) -> None:
    spec, decisions = recorded
    status = _operator_status(spec)
    for view, simulated in decisions:
        decision, status, scale_to = _operator_tick(spec, status, view)
        where = f"t={view.now_s:.0f}s"
        assert (decision.replicas, decision.reason, decision.act) == (
            simulated.replicas,
            simulated.reason,
            simulated.act,
        ), where
        assert decision.message == simulated.message, where
        acted = simulated.replicas if simulated.act else view.replicas.desired
        assert (scale_to if scale_to is not None else view.replicas.desired) == acted, where


def test_a_ready_replica_inside_its_warm_up_holds_a_scale_down_in_both_paths() -> None:
    """Three Ready replicas, one 100 s old (warm-up 180 s), KV usage 0.2: both paths count one
    warming up, and the policy holds at 3 instead of scaling to 2."""
    setup = load_deployment(default_deployment_path()).setup
    fleet = Fleet(setup.engine, LeastKvRouter(), 58.0, lambda _: None)
    fleet.scale_to(2, -1000.0, warm=True)
    fleet.scale_to(3, -100.0)
    pods = fleet.pod_phases(0.0)
    simulated = count_replicas(fleet.desired, fleet.ready, pods, now_s=0.0, warmup_s=180.0)
    facts = [PodFacts(f"p{i}", p.created_s, p.ready, p.terminating, 0, 0, 0, None)
             for i, p in enumerate(pods)]  # fmt: skip
    deployment = {"spec": {"replicas": 3}, "status": {"readyReplicas": 3}}
    operator = operator_count(deployment, facts, now_s=0.0, warmup_s=180.0)
    assert simulated == operator == ReplicaCounts(desired=3, ready=3, starting=0, warming=1)
    config = replace(setup.scaling, warmup_s=180.0)
    decision, _ = decide(
        config, ScalerState(), Observation(simulated, signals(3, kv_usage_frac=0.2)), 0.0
    )
    assert (decision.replicas, decision.reason) == (3, reasons.COLD_START_HOLD)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(-60.0, 0.0), (-30.0, 3.0), (0.0, 6.0)], 0.1),  # 6 over the 60 s window
        ([(-75.0, 0.0), (-45.0, 3.0), (0.0, 6.0)], 3.0 / 45.0),  # oldest sample outside it
        ([(0.0, 6.0)], None),  # one sample: no rate, as rate() returns nothing
        ([(-60.0, 9.0), (0.0, 2.0)], 0.0),  # a counter reset never reads as negative
    ],
)
def test_window_increase_rate(samples: list[tuple[float, float]], expected: float | None) -> None:
    assert window_increase_rate(samples, 0.0) == (
        None if expected is None else pytest.approx(expected)
    )
