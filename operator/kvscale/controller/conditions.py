"""Status conditions: which observation sets which condition, and the `Ready` summary.

The condition shape and the "lastTransitionTime moves only when status flips" rule live in
`kvscale.api.status` (`Condition`, `set_condition`); this module adds the operator's side:
reason constants, the component condition types, and `Ready` as a pure function of the others.
The clock is an argument, so every transition is testable without waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kvscale.api.status import Condition, set_condition
from kvscale.api.vocabulary import ConditionType, Reason

Status = Literal["True", "False", "Unknown"]
TRUE: Status = "True"
FALSE: Status = "False"
UNKNOWN: Status = "Unknown"

PLANNED = ConditionType.PLANNED
CAPACITY_SUFFICIENT = ConditionType.CAPACITY_SUFFICIENT
WORKLOAD_READY = ConditionType.WORKLOAD_READY
PLAN_WARNINGS = ConditionType.PLAN_WARNINGS
ADOPTED = ConditionType.ADOPTED
READY = ConditionType.READY  # summary: every component condition is True

COMPONENT_TYPES: tuple[str, ...] = (PLANNED, CAPACITY_SUFFICIENT, WORKLOAD_READY)
__all__ = ["Reason"]  # re-exported: declared in kvscale.api.vocabulary


@dataclass(frozen=True)
class ConditionUpdate:
    """What one reconcile observed for one condition type."""

    type: str
    status: Status
    reason: str
    message: str = ""


def summarize_ready(conditions: Iterable[Condition]) -> ConditionUpdate:
    """`Ready` is True only when every component is True; otherwise it names the first that isn't.

    A component that is False makes Ready False; one not yet evaluated (or Unknown) makes it
    Unknown, so "still starting" is not reported as "broken".
    """
    by_type = {c.type: c for c in conditions}
    for kind in COMPONENT_TYPES:
        condition = by_type.get(kind)
        if condition is None:
            return ConditionUpdate(READY, UNKNOWN, Reason.PENDING, f"{kind} not yet evaluated")
        if condition.status != TRUE:
            message = f"{kind}: {condition.message or condition.reason}"
            status: Status = FALSE if condition.status == FALSE else UNKNOWN
            return ConditionUpdate(READY, status, condition.reason, message)
    return ConditionUpdate(READY, TRUE, Reason.ALL_READY, "planned, fits and replicas available")


def _to_condition(update: ConditionUpdate, now: datetime, generation: int | None) -> Condition:
    return Condition(
        type=update.type,
        status=update.status,
        reason=update.reason,
        message=update.message,
        last_transition_time=now,
        observed_generation=generation,
    )


def apply_updates(
    conditions: Sequence[Condition],
    updates: Iterable[ConditionUpdate],
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Apply `updates` in order, then recompute `Ready` from the result."""
    result = list(conditions)
    for update in updates:
        result = set_condition(result, _to_condition(update, now, generation))
    summary = summarize_ready(result)
    return set_condition(result, _to_condition(summary, now, generation))


def parse_conditions(raw: Any) -> list[Condition]:
    """Conditions as stored in status (tolerates a missing or malformed list: starts afresh)."""
    result: list[Condition] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            result.append(Condition.model_validate(item))
        except ValueError:
            continue
    return result


def find_condition(conditions: Iterable[Condition], kind: str) -> Condition | None:
    """The condition of one type, or None."""
    return next((c for c in conditions if c.type == kind), None)


def dump_conditions(conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """The wire form (camelCase, RFC 3339 times) for a status patch."""
    return [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in conditions]
