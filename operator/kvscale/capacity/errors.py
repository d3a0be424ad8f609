"""The one error type for input a user can fix, and the one way its field is looked up.

`InputError` carries `field` (the offending input), `problem` and `fix`; the planner
(`CapacityInputError`), the engine renderers (`kvscale.engines.UnsupportedEngineError`) and the
spec conversion (`kvscale.api.convert.SpecError`) all raise it, so the CLI and the operator
print one actionable line from any of them.

Field names: the core names an input by its `PlanRequest` attribute (`max_model_len_tokens`,
`tensor_parallel`), or `config.<key>` for a config.json key; the spec conversion names CR paths
(`spec.maxContextLength`). Each caller renders a core name in its own terms (a CLI flag, a CR
field) through `field_key`, which makes a name's spelling irrelevant: `maxModelLen`,
`max_model_len` and `--max-model-len` are one key.
"""

from __future__ import annotations


def field_key(name: str) -> str:
    """The spelling-free key of a field name: lower-case letters and digits only."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


class InputError(ValueError):
    """An input that cannot work, the field it is in, and what to change."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{field}: {problem}; fix: {fix}")
        self.field = field
        self.problem = problem
        self.fix = fix


class CapacityInputError(InputError):
    """An input the planner cannot work with (a PlanRequest field or a config.json key)."""
