"""Condition transitions: lastTransitionTime, observedGeneration and the Ready summary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kvscale.controller import conditions as c
from kvscale.controller.conditions import ConditionUpdate

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)


def planned(status: c.Status, reason: str = "PlanComputed", message: str = "") -> ConditionUpdate:
    return ConditionUpdate(c.PLANNED, status, reason, message)


@pytest.mark.parametrize(
    ("first", "second", "moves"),
    [
        (planned("True"), planned("True", message="new numbers"), False),
        (planned("True"), planned("False", "InvalidSpec"), True),
        (planned("False", "InvalidSpec", "a"), planned("False", "InvalidSpec", "b"), False),
        (planned("Unknown", "Pending"), planned("True"), True),
    ],
)
def test_transition_time_moves_only_when_status_flips(
    first: ConditionUpdate, second: ConditionUpdate, moves: bool
) -> None:
    before = c.apply_updates([], [first], now=T0, generation=1)
    after = c.apply_updates(before, [second], now=T1, generation=2)
    cond = c.find_condition(after, c.PLANNED)
    assert cond is not None
    assert cond.last_transition_time == (T1 if moves else T0)
    assert cond.observed_generation == 2
    assert (cond.reason, cond.message) == (second.reason, second.message)


def test_other_conditions_are_kept_untouched() -> None:
    start = c.apply_updates(
        [],
        [ConditionUpdate(c.CAPACITY_SUFFICIENT, "True", "KvCacheFits", "fits")],
        now=T0,
        generation=1,
    )
    after = c.apply_updates(start, [planned("False", "InvalidSpec", "bad")], now=T1, generation=2)
    capacity = c.find_condition(after, c.CAPACITY_SUFFICIENT)
    assert capacity is not None
    assert (capacity.status, capacity.last_transition_time, capacity.observed_generation) == (
        "True",
        T0,
        1,
    )


ALL_TRUE = [
    ConditionUpdate(c.PLANNED, "True", "PlanComputed"),
    ConditionUpdate(c.CAPACITY_SUFFICIENT, "True", "KvCacheFits"),
    ConditionUpdate(c.WORKLOAD_READY, "True", "ReplicasAvailable"),
]


@pytest.mark.parametrize(
    ("updates", "status", "reason"),
    [
        (ALL_TRUE, "True", "AllConditionsTrue"),
        (ALL_TRUE[:2], "Unknown", "Pending"),
        ([*ALL_TRUE, planned("False", "InvalidSpec", "spec.x: bad")], "False", "InvalidSpec"),
        (
            [*ALL_TRUE, ConditionUpdate(c.WORKLOAD_READY, "False", "RollingOut", "1/2")],
            "False",
            "RollingOut",
        ),
        (
            [*ALL_TRUE, ConditionUpdate(c.CAPACITY_SUFFICIENT, "Unknown", "Pending")],
            "Unknown",
            "Pending",
        ),
    ],
)
def test_ready_summarises_the_components(
    updates: list[ConditionUpdate], status: str, reason: str
) -> None:
    result = c.apply_updates([], updates, now=T0, generation=3)
    ready = c.find_condition(result, c.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == (status, reason)


def test_ready_message_names_the_failing_condition() -> None:
    updates = [*ALL_TRUE, planned("False", "InvalidSpec", "spec.maxContextLength: too long")]
    ready = c.find_condition(c.apply_updates([], updates, now=T0, generation=1), c.READY)
    assert ready is not None
    assert ready.message == "Planned: spec.maxContextLength: too long"


def test_round_trip_through_the_wire_form() -> None:
    result = c.apply_updates([], ALL_TRUE, now=T0, generation=4)
    wire = c.dump_conditions(result)
    assert wire[0]["lastTransitionTime"] == "2026-01-01T10:00:00Z"
    assert wire[0]["observedGeneration"] == 4
    assert c.parse_conditions(wire) == result


@pytest.mark.parametrize("raw", [None, "garbage", [{"type": "Ready"}], [42]])
def test_malformed_stored_conditions_start_afresh(raw: object) -> None:
    assert c.parse_conditions(raw) == []
