"""The base every API model derives from, and cross-field rules declared once for two checkers.

A cross-field rule (min ≤ max, exactly one model source, …) is written once as a `CelRule`:
its CEL expression goes into the CRD (`x-kubernetes-validations`, evaluated by the API server)
and its Python predicate runs in the model validator (evaluated by `kvscale validate` offline
and by the operator). Both report the same message and fix, so a user sees one wording
whether `kubectl apply` or `kvscale validate` rejects the object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel, to_snake
from pydantic_core import PydanticCustomError

#: The pydantic error type raised when a `CelRule` is violated.
CROSS_FIELD_ERROR = "cross_field"

#: Key under which a model's rules travel in its JSON schema until the CRD generator renames it.
RULES_SCHEMA_KEY = "x-kubernetes-validations"


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule of an object, in CEL (for the API server) and in Python.

    `field` is the camelCase path of the offending field relative to the object that declares
    the rule (it becomes the CRD's `fieldPath` and the error location); empty for a rule
    about the object as a whole. `violation` returns
    None when the object satisfies the rule, else a short detail with the values involved.
    """

    rule: str
    message: str
    fix: str
    field: str
    violation: Callable[[Any], str | None]

    def to_schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry; the message carries the fix too."""
        entry = {"rule": self.rule, "message": f"{self.message}; fix: {self.fix}"}
        if self.field:
            entry["fieldPath"] = "." + self.field
        entry["reason"] = "FieldValueInvalid"
        return entry


def ordered_rule(low: str, high: str, message: str, fix: str) -> CelRule:
    """The rule `low ≤ high` between two fields (camelCase names); blames `high`."""
    low_attr, high_attr = to_snake(low), to_snake(high)

    def violation(obj: Any) -> str | None:
        low_value, high_value = getattr(obj, low_attr), getattr(obj, high_attr)
        return None if low_value <= high_value else f"{low_value} > {high_value}"

    return CelRule(f"self.{low} <= self.{high}", message, fix, high, violation)


def _add_rules_to_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema[RULES_SCHEMA_KEY] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields rejected, immutable, cross-field rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_add_rules_to_schema,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            detail = rule.violation(self)
            if detail is not None:
                message = f"{rule.message} ({detail})" if detail else rule.message
                raise PydanticCustomError(
                    CROSS_FIELD_ERROR,
                    "{message}; fix: {fix}",
                    {"message": message, "fix": rule.fix, "field": rule.field},
                )
        return self


class StatusModel(ApiModel):
    """Status is written by the operator and read back leniently (older fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
