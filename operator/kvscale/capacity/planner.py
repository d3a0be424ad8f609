"""plan_capacity: the engine's KV budget turned into blocks, tokens and max concurrency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvscale.capacity import rules as v
from kvscale.capacity.budget import (
    Budget,
    describe_gib,
    free_fraction_budget,
    sglang_budget,
    vllm_budget,
)
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.kvlayout import KvLayout, blocks_for_request, build_layout
from kvscale.capacity.quantload import weights_refusal
from kvscale.capacity.types import (
    GIB,
    CapacityPlan,
    KvGroup,
    LayerKind,
    PlanRequest,
    estimated_non_kv_bytes,
)

ENGINE_BUDGETS: dict[str, Callable[[PlanRequest], Budget]] = {
    "vllm": vllm_budget,
    "sglang": sglang_budget,
    "tgi": free_fraction_budget,
    "trtllm": free_fraction_budget,
}
SGLANG_RUNNING_MIN, SGLANG_RUNNING_MAX, SGLANG_RUNNING_PER_CONTEXT = 2048, 4096, 512


def _positive(value: int | None, field: str, fix: str) -> None:
    if value is not None and value <= 0:
        raise CapacityInputError(field, f"must be positive, got {value}", fix)


def validate_request(request: PlanRequest) -> None:
    """Reject inputs no engine would start with, naming the field and the fix."""
    if request.engine not in ENGINE_BUDGETS:
        raise CapacityInputError(
            "engine", f"unknown engine {request.engine!r}", f"use one of {sorted(ENGINE_BUDGETS)}"
        )
    tp, heads = request.tensor_parallel, request.model.num_attention_heads
    _positive(tp, "tensorParallel", "use 1 or more GPUs per replica")
    if heads % tp:
        options = [d for d in (1, 2, 4, 8, 16) if heads % d == 0]
        raise CapacityInputError(
            "tensorParallel",
            f"{heads} attention heads cannot be split over {tp} ranks",
            f"use a tensor-parallel size that divides {heads} (e.g. {options})",
        )
    _positive(request.max_model_len_tokens, "maxModelLen", "use a positive context length")
    _positive(request.block_size_tokens, "blockSize", "omit it or use e.g. 16")
    _positive(request.max_num_batched_tokens, "maxNumBatchedTokens", "omit it or use e.g. 8192")
    _positive(request.max_num_seqs, "maxNumSeqs", "omit it or use e.g. 256")
    _positive(request.kv_cache_memory_bytes, "kvCacheMemoryBytes", "omit it or give bytes > 0")
    _positive(request.gpu_memory_bytes, "gpuMemoryGiB", "omit it or give the device memory")
    _positive(request.weights_bytes, "weightsGiB", "omit it or give the checkpoint size")
    _positive(request.observed_non_kv_bytes, "observedNonKvBytes", "omit it to use the model")


def _layout_for(request: PlanRequest, block_size: int) -> KvLayout:
    hybrid, chunked = False, False
    if request.engine == "vllm":
        rules = v.vllm_rules(request.engine_version, request.vllm_v0)
        hybrid = rules.v1 and rules.hybrid_manager and not request.disable_hybrid_kv_cache_manager
        chunked = rules.chunked_local_in_hma
    return build_layout(
        request.model,
        tp=request.tensor_parallel,
        kv_dtype=request.kv_cache_dtype,
        block_size=block_size,
        hybrid_manager=hybrid,
        chunked_in_hma=chunked,
        align=v.HYBRID_MAMBA_BLOCK_ALIGN,
    )


def largest_fitting_context(
    groups: tuple[KvGroup, ...], num_blocks: int, batched_tokens: int, upper: int
) -> int:
    """Largest context whose blocks fit in `num_blocks` (binary search; needs are monotone)."""
    if blocks_for_request(groups, 1, batched_tokens) > num_blocks:
        return 0
    lo, hi = 1, upper
    if blocks_for_request(groups, hi, batched_tokens) <= num_blocks:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if blocks_for_request(groups, mid, batched_tokens) <= num_blocks:
            lo = mid
        else:
            hi = mid
    return lo


def _kv_cache_tokens(request: PlanRequest, num_blocks: int, layout: KvLayout, conc: float) -> int:
    formula = "blocks"
    if request.engine == "vllm":
        formula = v.vllm_rules(request.engine_version, request.vllm_v0).token_formula
    attn_groups = [g for g in layout.groups if g.kind is not LayerKind.LINEAR] or layout.groups
    if formula == "groups":
        return num_blocks // len(layout.groups) * layout.block_size_tokens
    if formula == "concurrency":
        return int(conc * request.max_model_len_tokens)
    if len(layout.groups) > 1:  # no hybrid token figure in this engine: per-group share
        return num_blocks // len(attn_groups) * layout.block_size_tokens
    return num_blocks * layout.block_size_tokens


def _fit_check_reserved_blocks(request: PlanRequest) -> int:
    """Blocks the engine's start-up check holds back before one max-length request must fit."""
    if request.engine != "vllm":
        return 0
    return int(v.vllm_rules(request.engine_version, request.vllm_v0).fit_reserves_null_block)


