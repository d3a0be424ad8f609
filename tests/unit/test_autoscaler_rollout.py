"""Rollback wiring: template hashes, state round-trip, the rollout step and the apply guard."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvscale.controller.autoscaler_status import PodFacts, planned_kv_tokens_of
from kvscale.controller.rollout_wiring import (
    ANNOTATION_LAST_KNOWN_GOOD,
    RolloutGuard,
    RolloutMemo,
    RolloutMemory,
    candidate_health,
    decode_last_known_good,
    dump_rollout_state,
    encode_last_known_good,
    guard_template,
    load_rollout_state,
    planned_blocks_of,
    step_rollout,
    template_hash,
)
from kvscale.scaling import Signals
from kvscale.scaling.rollback import (
    Guardrails,
    GuardrailSnapshot,
    RolloutPhase,
    RolloutState,
)

GOOD, BAD = "aaaa", "bbbb"


def template(plan_hash: str, args: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"kvscale.dev/plan-hash": plan_hash}},
        "spec": {"containers": [{"name": "engine", "args": args}]},
    }


def deployment(plan_hash: str, args: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "chat",
            "namespace": "ns",
            "labels": {"app.kubernetes.io/managed-by": "kvscale", "kvscale.dev/deployment": "chat"},
        },
        "spec": {"replicas": 2, "template": template(plan_hash, args or [f"--{plan_hash}"])},
    }


def facts(plan_hash: str, restarts: int = 0, oom: int = 0, crash: int = 0) -> PodFacts:
    return PodFacts("p", 0.0, True, False, restarts, oom, crash, plan_hash)


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        (deployment(GOOD), GOOD),
        ({"spec": {"template": {"metadata": {}}}}, None),
        ({}, None),
        (None, None),
    ],
)
def test_template_hash(obj: Any, want: str | None) -> None:
    assert template_hash(obj) == want


@pytest.mark.parametrize(
    "state",
    [
        RolloutState(),
        RolloutState(
            phase=RolloutPhase.BAKING,
            last_known_good_hash=GOOD,
            candidate_hash=BAD,
            baseline=GuardrailSnapshot(0.1, None, 0.5, 0.05),
            bake_started_s=100.0,
            refused_hashes=("x", "y"),
            healthy_checks=3,
        ),
    ],
)
def test_rollout_state_round_trips(state: RolloutState) -> None:
    assert load_rollout_state(dump_rollout_state(state, None)) == state


def test_unknown_phase_loads_as_idle() -> None:
    assert load_rollout_state({"phase": "exploded"}).phase is RolloutPhase.IDLE


def test_last_known_good_annotation_round_trips_and_tolerates_garbage() -> None:
    tpl = template(GOOD, ["--a"])
    encoded = encode_last_known_good(GOOD, tpl)
    assert decode_last_known_good({ANNOTATION_LAST_KNOWN_GOOD: encoded}) == (GOOD, tpl)
    for bad in ({}, {ANNOTATION_LAST_KNOWN_GOOD: "{not json"}, {ANNOTATION_LAST_KNOWN_GOOD: "{}"}):
        assert decode_last_known_good(bad) is None


@pytest.mark.parametrize(
    ("pods", "want"),
    [
        ([facts(BAD, restarts=2), facts(GOOD, restarts=5)], (2, 0, 0)),  # only the candidate's
        ([facts(BAD, oom=1), facts(BAD, crash=1)], (0, 1, 1)),
        ([], (0, 0, 0)),
    ],
)
def test_candidate_health_counts_only_candidate_pods(
    pods: list[PodFacts], want: tuple[int, int, int]
) -> None:
    health = candidate_health(pods, BAD, Signals(2, 2, num_gpu_blocks=900), planned_blocks=1000)
    assert (health.restarts, health.oom_killed, health.crash_looping) == want
    assert (health.live_num_gpu_blocks, health.planned_num_gpu_blocks) == (900, 1000)


def test_planned_blocks_come_from_the_selected_plan() -> None:
    status = {
        "selectedGpuType": "h100",
        "plans": [{"gpuType": "l40s", "numBlocks": 10}, {"gpuType": "h100", "numBlocks": 99}],
    }
    assert planned_blocks_of(status) == 99
    assert planned_blocks_of({"plans": []}) is None
    status["plans"][1]["kvCacheTokens"] = 1584  # type: ignore[index]
    assert planned_kv_tokens_of(status) == 1584
    assert planned_kv_tokens_of({"selectedGpuType": "l40s", "plans": []}) is None


GUARDRAILS = Guardrails(bake_window_s=60.0, preemptions_per_s_max=0.5)
QUIET = Signals(2, 2, preemptions_per_s=0.0)
HOT = Signals(2, 2, preemptions_per_s=2.0)


def step(state: RolloutState, running: str, signals: Signals | None = QUIET, **kw: Any) -> Any:
    stored = kw.pop("stored", (GOOD, template(GOOD, ["--good"])))
    return step_rollout(
        state,
        deployment=deployment(running),
        stored=stored,
        signals=signals,
        pods=kw.pop("pods", []),
        planned_blocks=None,
        guardrails=GUARDRAILS,
        now_s=kw.pop("now_s", 1000.0),
    )


def test_first_sight_records_the_running_template_as_last_known_good() -> None:
    out, state = step(RolloutState(), GOOD, stored=None)
    assert state.last_known_good_hash == GOOD
    assert state.baseline.preemptions_per_s == 0.0
    assert decode_last_known_good({ANNOTATION_LAST_KNOWN_GOOD: out.annotation}) is not None
    assert out.event is None


def test_new_template_starts_a_bake_with_the_stored_baseline() -> None:
    idle = RolloutState(last_known_good_hash=GOOD, baseline=GuardrailSnapshot(0.05))
    out, state = step(idle, BAD)
    assert state.phase is RolloutPhase.BAKING
    assert state.candidate_hash == BAD
    assert state.baseline.preemptions_per_s == 0.05
    assert out.event is not None and out.event.reason == "RolloutStarted"
    assert out.condition is not None and out.condition.status == "False"


def test_breach_during_bake_restores_the_stored_template() -> None:
    baking = RolloutState(
        phase=RolloutPhase.BAKING,
        last_known_good_hash=GOOD,
        candidate_hash=BAD,
        baseline=GuardrailSnapshot(0.0),
        bake_started_s=990.0,
    )
    out, state = step(baking, BAD, HOT)
    assert out.rolled_back
    assert out.restore_template == template(GOOD, ["--good"])
    assert state.refused_hashes == (BAD,)
    assert out.condition is not None
    assert (out.condition.status, out.condition.reason) == ("True", "PreemptionRateRegressed")
    assert "2/s > 0.5/s" in out.condition.message
    assert out.event is not None and out.event.type == "Warning"


def test_breach_without_a_stored_template_says_so() -> None:
    baking = RolloutState(
        phase=RolloutPhase.BAKING, last_known_good_hash=GOOD, candidate_hash=BAD, bake_started_s=0
    )
    out, _ = step(baking, BAD, HOT, stored=None)
    assert out.restore_template is None
    assert out.condition is not None and "restore it by hand" in out.condition.message


def test_crash_looping_candidate_pods_roll_back_without_metrics() -> None:
    baking = RolloutState(
        phase=RolloutPhase.BAKING, last_known_good_hash=GOOD, candidate_hash=BAD, bake_started_s=0
    )
    out, _ = step(baking, BAD, None, pods=[facts(BAD, crash=1)])
    assert out.rolled_back
    assert out.condition is not None and out.condition.reason == "CrashLoopBackOff"


def test_bake_passes_and_promotes_the_candidate() -> None:
    baking = RolloutState(
        phase=RolloutPhase.BAKING,
        last_known_good_hash=GOOD,
        candidate_hash=BAD,
        bake_started_s=0.0,
        healthy_checks=3,
    )
    out, state = step(baking, BAD, QUIET, now_s=100.0)
    assert state.last_known_good_hash == BAD
    assert state.phase is RolloutPhase.IDLE
    assert decode_last_known_good({ANNOTATION_LAST_KNOWN_GOOD: out.annotation})[0] == BAD  # type: ignore[index]


def test_refused_template_seen_running_is_restored_again() -> None:
    rolled = RolloutState(
        phase=RolloutPhase.ROLLED_BACK, last_known_good_hash=GOOD, refused_hashes=(BAD,)
    )
    out, state = step(rolled, BAD)
    assert out.restore_template == template(GOOD, ["--good"])
    assert out.condition is not None and out.condition.reason == "SpecRefusedAfterRollback"
    assert state.phase is RolloutPhase.ROLLED_BACK


def test_spec_reverted_mid_bake_ends_the_bake() -> None:
    baking = RolloutState(
        phase=RolloutPhase.BAKING, last_known_good_hash=GOOD, candidate_hash=BAD, bake_started_s=0
    )
    _, state = step(baking, GOOD, HOT)
    assert state.phase is RolloutPhase.IDLE and state.candidate_hash is None


MEMO = RolloutMemo(True, frozenset({BAD}), (GOOD, template(GOOD, ["--good"])))


@pytest.mark.parametrize(
    ("memo", "rendered", "want_hash", "refused"),
    [
        (MEMO, BAD, GOOD, BAD),  # refused: the stored good template goes out instead
        (MEMO, "cccc", "cccc", None),  # a new change passes
        (RolloutMemo(False, frozenset({BAD}), MEMO.last_known_good), BAD, BAD, None),  # disabled
        (RolloutMemo(True, frozenset({BAD}), None), BAD, BAD, None),  # nothing to restore
        (None, BAD, BAD, None),
    ],
)
def test_guard_template(
    memo: RolloutMemo | None, rendered: str, want_hash: str, refused: str | None
) -> None:
    obj = deployment(rendered)
    before = copy.deepcopy(obj)
    guarded, seen = guard_template(obj, memo)
    assert template_hash(guarded) == want_hash
    assert seen == refused
    assert obj == before  # the caller's object is not mutated
    assert guarded["spec"]["replicas"] == 2


class RecordingKube:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.applied: list[dict[str, Any]] = []
        self.gets = 0

    async def apply(self, obj: dict[str, Any], *, field_manager: str = "kvscale") -> Any:
        self.applied.append(obj)
        return obj

    async def get(self, ref: Any, namespace: str | None, name: str) -> dict[str, Any]:
        self.gets += 1
        return self.body


async def test_the_guard_reads_the_status_once_then_uses_memory() -> None:
    body = {
        "metadata": {
            "annotations": {
                ANNOTATION_LAST_KNOWN_GOOD: encode_last_known_good(GOOD, template(GOOD, ["--g"]))
            }
        },
        "spec": {},
        "status": {"rollout": {"refusedHashes": [BAD]}},
    }
    inner = RecordingKube(body)
    guard = RolloutGuard(inner, RolloutMemory()).guard  # type: ignore[arg-type]
    guarded = [await guard(deployment(BAD)), await guard(deployment(BAD))]
    service = {"kind": "Service", "metadata": {"name": "chat"}}
    assert await guard(service) is service
    assert [template_hash(o) for o in guarded] == [GOOD, GOOD]
    assert inner.gets == 1
