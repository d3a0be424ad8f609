"""kvscale.scaling: the pure autoscaling policy and the rollout guardrail state machine.

`decide(config, state, observation, now_s) -> (Decision, ScalerState)` is the one entry point
the operator and the simulator call each tick; `kvscale.scaling.rollback` judges flag/capacity
changes during their bake window. No I/O, no clock: callers inject both.
"""

from kvscale.scaling.policy import decide
from kvscale.scaling.types import (
    Decision,
    Mode,
    Observation,
    ReplicaCounts,
    ScalerState,
    ScalingConfig,
    Signals,
    StepResult,
)

__all__ = [
    "Decision",
    "Mode",
    "Observation",
    "ReplicaCounts",
    "ScalerState",
    "ScalingConfig",
    "Signals",
    "StepResult",
    "decide",
]