def _engine_cap(request: PlanRequest, budget: Budget, kv_tokens: int) -> int:
    if request.engine == "sglang" and not request.max_num_seqs:
        per_context = kv_tokens * SGLANG_RUNNING_PER_CONTEXT // request.max_model_len_tokens
        cap = max(min(per_context, SGLANG_RUNNING_MAX), SGLANG_RUNNING_MIN)
        return max(1, min(cap, kv_tokens // 2))
    return budget.max_num_seqs


# A refused plan names the batch flags when the profile's activation peak is at least this
# large: then shrinking the dummy batch can free more than rounding errors.
ACTIVATION_HINT_BYTES = GIB


def _not_fitting_reason(request: PlanRequest, budget: Budget, needed: int, fitting: int) -> str:
    if budget.available_kv_bytes <= 0:
        parts = estimated_non_kv_bytes(budget)
        if request.observed_non_kv_bytes is not None:  # what a live engine was seen to use
            parts = request.observed_non_kv_bytes
        batch = ""
        if request.engine == "vllm" and budget.activation_bytes >= ACTIVATION_HINT_BYTES:
            batch = (
                f"lower --max-num-seqs (now {budget.max_num_seqs}) or --max-num-batched-tokens "
                f"(now {budget.max_num_batched_tokens}), which size the profile's "
                f"{describe_gib(budget.activation_bytes)} activation peak, "
            )
        return (
            f"weights, activations and runtime overhead need {describe_gib(parts)} per GPU but "
            f"the budget is {describe_gib(budget.requested_bytes)}; no memory is left for the "
            f"KV cache; fix: {batch}raise --gpu-memory-utilization, use a larger "
            "--tensor-parallel-size, a quantized checkpoint, or a GPU with more memory"
        )
    return (
        f"one request at max_model_len={request.max_model_len_tokens} needs "
        f"{describe_gib(needed)} of KV cache but only "
        f"{describe_gib(budget.available_kv_bytes)} is available; the largest max_model_len "
        f"that fits is {fitting}; fix: lower --max-model-len to {fitting} or less, raise "
        "--gpu-memory-utilization, use --kv-cache-dtype fp8, or a larger --tensor-parallel-size"
    )


def _plan_warnings(request: PlanRequest, layout: KvLayout, budget: Budget) -> tuple[str, ...]:
    notes = list(budget.warnings)
    model, tp = request.model, request.tensor_parallel
    if tp > model.num_kv_heads and LayerKind.MLA not in model.layer_kinds:
        notes.append(f"TP {tp} > {model.num_kv_heads} KV heads: each rank stores a replica")
    if request.max_model_len_tokens > model.max_position_embeddings:
        notes.append(
            f"max_model_len {request.max_model_len_tokens} exceeds the model's "
            f"max_position_embeddings {model.max_position_embeddings}"
        )
    if request.kv_cache_dtype.startswith("fp8") and not request.gpu.fp8_kv_native:
        notes.append(f"{request.gpu.id} has no native FP8: the engine converts KV in software")
    if layout.padding_layers:
        notes.append(f"{layout.padding_layers} padding layer(s) in the KV-cache groups")
    if request.kv_cache_memory_bytes is not None:
        notes.append("kv_cache_memory_bytes given: utilisation and profiling are ignored")
    elif request.observed_non_kv_bytes is not None:
        notes.append(
            f"non-KV overhead {describe_gib(request.observed_non_kv_bytes)} as observed on live"
            " engines of this model, GPU type, release and batch shape (not the model's estimate)"
        )
    return tuple(notes)


def plan_capacity(request: PlanRequest) -> CapacityPlan:
    """Plan one replica of `request.model` on `request.gpu` with `request.engine`."""
    validate_request(request)
    budget = ENGINE_BUDGETS[request.engine](request)
    layout = _layout_for(request, budget.block_size_tokens)
    available = max(budget.available_kv_bytes, 0)
    num_blocks = available // layout.page_bytes // layout.group_size_layers
    mnbt, length = budget.max_num_batched_tokens, request.max_model_len_tokens
    per_request = blocks_for_request(layout.groups, length, mnbt)
    concurrency = num_blocks / per_request if per_request else 0.0
    admissible = max(num_blocks - _fit_check_reserved_blocks(request), 0)
    refusal = weights_refusal(request, budget.load_runtime_bytes, budget.total_bytes)
    fits = not refusal and available > 0 and per_request <= admissible
    # The fix "lower --max-model-len to N" must name a length the model supports.
    fitting = largest_fitting_context(
        layout.groups, admissible, mnbt, request.model.max_position_embeddings
    )
    needed = per_request * layout.page_bytes * layout.group_size_layers
    tokens = _kv_cache_tokens(request, num_blocks, layout, concurrency)
    return CapacityPlan(
        request=request,
        kv_bytes_per_token=layout.kv_bytes_per_token,
        weights_bytes=budget.weights_bytes,
        activation_bytes=budget.activation_bytes,
        non_torch_bytes=budget.non_torch_bytes,
        cudagraph_bytes=budget.cudagraph_bytes,
        requested_bytes=budget.requested_bytes,
        available_kv_bytes=budget.available_kv_bytes,
        block_size_tokens=layout.block_size_tokens,
        page_bytes=layout.page_bytes,
        num_groups=len(layout.groups),
        group_size_layers=layout.group_size_layers,
        num_blocks=num_blocks,
        kv_cache_tokens=tokens,
        blocks_per_max_len_request=per_request,
        max_concurrency=concurrency,
        gpu_memory_utilization=budget.utilization,
        max_num_batched_tokens=mnbt,
        max_num_seqs=budget.max_num_seqs,
        fits=fits,
        max_fitting_context_tokens=fitting,
        reason=refusal or ("" if fits else _not_fitting_reason(request, budget, needed, fitting)),
        warnings=_plan_warnings(request, layout, budget),
        kv_groups=layout.groups,
        kv_needed_bytes=needed,
        engine_cap_seqs=_engine_cap(request, budget, tokens),
        sampler_path=budget.sampler_path,
        rope_cache_bytes=budget.rope_cache_bytes,
        weights_padding_bytes=budget.weights_padding_bytes,
    )


def blocks_for_tokens(plan: CapacityPlan, tokens: int) -> int:
    """KV blocks (over all groups) one request holding `tokens` tokens of context occupies."""
    return blocks_for_request(plan.kv_groups, tokens, plan.max_num_batched_tokens)


def plan_to_json(plan: CapacityPlan) -> dict[str, Any]:
    """The CLI / CR-status shape: camelCase, contract keys first."""
    request = plan.request
    return {
        "kvBytesPerToken": plan.kv_bytes_per_token,
        "weightsBytes": plan.weights_bytes,
        "activationBytes": plan.activation_bytes,
        "cudagraphBytes": plan.cudagraph_bytes,
        "availableKvBytes": plan.available_kv_bytes,
        "blockSize": plan.block_size_tokens,
        "numBlocks": plan.num_blocks,
        "kvCacheTokens": plan.kv_cache_tokens,
        "maxConcurrency": round(plan.max_concurrency, 2),
        "fits": plan.fits,
        "warnings": list(plan.warnings),
        "reason": plan.reason,
        "maxFittingContextTokens": plan.max_fitting_context_tokens,
        "model": request.model.name,
        "gpu": request.gpu.id,
        "engine": request.engine,
        "engineVersion": str(request.engine_version),
        "tensorParallel": request.tensor_parallel,
        "maxModelLen": request.max_model_len_tokens,
        "gpuMemoryUtilization": plan.gpu_memory_utilization,
        "requestedBytes": plan.requested_bytes,
        "nonTorchBytes": plan.non_torch_bytes,
        "maxNumBatchedTokens": plan.max_num_batched_tokens,
        "maxNumSeqs": plan.max_num_seqs,
        "engineCapSeqs": plan.engine_cap_seqs,
        "pageBytes": plan.page_bytes,
        "numGroups": plan.num_groups,
        "groupSizeLayers": plan.group_size_layers,
        "blocksPerMaxLenRequest": plan.blocks_per_max_len_request,
        "kvNeededBytes": plan.kv_needed_bytes,
        "nonKvBytes": plan.non_kv_bytes,
        "nonKvSource": plan.non_kv_source,
        "samplerPath": plan.sampler_path.value if plan.sampler_path else None,
        "ropeCacheBytes": plan.rope_cache_bytes,
        "weightsPaddingBytes": plan.weights_padding_bytes,
        "onlineQuantization": (
            request.online_quantization.method if request.online_quantization else None
        ),
    }
