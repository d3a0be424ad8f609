"""Plans that read the cluster's calibration record first, and the planned half of
`status.calibration` (the live half is written by the operator when the engines report).

The record maps a `CalibrationKey` to the non-KV bytes a live engine of that tuple used
(`kvscale.capacity.calibration`); the operator passes a lookup into it, offline tools pass none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.status_calibration import CalibrationKeyStatus, CalibrationStatus
from kvscale.capacity import plan_capacity
from kvscale.capacity.calibration import (
    CalibrationKey,
    PoolBasis,
    calibration_key,
    modelled_non_kv_bytes,
    pool_pinned,
)
from kvscale.capacity.types import CapacityPlan, PlanRequest

#: Non-KV bytes per GPU observed for a tuple, or None when the record has no entry for it.
CalibrationLookup = Callable[[CalibrationKey], int | None]


def sampler_path_of(spec: LLMDeploymentSpec) -> str:
    """The sampler path the spec declares (`auto` when the environment is unknown): an
    overhead observed under one declaration is not reused under another."""
    return str(spec.engine.sampler_path)


def key_of(spec: LLMDeploymentSpec, plan: CapacityPlan, model_ref: str) -> CalibrationKey | None:
    """The record key of `plan` (None: a model without a name or URI is not shared)."""
    if not model_ref:
        return None
    return calibration_key(plan, model_ref, sampler_path_of(spec))


def calibrated_plan(
    spec: LLMDeploymentSpec,
    request: PlanRequest,
    model_ref: str,
    lookup: CalibrationLookup | None,
) -> tuple[CapacityPlan, CapacityPlan]:
    """(the plan to use, the model's own plan): the record's overhead when it has the tuple.

    The model's plan comes first: its effective batch shape (engine defaults filled in) is
    part of the key.
    """
    modelled = plan_capacity(request)
    key = key_of(spec, modelled, model_ref)
    if lookup is None or key is None or pool_pinned(request):
        return modelled, modelled
    observed = lookup(key)
    if observed is None:
        return modelled, modelled
    return plan_capacity(replace(request, observed_non_kv_bytes=observed)), modelled


def planned_calibration(
    spec: LLMDeploymentSpec, plan: CapacityPlan, modelled: CapacityPlan, model_ref: str
) -> CalibrationStatus | None:
    """The planned half of status.calibration for the selected GPU type's plan."""
    key = key_of(spec, plan, model_ref)
    if key is None:
        return None
    basis = PoolBasis.of(plan)
    return CalibrationStatus(
        record_key=key.record_key(),
        key=CalibrationKeyStatus(
            engine=key.engine,
            engine_version=key.engine_version,
            model=key.model,
            gpu_type=key.gpu_type,
            tensor_parallel=key.tensor_parallel,
            sampler_path=key.sampler_path,
            max_num_batched_tokens=key.max_num_batched_tokens,
            max_num_seqs=key.max_num_seqs,
        ),
        non_kv_source="model" if plan.request.observed_non_kv_bytes is None else "observed",
        planned_num_blocks=basis.planned_num_blocks,
        planned_kv_tokens=basis.planned_kv_tokens,
        planned_block_size_tokens=basis.block_size_tokens,
        kv_bytes_per_block=basis.kv_bytes_per_block,
        requested_bytes=basis.requested_bytes,
        planned_non_kv_bytes=max(0, modelled_non_kv_bytes(plan)),
        modelled_non_kv_bytes=max(0, modelled_non_kv_bytes(modelled)),
        modelled_kv_tokens=modelled.kv_cache_tokens,
    )
