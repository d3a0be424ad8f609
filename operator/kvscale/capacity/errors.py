"""The planner's one error type: bad input that the user can fix."""

from __future__ import annotations


class CapacityInputError(ValueError):
    """An input the planner cannot work with.

    `field` names the offending input (CLI flag, config.json key or CR field) and `fix`
    says what to change, so the CLI and the operator can print one actionable line.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{field}: {problem}; fix: {fix}")
        self.field = field
        self.problem = problem
        self.fix = fix
