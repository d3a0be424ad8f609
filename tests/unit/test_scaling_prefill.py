"""The prefill-demand term, the latency-gated queue term and the learned prefill target.

Expected counts are worked out by hand in each case comment from the documented rules
(docs/autoscaling.md, ADR 0006), not read back from the code. Capacity 10,000 prompt tokens/s
per replica and a configured target of 0.5 keep the arithmetic round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from kvscale.capacity.roofline import prefill_capacity_tokens_per_s
from kvscale.scaling import (
    Observation,
    ReplicaCounts,
    ScalerState,
    ScalingConfig,
    Signals,
    decide,
    reasons,
)
from samples import signals as sig

NOW_S = 50_000.0
CONFIG = ScalingConfig(
    min_replicas=1,
    max_replicas=20,
    ttft_p95_target_s=2.0,
    itl_p95_target_s=0.1,
    target_waiting_per_replica=4.0,
    prefill_tokens_per_s_per_replica=10_000.0,
    target_prefill_utilization_frac=0.5,
    scale_down_stabilization_s=0.0,
    max_scale_down_step=10,
)
NO_PREFILL = replace(CONFIG, prefill_tokens_per_s_per_replica=None)


@dataclass(frozen=True)
class Case:
    name: str
    desired: int
    signals: Signals
    expect_replicas: int
    expect_reason: str
    starting: int = 0
    config: ScalingConfig = CONFIG
    state: ScalerState = field(default_factory=ScalerState)


CASES = [
    # --- prefill demand ---------------------------------------------------------------------
    # 30k tokens/s / (10k x 0.5) = 6 replicas; KV quiet at 0.75 target would hold 4
    Case("prompt load above target scales up", 4,
         sig(4, kv_usage_frac=0.7, prompt_tokens_per_s=3e4), 6, reasons.PREFILL_DEMAND),
    # 21k / 5k = 4.2 replicas over 4: ratio 1.05 inside the 0.1 dead band
    Case("prompt load inside dead band holds", 4,
         sig(4, kv_usage_frac=0.75, prompt_tokens_per_s=2.1e4), 4, reasons.WITHIN_TOLERANCE),
    # 12k / 5k = 2.4 -> 3; KV 0.1 x 4 / 0.75 = 0.53 -> 1; the larger (3) wins
    Case("prompt load keeps kv from scaling down too far", 4,
         sig(4, kv_usage_frac=0.1, prompt_tokens_per_s=1.2e4), 3, reasons.PREFILL_DEMAND),
    # the same load without a capacity: only KV speaks -> 1
    Case("no capacity in the config: term abstains", 4,
         sig(4, kv_usage_frac=0.1, prompt_tokens_per_s=1.2e4), 1, reasons.KV_DEMAND,
         config=NO_PREFILL),
    Case("no prompt rate: term abstains", 4, sig(4, kv_usage_frac=0.1), 1, reasons.KV_DEMAND),
    # 3 of 4 pods report 12k -> 3, but the missing pod's load is unknown: hold
    Case("missing pod reverses a prefill scale-down", 4,
         sig(4, 3, prompt_tokens_per_s=1.2e4), 4,
         reasons.METRICS_PARTIAL_HOLD),
    # --- queue term, gated by latency -----------------------------------------------------------
    # 40 waiting = 10/replica > 4, but TTFT 1.0 s and no queue SLO: batching, not a backlog
    Case("queue with healthy TTFT is batching", 4,
         sig(4, kv_usage_frac=0.75, num_requests_waiting=40, ttft_p95_s=1.0), 4,
         reasons.WITHIN_TOLERANCE, config=NO_PREFILL),
    # TTFT 3.0 > 2.2: ceil(40 / 4) = 10, step limit 4 -> 8
    Case("queue with TTFT breach sizes by waiting count", 4,
         sig(4, kv_usage_frac=0.75, num_requests_waiting=40, ttft_p95_s=3.0), 8,
         reasons.STEP_LIMITED, config=NO_PREFILL),
    # prefill rate known (20k / 5k = 4, holds): the queue is a residual -> +1
    Case("queue with prefill term known adds one", 4,
         sig(4, kv_usage_frac=0.75, num_requests_waiting=40, ttft_p95_s=3.0,
             prompt_tokens_per_s=2e4), 5, reasons.QUEUE),
    # no latency signal at all: the waiting count alone decides (original behaviour)
    Case("queue without latency signals counts alone", 4,
         sig(4, kv_usage_frac=0.75, num_requests_waiting=24), 6, reasons.QUEUE,
         config=NO_PREFILL),
    # replicas starting (warm-up clock started now): the backlog is theirs to drain
    Case("queue while replicas start holds", 6,
         sig(4, num_requests_waiting=40), 6, reasons.COLD_START_HOLD,
         starting=2, config=NO_PREFILL),
    # --- undo uses the SLO term's tolerance -----------------------------------------------------
    # TTFT 2.1 s <= 2.0 x 1.1 a minute after 5 -> 4: interpolation noise, not a regression
    Case("ttft inside tolerance does not undo", 4,
         sig(4, kv_usage_frac=0.75, ttft_p95_s=2.1), 4, reasons.WITHIN_TOLERANCE,
         state=ScalerState(last_scale_down_time_s=NOW_S - 60, replicas_before_scale_down=5)),
    Case("ttft beyond tolerance undoes", 4,
         sig(4, kv_usage_frac=0.75, ttft_p95_s=2.3), 5, reasons.SCALE_DOWN_REVERTED,
         state=ScalerState(last_scale_down_time_s=NOW_S - 60, replicas_before_scale_down=5)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_single_tick(case: Case) -> None:
    counts = ReplicaCounts(case.desired, case.desired - case.starting, case.starting)
    decision, _ = decide(case.config, case.state, Observation(counts, case.signals), NOW_S)
    assert (decision.replicas, decision.reason) == (case.expect_replicas, case.expect_reason), (
        decision.message
    )


def run(
    config: ScalingConfig, state: ScalerState, ticks: list[tuple[float, int, int, Signals]]
) -> ScalerState:
    """Feed (time offset, desired, starting, signals) ticks; return the final state."""
    for offset_s, desired, starting, signals in ticks:
        counts = ReplicaCounts(desired, desired - starting, starting)
        _, state = decide(config, state, Observation(counts, signals), NOW_S + offset_s)
    return state


BREACH = sig(4, kv_usage_frac=0.75, ttft_p95_s=3.0, prompt_tokens_per_s=8e3)
HEALTHY = sig(4, kv_usage_frac=0.75, ttft_p95_s=1.0, prompt_tokens_per_s=8e3)
KV_FULL = replace(BREACH, kv_usage_frac=0.95)
PREEMPTING = replace(BREACH, preemptions_per_s=1.0)
AT_MAX = replace(BREACH, pods_expected=20, pods_reporting=20)


@pytest.mark.parametrize(
    ("name", "ticks", "expect_learned"),
    [
        # 8k / (10k x 4) = 0.2 utilisation at the breach; less the 0.1 dead band -> 0.18
        ("sustained breach on a settled fleet", [(0, 4, 0, BREACH), (15, 4, 0, BREACH)], 0.18),
        ("one breached read is not learned", [(0, 4, 0, BREACH), (15, 4, 0, HEALTHY)], None),
        ("breach while replicas start", [(0, 4, 1, BREACH), (15, 4, 1, BREACH)], None),
        # something else explains the breach: no prefill lesson
        ("KV over its target", [(0, 4, 0, KV_FULL), (15, 4, 0, KV_FULL)], None),
        ("preempting", [(0, 4, 0, PREEMPTING), (15, 4, 0, PREEMPTING)], None),
        ("held at max_replicas", [(0, 20, 0, AT_MAX), (15, 20, 0, AT_MAX)], None),
        # a breach at a lower load later lowers it further: 4k / 40k = 0.1 -> 0.09
        (
            "a lower breach lowers the target",
            [
                (0, 4, 0, BREACH),
                (15, 4, 0, BREACH),
                (30, 4, 0, replace(BREACH, prompt_tokens_per_s=4e3)),
            ],
            0.09,
        ),
        # 1 token/s -> 0.0000225: the floor is 10 % of the configured 0.5
        (
            "the learned target has a floor",
            [
                (0, 4, 0, replace(BREACH, prompt_tokens_per_s=1.0)),
                (15, 4, 0, replace(BREACH, prompt_tokens_per_s=1.0)),
            ],
            0.05,
        ),
    ],
)
def test_learning_from_breaches(
    name: str, ticks: list[tuple[float, int, int, Signals]], expect_learned: float | None
) -> None:
    # no scale change has happened: the fleet is settled
    state = run(replace(CONFIG, max_scale_up_step=0), ScalerState(), ticks)
    if expect_learned is None:
        assert state.learned_prefill_utilization_frac is None
    else:
        assert state.learned_prefill_utilization_frac == pytest.approx(expect_learned)


def test_no_learning_right_after_a_scale_change() -> None:
    state = ScalerState(last_scale_time_s=NOW_S - 30)
    config = replace(CONFIG, max_scale_up_step=0)
    state = run(config, state, [(0, 4, 0, BREACH), (15, 4, 0, BREACH)])
    assert state.learned_prefill_utilization_frac is None


def test_learned_target_sizes_the_prefill_term_until_it_expires() -> None:
    learned = ScalerState(learned_prefill_utilization_frac=0.2, learned_prefill_at_s=NOW_S)
    signals = sig(4, kv_usage_frac=0.1, prompt_tokens_per_s=1e4)  # KV alone would say 1
    counts = ReplicaCounts(4, 4, 0)
    # 10k / (10k x 0.2) = 5 replicas while the lesson lasts
    decision, _ = decide(CONFIG, learned, Observation(counts, signals), NOW_S + 60)
    assert (decision.replicas, decision.reason) == (5, reasons.PREFILL_DEMAND)
    assert "learned" in decision.message
    # an hour later: 10k / 5k = 2 replicas, back to the configured target
    later = NOW_S + CONFIG.prefill_headroom_memory_s + 1
    decision, _ = decide(CONFIG, learned, Observation(counts, signals), later)
    assert (decision.replicas, decision.reason) == (2, reasons.PREFILL_DEMAND)


@pytest.mark.parametrize(
    ("config", "expect_learned", "expect_cooldown_s"),
    [
        # rate and capacity known: 8k / 40k = 0.2 -> 0.18 remembered, cooldown unchanged
        (CONFIG, 0.18, None),
        # without a capacity only time can remember: the cooldown doubles (60 -> 120 s)
        (NO_PREFILL, None, 120.0),
    ],
    ids=["prefill known: learn the load", "prefill unknown: double the cooldown"],
)
def test_undo_remembers_the_load_or_the_time(
    config: ScalingConfig, expect_learned: float | None, expect_cooldown_s: float | None
) -> None:
    state = ScalerState(
        last_scale_time_s=NOW_S - 30,
        last_scale_down_time_s=NOW_S - 30,
        replicas_before_scale_down=5,
    )
    decision, after = decide(config, state, Observation(ReplicaCounts(4, 4, 0), BREACH), NOW_S)
    assert decision.reason == reasons.SCALE_DOWN_REVERTED
    assert after.learned_prefill_utilization_frac == (
        None if expect_learned is None else pytest.approx(expect_learned)
    )
    assert after.scale_down_cooldown_s == expect_cooldown_s


def test_prefill_capacity_follows_the_roofline() -> None:
    """A compute-bound chunk: ~2 x 8e9 FLOPs per token at half of the H100's ~990 dense
    TFLOPs is ~31k tokens/s before the per-step overhead; a chunk twice as large amortises
    that overhead over more tokens (a little faster), but cannot double the rate."""
    from kvscale.cli.simulate_cmd import default_deployment_path, load_deployment

    plan = load_deployment(default_deployment_path()).setup.plan
    base = prefill_capacity_tokens_per_s(plan)
    doubled = replace(plan, max_num_batched_tokens=2 * plan.max_num_batched_tokens)
    bigger = prefill_capacity_tokens_per_s(doubled)
    assert 20_000 < base < 35_000
    assert base * 1.01 < bigger < base * 1.2
