"""Status conditions follow the API convention; status round-trips through its wire shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kvscale.api.status import Condition, LLMDeploymentStatus, set_condition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def cond(type_: str, status: str, when: datetime, reason: str = "Because") -> Condition:
    return Condition.model_validate(
        {"type": type_, "status": status, "reason": reason, "lastTransitionTime": when}
    )


@pytest.mark.parametrize(
    ("old_status", "new_status", "expected_time"),
    [("True", "True", T0), ("True", "False", T1), ("Unknown", "True", T1)],
)
def test_transition_time_moves_only_when_status_changes(old_status, new_status, expected_time):
    conditions = [cond("Ready", old_status, T0), cond("Planned", "True", T0)]
    updated = set_condition(conditions, cond("Ready", new_status, T1, reason="Changed"))
    ready = next(c for c in updated if c.type == "Ready")
    assert (ready.status, ready.reason, ready.last_transition_time) == (
        new_status,
        "Changed",
        expected_time,
    )
    assert [c.type for c in updated] == ["Ready", "Planned"]


def test_new_condition_type_is_appended():
    updated = set_condition([cond("Ready", "True", T0)], cond("CapacitySufficient", "True", T1))
    assert [c.type for c in updated] == ["Ready", "CapacitySufficient"]


@pytest.mark.parametrize("reason", ["has space", "1Leading", ""])
def test_condition_reason_must_be_camel_case(reason: str):
    with pytest.raises(ValueError):
        cond("Ready", "True", T0, reason=reason)


def test_status_round_trips_through_its_wire_shape():
    status = LLMDeploymentStatus.model_validate(
        {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllConditionsTrue",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "selectedGpuType": "l40s",
            "replicas": 2,
            "selector": "app=x",
            "kopf": {"progress": {}},
            "someFieldFromAnOlderOperator": 1,
        }
    )
    wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert "someFieldFromAnOlderOperator" not in wire
    assert LLMDeploymentStatus.model_validate(wire) == status
