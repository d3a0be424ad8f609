"""Table-driven single-tick tests of `kvscale.scaling.decide`.

Each case builds one observation and the remembered state, and checks the replica count, the
reason constant and whether the decision acts. Expected counts are worked out by hand in the
case comment from the documented rules, not read back from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from kvscale.scaling import (
    Mode,
    Observation,
    ReplicaCounts,
    ScalerState,
    ScalingConfig,
    Signals,
    decide,
    reasons,
)
from samples import signals as sig

NOW_S = 10_000.0
BASE = ScalingConfig(
    min_replicas=1,
    max_replicas=10,
    ttft_p95_target_s=1.0,
    itl_p95_target_s=0.05,
    max_queue_wait_s=2.0,
)


@dataclass(frozen=True)
class Case:
    name: str
    desired: int
    signals: Signals | None
    expect_replicas: int
    expect_reason: str
    expect_act: bool
    starting: int = 0
    state: ScalerState = field(default_factory=ScalerState)
    config: dict[str, object] = field(default_factory=dict)


CASES = [
    # --- KV demand term ---------------------------------------------------------------------
    Case("kv at target holds", 3, sig(3, kv_usage_frac=0.78), 3, reasons.WITHIN_TOLERANCE, False),
    Case(
        "kv just inside dead band holds",
        4,
        sig(4, kv_usage_frac=0.82),
        4,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    # 3 x 0.95 = 2.85 replicas of KV in use / 0.75 = 3.8 -> 4
    Case("kv high scales up", 3, sig(3, kv_usage_frac=0.95), 4, reasons.KV_DEMAND, True),
    # 4 x 1.0 / 0.75 = 5.33 -> 6, limited to 4 + 1 = 5
    Case(
        "kv saturated is step limited",
        4,
        sig(4, kv_usage_frac=1.0),
        5,
        reasons.STEP_LIMITED,
        True,
        config={"max_scale_up_step": 1},
    ),
    # 4 x 0.3 / 0.75 = 1.6 -> 2 (no history, no cooldown, step 4)
    Case(
        "kv low scales down",
        4,
        sig(4, kv_usage_frac=0.3),
        2,
        reasons.KV_DEMAND,
        True,
        config={"max_scale_down_step": 4},
    ),
    Case(
        "kv low scales down one step", 4, sig(4, kv_usage_frac=0.3), 3, reasons.STEP_LIMITED, True
    ),
    Case(
        "kv low held by down window",
        4,
        sig(4, kv_usage_frac=0.3),
        4,
        reasons.STABILISING,
        False,
        state=ScalerState(recommendations=((NOW_S - 100, 4),)),
    ),
    # the 4 recorded 400 s ago fell out of the 300 s window; the 3 at -100 s caps the step at 3
    Case(
        "kv low stabilised to window max",
        4,
        sig(4, kv_usage_frac=0.3),
        3,
        reasons.KV_DEMAND,
        True,
        state=ScalerState(recommendations=((NOW_S - 400, 4), (NOW_S - 100, 3))),
        config={"max_scale_down_step": 4},
    ),
    Case(
        "kv low within cooldown holds",
        4,
        sig(4, kv_usage_frac=0.3),
        4,
        reasons.COOLDOWN,
        False,
        state=ScalerState(last_scale_time_s=NOW_S - 30),
    ),
    Case(
        "lengthened cooldown holds",
        4,
        sig(4, kv_usage_frac=0.3),
        4,
        reasons.COOLDOWN,
        False,
        state=ScalerState(last_scale_time_s=NOW_S - 300, scale_down_cooldown_s=600.0),
    ),
    Case(
        "scale up ignores down window and cooldown",
        3,
        sig(3, kv_usage_frac=0.95),
        4,
        reasons.KV_DEMAND,
        True,
        state=ScalerState(recommendations=((NOW_S - 10, 3),), last_scale_time_s=NOW_S - 5),
    ),
    Case(
        "up window takes the min",
        3,
        sig(3, kv_usage_frac=1.0),
        3,
        reasons.STABILISING,
        False,
        state=ScalerState(recommendations=((NOW_S - 30, 3),)),
        config={"scale_up_stabilization_s": 60.0},
    ),
    # --- queue term -------------------------------------------------------------------------
    # prefill-heavy: KV 0.3 wants 2, but 12 waiting / 2 per replica = 6
    Case(
        "prefill queue at low kv scales up",
        3,
        sig(3, kv_usage_frac=0.3, num_requests_waiting=12),
        6,
        reasons.QUEUE,
        True,
    ),
    Case(
        "small queue is tolerated",
        3,
        sig(3, kv_usage_frac=0.75, num_requests_waiting=4),
        3,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    Case(
        "queue time over slo adds one",
        3,
        sig(3, kv_usage_frac=0.75, queue_time_p95_s=5.0),
        4,
        reasons.QUEUE,
        True,
    ),
    # --- allocation failures ----------------------------------------------------------------
    # KV 0.6 alone keeps 4 (4 x 0.6 / 0.75 = 3.2 -> 4); the preemption burst must add one
    Case(
        "preemption burst at moderate kv",
        4,
        sig(4, kv_usage_frac=0.6, preemptions_per_s=2.0),
        5,
        reasons.ALLOCATION_FAILURE,
        True,
    ),
    Case(
        "rejections at low kv",
        4,
        sig(4, kv_usage_frac=0.4, rejections_per_s=0.5),
        5,
        reasons.ALLOCATION_FAILURE,
        True,
    ),
    Case(
        "preemptions under threshold ignored",
        4,
        sig(4, kv_usage_frac=0.75, preemptions_per_s=0.05),
        4,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    # --- SLO term ---------------------------------------------------------------------------
    Case(
        "ttft over target adds one",
        2,
        sig(2, kv_usage_frac=0.75, ttft_p95_s=1.6),
        3,
        reasons.SLO_BREACH,
        True,
    ),
    Case(
        "itl over target adds one",
        2,
        sig(2, kv_usage_frac=0.5, itl_p95_s=0.09),
        3,
        reasons.SLO_BREACH,
        True,
    ),
    # ADR 0015: the SLO's 5-minute window remembers a burst; only a current breach counts
    Case(
        "a breach the last minute no longer shows adds nothing",
        2,
        sig(2, kv_usage_frac=0.75, ttft_p95_s=1.6, ttft_p95_recent_s=0.8),
        2,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    Case(
        "a burst of the last minute the window absorbs adds nothing",
        2,
        sig(2, kv_usage_frac=0.75, ttft_p95_s=0.9, ttft_p95_recent_s=1.6),
        2,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    Case(
        "no first token in the last minute: no latency counts",
        2,
        sig(2, kv_usage_frac=0.75, ttft_p95_s=1.6, itl_p95_s=0.09, ttft_p95_recent_s=None),
        2,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    Case(
        "ttft inside tolerance ignored",
        2,
        sig(2, kv_usage_frac=0.75, ttft_p95_s=1.05),
        2,
        reasons.WITHIN_TOLERANCE,
        False,
    ),
    # --- missing / NaN / partial data -------------------------------------------------------
    Case("read failed holds", 4, None, 4, reasons.METRICS_MISSING_HOLD, False),
    Case(
        "third failed read applies fallback",
        4,
        None,
        6,
        reasons.FALLBACK,
        True,
        state=ScalerState(failed_reads=2),
        config={"fallback_replicas": 6},
    ),
    Case(
        "fallback never scales down",
        5,
        None,
        5,
        reasons.FALLBACK,
        False,
        state=ScalerState(failed_reads=4),
        config={"fallback_replicas": 2},
    ),
    Case(
        "no fallback declared keeps holding",
        5,
        None,
        5,
        reasons.METRICS_MISSING_HOLD,
        False,
        state=ScalerState(failed_reads=9),
    ),
    Case("no pod reporting is a failed read", 4, sig(4, 0), 4, reasons.METRICS_MISSING_HOLD, False),
    # kv NaN arrives as None: the queue is known (0) but nothing may scale down
    Case(
        "kv unknown never scales down",
        4,
        sig(4, num_requests_waiting=0.0),
        4,
        reasons.METRICS_PARTIAL_HOLD,
        False,
        config={"max_scale_down_step": 4},
    ),
    # 1 of 4 reports 0.2: down with 3 missing pods counted busy -> 0.2/0.75 + 3 = 3.27 -> 4 = hold
    Case(
        "partial coverage low kv holds",
        4,
        sig(4, 1, kv_usage_frac=0.2),
        4,
        reasons.METRICS_PARTIAL_HOLD,
        False,
    ),
    # 2 of 4 report 1.0: up with missing idle -> 2/0.75 = 2.67 -> 3 <= 4: direction reversed, hold
    Case(
        "partial coverage high kv holds",
        4,
        sig(4, 2, kv_usage_frac=1.0),
        4,
        reasons.METRICS_PARTIAL_HOLD,
        False,
    ),
    # 3 of 4 report 1.0 at target 0.5: 3/0.5 = 6 > 4 even with the missing pod idle -> up
    Case(
        "partial coverage can still scale up",
        4,
        sig(4, 3, kv_usage_frac=1.0),
        6,
        reasons.KV_DEMAND,
        True,
        config={"target_kv_utilization_frac": 0.5},
    ),
    # 2 of 5 report (40% < 50%): the KV term says 2 (missing busy: 0.2*2/0.75+3 = 3.5 -> 4 < 5)
    Case(
        "coverage below min fraction blocks scale-down",
        5,
        sig(5, 2, kv_usage_frac=0.2),
        5,
        reasons.METRICS_PARTIAL_HOLD,
        False,
    ),
    # --- cold start -------------------------------------------------------------------------
    Case(
        "starting replicas absorb preemption pressure",
        4,
        sig(2, kv_usage_frac=0.9, preemptions_per_s=3.0),
        4,
        reasons.COLD_START_HOLD,
        False,
        starting=2,
        state=ScalerState(starting_since_s=NOW_S - 60),
    ),
    Case(
        "warm-up expired pressure adds again",
        4,
        sig(2, kv_usage_frac=0.9, preemptions_per_s=3.0),
        5,
        reasons.ALLOCATION_FAILURE,
        True,
        starting=2,
        state=ScalerState(starting_since_s=NOW_S - 400),
    ),
    Case(
        "no scale-down while starting",
        4,
        sig(3, kv_usage_frac=0.2),
        4,
        reasons.COLD_START_HOLD,
        False,
        starting=1,
    ),
    # 2 ready at 1.0 with target 0.5 need 4; desired 3 (incl. 1 starting) is not enough
    Case(
        "demand beyond incoming capacity scales up",
        3,
        sig(2, kv_usage_frac=1.0),
        4,
        reasons.KV_DEMAND,
        True,
        starting=1,
        config={"target_kv_utilization_frac": 0.5},
    ),
    # 2 of 4 replicas run and report 0.9: 1.8 / 0.75 = 2.4 -> 3 < 4, yet usage is over target;
    # the direction reverses only because 2 replicas are not serving: hold, never shrink
    Case(
        "hot pods, replicas not serving, hold",
        4,
        sig(2, kv_usage_frac=0.9),
        4,
        reasons.COLD_START_HOLD,
        False,
    ),
    Case("nothing running yet holds", 2, sig(0, 0), 2, reasons.COLD_START_HOLD, False, starting=2),
    # one Ready replica at low usage rounds up to itself: that is demand, not a cold start
    Case(
        "floor of one replica is kv demand",
        1,
        sig(1, kv_usage_frac=0.1),
        1,
        reasons.KV_DEMAND,
        False,
    ),
    # --- clamps and modes -------------------------------------------------------------------
    Case("zero replicas raised to min", 0, sig(0, 0), 1, reasons.CLAMPED_MIN, True),
    # 9 x 1.0 / 0.75 = 12, step 4 -> 13, max 10
    Case("capped at max", 9, sig(9, kv_usage_frac=1.0), 10, reasons.CLAMPED_MAX, True),
    Case(
        "recommend mode does not act",
        3,
        sig(3, kv_usage_frac=0.95),
        4,
        reasons.RECOMMEND_ONLY,
        False,
        config={"mode": Mode.RECOMMEND},
    ),
    # --- undoing a regressed scale-down -----------------------------------------------------
    Case(
        "breach after scale-down restores at once",
        4,
        sig(4, kv_usage_frac=0.7, preemptions_per_s=1.0),
        6,
        reasons.SCALE_DOWN_REVERTED,
        True,
        state=ScalerState(
            last_scale_down_time_s=NOW_S - 60,
            last_scale_time_s=NOW_S - 60,
            replicas_before_scale_down=6,
        ),
    ),
    Case(
        "breach after the guard window only adds one",
        4,
        sig(4, kv_usage_frac=0.7, preemptions_per_s=1.0),
        5,
        reasons.ALLOCATION_FAILURE,
        True,
        state=ScalerState(
            last_scale_down_time_s=NOW_S - 900,
            last_scale_time_s=NOW_S - 900,
            replicas_before_scale_down=6,
        ),
    ),
    Case(
        "healthy after scale-down is not undone",
        4,
        sig(4, kv_usage_frac=0.75),
        4,
        reasons.WITHIN_TOLERANCE,
        False,
        state=ScalerState(last_scale_down_time_s=NOW_S - 60, replicas_before_scale_down=6),
    ),
    # --- latency headroom: no scale-in while TTFT p95 > 0.5 x its 1.0 s target ----------------
    # KV alone says 4 x 0.3 / 0.75 = 1.6 -> 2, but TTFT p95 0.6 s is 60 % of the target
    Case(
        "ttft near its target holds a scale-down",
        4,
        sig(4, kv_usage_frac=0.3, ttft_p95_s=0.6),
        4,
        reasons.LATENCY_HEADROOM_HOLD,
        False,
        config={"max_scale_down_step": 4},
    ),
    # the guard reads the last minute: a quiet minute lets it through although the SLO's
    # longer window still remembers the burst, and a busy one holds although it does not
    Case(
        "a quiet last minute lets the scale-down through",
        4,
        sig(4, kv_usage_frac=0.3, ttft_p95_s=0.6, ttft_p95_recent_s=0.3),
        2,
        reasons.KV_DEMAND,
        True,
        config={"max_scale_down_step": 4},
    ),
    Case(
        "a busy last minute holds the scale-down",
        4,
        sig(4, kv_usage_frac=0.3, ttft_p95_s=0.3, ttft_p95_recent_s=0.6),
        4,
        reasons.LATENCY_HEADROOM_HOLD,
        False,
        config={"max_scale_down_step": 4},
    ),
    # the same load at TTFT p95 0.4 s (40 %): the scale-down goes through
    Case(
        "ttft with headroom lets the scale-down through",
        4,
        sig(4, kv_usage_frac=0.3, ttft_p95_s=0.4),
        2,
        reasons.KV_DEMAND,
        True,
        config={"max_scale_down_step": 4},
    ),
    # the fraction is the spec's: at 0.75 the 0.6 s read no longer holds
    Case(
        "ttft headroom follows the configured fraction",
        4,
        sig(4, kv_usage_frac=0.3, ttft_p95_s=0.6),
        2,
        reasons.KV_DEMAND,
        True,
        config={"max_scale_down_step": 4, "scale_down_max_ttft_frac": 0.75},
    ),
    # never holds a scale-up: TTFT 0.6 s and KV 4 x 0.95 / 0.75 = 5.07 -> 6
    Case(
        "ttft headroom never holds a scale-up",
        4,
        sig(4, kv_usage_frac=0.95, ttft_p95_s=0.6),
        6,
        reasons.KV_DEMAND,
        True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_decide_single_tick(case: Case) -> None:
    config = replace(BASE, **case.config)  # type: ignore[arg-type]
    ready = case.desired - case.starting
    observation = Observation(ReplicaCounts(case.desired, ready, case.starting), case.signals)
    decision, _ = decide(config, case.state, observation, NOW_S)
    assert (decision.replicas, decision.reason, decision.act) == (
        case.expect_replicas,
        case.expect_reason,
        case.expect_act,
    ), decision.message


def test_a_latency_hold_lasts_the_whole_scale_down_window() -> None:
    # The hold is recorded as that tick's recommendation (4): 100 s later, with TTFT back at
    # 20 % of its target and KV asking for 2, the 300 s window still holds 4; 301 s after the
    # hold it has left the window and the scale-down goes through.
    config = replace(BASE, max_scale_down_step=4, scale_down_stabilization_s=300.0)
    counts = ReplicaCounts(4, 4, 0)
    near = Observation(counts, sig(4, kv_usage_frac=0.3, ttft_p95_s=0.6))
    calm = Observation(counts, sig(4, kv_usage_frac=0.3, ttft_p95_s=0.2))
    held, state = decide(config, ScalerState(), near, NOW_S)
    assert (held.replicas, held.reason) == (4, reasons.LATENCY_HEADROOM_HOLD)
    later, state = decide(config, state, calm, NOW_S + 100)
    assert (later.replicas, later.reason, later.act) == (4, reasons.STABILISING, False)
    after, _ = decide(config, state, calm, NOW_S + 301)
    assert (after.replicas, after.act) == (2, True)


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_message_carries_demand_in_tokens() -> None:
    # 3 pods at full usage of 3800 blocks x 16 tokens = 60,800 each: 182,400 in use -> 4 at 0.75
    signals = sig(3, kv_usage_frac=1.0, num_gpu_blocks=3800, block_size_tokens=16)
    config = replace(BASE, max_scale_up_step=4)
    decision, _ = decide(config, ScalerState(), Observation(ReplicaCounts(3, 3, 0), signals), NOW_S)
    assert decision.message == "KV demand 182k tokens over 3 replica(s) of 61k at target 0.75 → 4"


def test_failed_read_counts_and_good_read_resets() -> None:
    counts = ReplicaCounts(3, 3, 0)
    _, state = decide(BASE, ScalerState(failed_reads=1), Observation(counts, None), NOW_S)
    assert state.failed_reads == 2
    good = Observation(counts, sig(3, kv_usage_frac=0.75))
    _, state = decide(BASE, state, good, NOW_S + 15)
    assert state.failed_reads == 0


def test_undo_doubles_cooldown_up_to_ceiling() -> None:
    config = replace(BASE, scale_down_cooldown_s=60.0, max_scale_down_cooldown_s=200.0)
    observation = Observation(ReplicaCounts(4, 4, 0), sig(4, kv_usage_frac=0.7, itl_p95_s=0.2))
    state = ScalerState(last_scale_down_time_s=NOW_S - 30, replicas_before_scale_down=5)
    _, after_first = decide(config, state, observation, NOW_S)
    assert after_first.scale_down_cooldown_s == 120.0
    state = replace(state, scale_down_cooldown_s=120.0)
    _, after_second = decide(config, state, observation, NOW_S)
    assert after_second.scale_down_cooldown_s == 200.0


def test_acting_records_scale_times_and_recommend_mode_does_not() -> None:
    observation = Observation(ReplicaCounts(4, 4, 0), sig(4, kv_usage_frac=0.3))
    _, state = decide(BASE, ScalerState(), observation, NOW_S)
    assert (state.last_scale_time_s, state.last_scale_down_time_s) == (NOW_S, NOW_S)
    assert state.replicas_before_scale_down == 4
    recommend = replace(BASE, mode=Mode.RECOMMEND)
    _, state = decide(recommend, ScalerState(), observation, NOW_S)
    assert state.last_scale_time_s is None


def test_history_stays_bounded() -> None:
    config = replace(BASE, scale_down_stabilization_s=1e9)
    state = ScalerState()
    observation = Observation(ReplicaCounts(3, 3, 0), sig(3, kv_usage_frac=0.75))
    for tick in range(400):
        _, state = decide(config, state, observation, NOW_S + tick)
    assert 0 < len(state.recommendations) <= 256


def test_trace_lists_every_term_in_declared_order() -> None:
    observation = Observation(ReplicaCounts(3, 3, 0), sig(3, kv_usage_frac=0.95))
    decision, _ = decide(BASE, ScalerState(), observation, NOW_S)
    names = [step.step for step in decision.steps]
    assert names[:7] == [
        "kv_demand",
        "prefill_demand",
        "forecast",
        "queue",
        "allocation_failure",
        "slo",
        "combine",
    ]
