"""kvscale.capacity: pure KV-cache capacity planning (geometry, catalogs, budget, roofline).

No I/O beyond reading the package's own catalog data; no Kubernetes or HTTP imports.
"""

from kvscale.capacity.catalog import find_gpu, find_model, list_gpus, list_models
from kvscale.capacity.concurrency import estimate_safe_concurrency
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.geometry import model_from_config
from kvscale.capacity.nonkv import SamplerPath
from kvscale.capacity.planner import blocks_for_tokens, plan_capacity, plan_to_json
from kvscale.capacity.release import EngineVersion
from kvscale.capacity.types import (
    GIB,
    CapacityPlan,
    ConcurrencyVerdict,
    GpuSpec,
    KvGroup,
    LayerKind,
    ModelGeometry,
    PeerLink,
    PlanRequest,
    SloTargets,
    WorkloadProfile,
)

__all__ = [
    "GIB",
    "CapacityInputError",
    "CapacityPlan",
    "ConcurrencyVerdict",
    "EngineVersion",
    "GpuSpec",
    "KvGroup",
    "LayerKind",
    "ModelGeometry",
    "PeerLink",
    "PlanRequest",
    "SamplerPath",
    "SloTargets",
    "WorkloadProfile",
    "blocks_for_tokens",
    "estimate_safe_concurrency",
    "find_gpu",
    "find_model",
    "list_gpus",
    "list_models",
    "model_from_config",
    "plan_capacity",
    "plan_to_json",
]
