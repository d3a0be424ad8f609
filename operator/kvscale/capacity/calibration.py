"""Live calibration: the non-KV overhead a running engine implies, and a plan that uses it.

An engine that profiles its memory (vLLM, SGLang) sizes its KV pool as "what the budget
requests minus everything that is not KV": weights, activation peak, CUDA graphs, non-torch
memory. The KV layout part of the planner is exact (ADR 0001: ≤ 0.26 % given the engine's own
KV bytes); what a plan gets wrong is that non-KV sum. A live engine reports its pool
(`vllm:cache_config_info{num_gpu_blocks, block_size}`), so

    implied non-KV bytes = requested bytes − live blocks × bytes per block        (per rank)

is the overhead the engine really had, to within one block. Planned again with that figure in
place of the modelled one (`PlanRequest.observed_non_kv_bytes`), the same model on the same GPU
type, engine release, TP, sampler path and batch shape gets the live pool back, block for block.

A pinned pool (`--kv-cache-memory-bytes`) is not profiled: it implies nothing about the
overhead, and an observed overhead does not change it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from hashlib import sha256

from kvscale.capacity.types import CapacityPlan, PlanRequest

# The sampler path is part of the profile (issue 10: up to 3x the sampler memory between
# paths); until the spec names it, every plan is keyed on the path an unknown environment runs.
SAMPLER_PATH_UNKNOWN = "auto"
_RECORD_KEY_MAX = 253  # a ConfigMap data key is a DNS subdomain-like name
_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")


@dataclass(frozen=True)
class LivePool:
    """The KV pool one replica's engine reports (its smallest, over the pods)."""

    num_blocks: int
    block_size_tokens: int


@dataclass(frozen=True)
class CalibrationKey:
    """What one observed non-KV overhead is valid for.

    The batch shape is in the key because vLLM's profile run sizes its activation peak from
    max_num_batched_tokens and max_num_seqs: the same model with another shape has another
    overhead, so it must not inherit this one.
    """

    engine: str
    engine_version: str
    model: str
    gpu_type: str
    tensor_parallel: int
    sampler_path: str
    max_num_batched_tokens: int
    max_num_seqs: int

    def record_key(self) -> str:
        """A ConfigMap data key: readable, only [-._a-zA-Z0-9], ≤ 253 characters."""
        model = _UNSAFE.sub("_", self.model.replace("/", "__"))
        text = (
            f"{self.engine}-{self.engine_version}.{self.gpu_type}.tp{self.tensor_parallel}"
            f".{self.sampler_path}.mnbt{self.max_num_batched_tokens}.seqs{self.max_num_seqs}"
            f".{model}"
        )
        text = _UNSAFE.sub("_", text)
        if len(text) <= _RECORD_KEY_MAX:
            return text
        digest = sha256(text.encode()).hexdigest()[:16]
        return f"{text[: _RECORD_KEY_MAX - 17]}.{digest}"


def calibration_key(
    plan: CapacityPlan, model: str, sampler_path: str = SAMPLER_PATH_UNKNOWN
) -> CalibrationKey:
    """The key of `plan` (its effective batch shape, not the spec's possibly empty one)."""
    request = plan.request
    return CalibrationKey(
        engine=request.engine,
        engine_version=str(request.engine_version),
        model=model,
        gpu_type=request.gpu.id,
        tensor_parallel=request.tensor_parallel,
        sampler_path=sampler_path,
        max_num_batched_tokens=plan.max_num_batched_tokens,
        max_num_seqs=plan.max_num_seqs,
    )


def pool_pinned(request: PlanRequest) -> bool:
    """The engine is given its KV bytes (--kv-cache-memory-bytes): it profiles nothing."""
    return request.kv_cache_memory_bytes is not None or request.pin_kv_pool


def modelled_non_kv_bytes(plan: CapacityPlan) -> int:
    """What the plan holds back from the requested budget for everything that is not KV."""
    return plan.requested_bytes - plan.available_kv_bytes


@dataclass(frozen=True)
class PoolBasis:
    """The figures of a plan a live pool is compared with (what status.calibration keeps)."""

    planned_num_blocks: int
    planned_kv_tokens: int
    block_size_tokens: int
    kv_bytes_per_block: int  # per rank: the planner's divisor (page bytes x layers per group)
    requested_bytes: int | None  # per rank; None: the pool is pinned, nothing was profiled

    @classmethod
    def of(cls, plan: CapacityPlan) -> PoolBasis:
        return cls(
            planned_num_blocks=plan.num_blocks,
            planned_kv_tokens=plan.kv_cache_tokens,
            block_size_tokens=plan.block_size_tokens,
            kv_bytes_per_block=plan.page_bytes * plan.group_size_layers,
            requested_bytes=None if pool_pinned(plan.request) else plan.requested_bytes,
        )

    def live_kv_bytes(self, live: LivePool) -> int:
        """The live pool in bytes per rank (a block-size change scales the page linearly)."""
        slots = live.num_blocks * live.block_size_tokens
        return slots * self.kv_bytes_per_block // max(1, self.block_size_tokens)

    def live_kv_tokens(self, live: LivePool) -> int:
        """The live pool in the plan's token measure: blocks x block size for one KV group,
        the plan's own tokens per block for hybrid and sliding-window layouts (there within a
        block per group of what the planner's formula gives for the same blocks)."""
        slots = live.num_blocks * live.block_size_tokens
        planned_slots = self.planned_num_blocks * self.block_size_tokens
        if planned_slots <= 0:
            return slots
        return slots * self.planned_kv_tokens // planned_slots

    def implied_non_kv_bytes(self, live: LivePool) -> int | None:
        """requested − live KV bytes: the overhead the engine really had (None: pinned pool
        or an empty report)."""
        if self.requested_bytes is None or live.num_blocks <= 0 or live.block_size_tokens <= 0:
            return None
        return self.requested_bytes - self.live_kv_bytes(live)

    def drift_fraction(self, live: LivePool) -> float | None:
        """(live − planned) / planned pool slots: negative when the engine holds less."""
        planned_slots = self.planned_num_blocks * self.block_size_tokens
        if planned_slots <= 0:
            return None
        return (live.num_blocks * live.block_size_tokens - planned_slots) / planned_slots
