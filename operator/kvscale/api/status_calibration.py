"""`status.calibration`: the selected GPU type's planned KV pool beside the live one (ADR 0013).

Split from `kvscale.api.status`, which embeds `CalibrationStatus` in the object's status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kvscale.api.base import StatusModel


class CalibrationKeyStatus(StatusModel):
    """What an observed non-KV overhead is valid for (one entry of the calibration record)."""

    engine: str = Field(description="Serving engine.", max_length=63)
    engine_version: str = Field(description="Engine release.", max_length=63)
    model: str = Field(description="The model the engine loads.", max_length=1024)
    gpu_type: str = Field(description="Catalog GPU type.", max_length=63)
    tensor_parallel: int = Field(description="GPUs per replica (tensor parallel).", ge=1)
    sampler_path: str = Field(description="Sampler implementation (auto: unknown).", max_length=32)
    max_num_batched_tokens: int = Field(description="Tokens per engine step.", ge=0)
    max_num_seqs: int = Field(description="Running sequences per replica.", ge=0)


class CalibrationStatus(StatusModel):
    """The selected GPU type's planned KV pool beside the one the engines report."""

    record_key: str = Field(
        description="Key of this tuple in the cluster's calibration ConfigMap.", max_length=253
    )
    key: CalibrationKeyStatus = Field(description="The tuple the calibration is valid for.")
    non_kv_source: Literal["model", "observed"] = Field(
        description="Where the plan's non-KV overhead came from: the model or a live engine."
    )
    planned_num_blocks: int = Field(description="KV blocks per replica in the plan.", ge=0)
    planned_kv_tokens: int = Field(description="KV tokens per replica in the plan.", ge=0)
    planned_block_size_tokens: int = Field(description="Tokens per block in the plan.", ge=1)
    kv_bytes_per_block: int = Field(description="Bytes one block costs per GPU.", ge=0)
    requested_bytes: int | None = Field(
        default=None,
        description="Memory per GPU the engine budgets for weights, overhead and KV (null:"
        " the pool is pinned with kvCacheMemoryBytes, nothing is profiled).",
        ge=0,
    )
    planned_non_kv_bytes: int = Field(description="Non-KV bytes per GPU the plan holds back.", ge=0)
    modelled_non_kv_bytes: int = Field(
        description="Non-KV bytes per GPU the planner's model estimates.", ge=0
    )
    modelled_kv_tokens: int = Field(
        description="KV tokens per replica the planner's model alone predicts.", ge=0
    )
    live_num_blocks: int | None = Field(
        default=None, description="KV blocks per replica the engines report (smallest pod).", ge=0
    )
    live_block_size_tokens: int | None = Field(
        default=None, description="Tokens per block the engines report.", ge=0
    )
    live_kv_tokens: int | None = Field(
        default=None, description="The live pool in tokens per replica.", ge=0
    )
    implied_non_kv_bytes: int | None = Field(
        default=None,
        description="requestedBytes minus the live pool's bytes: the engines' real overhead.",
    )
    drift_fraction: float | None = Field(
        default=None,
        description="(live - planned) / planned KV blocks; negative: the plan over-predicts.",
    )
    observed_time: datetime | None = Field(
        default=None, description="When the engines' pool was last read (RFC 3339)."
    )
    recorded_time: datetime | None = Field(
        default=None,
        description="When this deployment last wrote the tuple's overhead to the record.",
    )
