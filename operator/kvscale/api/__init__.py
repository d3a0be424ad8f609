"""kvscale.api: the LLMDeployment API (kvscale.dev/v1alpha1) and what is derived from it.

- `models` / `status`: pydantic spec and status, the single source of the CRD schema;
- `crd` / `docs`: the CRD YAML and the field reference generated from them;
- `convert`: spec -> the pure core's inputs, and `plan_deployment` (every GPU type planned);
- `validation`: offline validation with one-line, field-naming problems.
"""

from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.status import Condition, ConditionType, LLMDeploymentStatus, set_condition

__all__ = [
    "Condition",
    "ConditionType",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "set_condition",
]
