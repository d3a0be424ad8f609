"""The memory budget each engine leaves for the KV cache, per rank.

Each engine defines "how much memory the KV cache gets" differently (vLLM: a fraction of the
device total minus what profiling measured; SGLang: a fraction of the free memory at start
minus the weights; TGI and TensorRT-LLM: a fraction of what is free after the weights), so
each gets its own small function over the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kvscale.capacity import rules as v
from kvscale.capacity.allocator import blas_workspace_bytes, layout_bytes, weights_padding_bytes
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.kvlayout import kv_heads_per_rank
from kvscale.capacity.legacy import LayerShape, reserved_slack_bytes
from kvscale.capacity.nonkv import (
    MoeShape,
    SamplerPath,
    activation_peak,
    forward_peak_bytes,
    resolve_sampler_path,
    sampler_rows,
)
from kvscale.capacity.release import EngineVersion
from kvscale.capacity.rope import rope_cache_bytes
from kvscale.capacity.types import GIB, GpuSpec, ModelGeometry, PlanRequest, estimated_non_kv_bytes
from kvscale.capacity.weights import mxfp4_pads

DEFAULT_VOCAB = 32000
DEFAULT_HIDDEN = 4096


@dataclass(frozen=True)
class Budget:
    total_bytes: int
    utilization: float  # the engine's own fraction (vLLM util, SGLang mfs, TRT-LLM free frac)
    requested_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    available_kv_bytes: int
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size_tokens: int
    warnings: tuple[str, ...] = ()
    sampler_path: SamplerPath | None = None  # vLLM V1: the path the activation charge assumed
    rope_cache_bytes: int = 0  # vLLM: rotary cos/sin tables, whole on every rank (rope.py)
    # vLLM: what loading adds to the checkpoint's share (allocator.py: the caching allocator's
    # block tails, the mxfp4 kernel's padded experts); like the rope tables, part of "Model
    # loading took", not of the checkpoint
    weights_padding_bytes: int = 0
    # The non-torch charge already holds the CUDA context (vLLM 0.8.0-0.9.0's accounting,
    # SGLang's start-up probe, the ROCm figures)
    non_torch_holds_context: bool = False

    @property
    def load_runtime_bytes(self) -> int:
        """What holds device memory besides the weights while the engine loads them."""
        context = 0 if self.non_torch_holds_context else v.CUDA_CONTEXT_BYTES
        return self.non_torch_bytes + context


def total_memory_bytes(request: PlanRequest) -> int:
    return request.gpu_memory_bytes or request.gpu.memory_bytes


def weights_per_rank_bytes(request: PlanRequest) -> tuple[int, tuple[str, ...]]:
    """Explicit weights win, then the model's checkpoint size; spread evenly over TP ranks
    (what a rank holds beyond that even share is `allocator.replicated_bytes`)."""
    weights = request.weights_bytes or request.model.weights_bytes
    if weights is None:
        raise CapacityInputError(
            "weights",
            f"no checkpoint size or parameter count known for {request.model.name}",
            "pass --weights-gib (the checkpoint size)",
        )
    notes: tuple[str, ...] = ()
    if request.weights_bytes is None and request.model.params is None:
        notes = ("weights estimated from the geometry; pass --weights-gib for accuracy",)
    return weights // request.tensor_parallel, notes


def _weights_as_laid_out(request: PlanRequest) -> tuple[int, tuple[str, ...]]:
    """The checkpoint's share, the tensors every rank holds whole and the mxfp4 kernel's
    padded experts: what an engine that does not charge them apart (SGLang, TGI,
    TensorRT-LLM) holds per rank."""
    weights, notes = weights_per_rank_bytes(request)
    return weights + layout_bytes(request.model, request.tensor_parallel, request.gpu), notes


def check_utilization(value: float, field: str) -> float:
    if not 0 < value <= 1:
        raise CapacityInputError(
            field, f"must be in (0, 1], got {value}", "use a fraction such as 0.9"
        )
    return value


def _activation_vllm(
    request: PlanRequest, rules: v.VllmRules, mnbt: int, seqs: int
) -> tuple[int, SamplerPath]:
    model = request.model
    hidden, intermediate = _mlp_widths(model)
    vocab = model.vocab_size or DEFAULT_VOCAB
    path = resolve_sampler_path(request.sampler_path, rules.sampler_paths)
    peak = activation_peak(
        path,
        max_num_seqs=seqs,
        mnbt=mnbt,
        vocab=vocab,
        hidden=hidden,
        intermediate=intermediate,
        tp=request.tensor_parallel,
        dtype_bytes=model.dtype_bytes,
        moe=_moe_shape(model, request.gpu),
        moe_workspace=rules.moe_workspace,
        compute_units=request.gpu.compute_units,
        multimodal=rules.v1 and model.is_multimodal,
        blas_workspace_bytes=blas_workspace_bytes(request.gpu),
    )
    charge = peak.peak_bytes
    if rules.legacy_profile:  # charged from free-memory deltas: what the allocator reserved
        charge += reserved_slack_bytes(
            _layer_shape(request),
            tokens=mnbt,
            rows=sampler_rows(seqs, mnbt),
            vocab=vocab,
            dtype_bytes=model.dtype_bytes,
        )
    return charge, path


def _mlp_widths(model: ModelGeometry) -> tuple[int, int]:
    """(hidden, dense MLP width) before TP; a config without them: 4,096 and 4 x hidden."""
    hidden = model.hidden_size or DEFAULT_HIDDEN
    return hidden, model.intermediate_size or 4 * hidden


def _layer_shape(request: PlanRequest) -> LayerShape:
    """One decoder layer's widths on a rank."""
    model, tp = request.model, request.tensor_parallel
    hidden, intermediate = _mlp_widths(model)
    return LayerShape(
        hidden=hidden,
        q_width=max(1, model.num_attention_heads // tp) * model.head_dim_k,
        kv_width=kv_heads_per_rank(model, tp) * (model.head_dim_k + model.head_dim_v),
        intermediate=intermediate // tp,
        num_layers=model.num_layers,
        num_experts=model.num_experts or 0,
        experts_per_token=model.experts_per_token or 0,
        expert_width=max(1, (model.expert_intermediate_size or 0) // tp),
    )


def _moe_shape(model: ModelGeometry, gpu: GpuSpec) -> MoeShape | None:
    if not model.experts_per_token or not model.expert_intermediate_size:
        return None
    pads = mxfp4_pads(gpu) if model.quantization == "mxfp4" else None
    return MoeShape(model.experts_per_token, model.expert_intermediate_size, pads)


def _activation_forward_bytes(model: ModelGeometry, mnbt: int, tp: int) -> int:
    """Engines (and vLLM V0) whose profile is one forward pass over `mnbt` prompt tokens."""
    hidden, intermediate = _mlp_widths(model)
    return forward_peak_bytes(mnbt, hidden, intermediate, tp, model.dtype_bytes)


def _vllm_batch(request: PlanRequest, rules: v.VllmRules, total: int) -> tuple[int, int]:
    if rules.v1:
        gpu_id = request.gpu.id.lower()
        if rules.gpu_batch_defaults == "name":
            big = any(name in gpu_id for name in v.BIG_GPU_NAMES)
        else:
            big = total >= v.BIG_GPU_MIN_BYTES and "a100" not in gpu_id
        if request.api_server:
            mnbt, seqs = v.BIG_GPU_BATCH if big else v.SMALL_GPU_BATCH
        else:
            mnbt, seqs = v.LLM_CLASS_BIG_GPU_BATCH if big else v.LLM_CLASS_SMALL_GPU_BATCH
    else:
        seqs = v.V0_MAX_NUM_SEQS
        chunked = request.chunked_prefill
        if chunked is None:
            above = rules.v0_chunked_above_tokens
            chunked = above is not None and request.max_model_len_tokens > above
        if chunked:
            mnbt = v.V0_CHUNKED_BATCHED_TOKENS
        else:
            mnbt = max(request.max_model_len_tokens, v.V0_MIN_BATCHED_TOKENS)
    return request.max_num_batched_tokens or mnbt, request.max_num_seqs or seqs


def vllm_rope_cache_bytes(model: ModelGeometry, version: EngineVersion | str) -> int:
    """The rotary cos/sin tables vLLM `version` builds with the model, per rank (rope.py).

    A separate charge beside the checkpoint's share: the tables are part of vLLM's "Model
    loading took" figure but not of the checkpoint, and tensor parallelism does not split
    them. The layout follows the release's model code (v.ROPE_V08_LAYOUT_SINCE).
    """
    return rope_cache_bytes(model, EngineVersion.parse(version) >= v.ROPE_V08_LAYOUT_SINCE)


def _cudagraph_bytes(model: ModelGeometry, seqs: int) -> int:
    base = v.CUDAGRAPH_MOE_BYTES if model.num_experts else v.CUDAGRAPH_DENSE_BYTES
    return int(base * max(0.5, min(2.0, seqs / v.CUDAGRAPH_REF_SEQS)))


def vllm_budget(request: PlanRequest) -> Budget:
    """requested = ceil(total x util); available = requested - weights - their padding (block
    tails, mxfp4 layout) - rope tables - act - non_torch - cg."""
    rules = v.vllm_rules(request.engine_version, request.vllm_v0)
    total = total_memory_bytes(request)
    util = check_utilization(
        request.gpu_memory_utilization or rules.default_util, "gpuMemoryUtilization"
    )
    mnbt, seqs = _vllm_batch(request, rules, total)
    weights, notes = weights_per_rank_bytes(request)
    tp = request.tensor_parallel
    # V1 and V0 alike profile one forward pass over MNBT tokens, then sample min(seqs, MNBT)
    # rows with top-k/top-p on (V0: vllm/worker/model_runner.py profile_run, the sort path)
    activation, sampler = _activation_vllm(request, rules, mnbt, seqs)
    path: SamplerPath | None = sampler if rules.v1 else None
    non_torch = rules.non_torch_bytes(tp, request.gpu)
    rope = vllm_rope_cache_bytes(request.model, request.engine_version)
    padding = weights_padding_bytes(request.model, tp, request.gpu)
    cudagraph = _cudagraph_bytes(request.model, seqs) if rules.cudagraph_subtracted else 0
    requested = math.ceil(total * util)
    budget = Budget(
        total_bytes=total,
        utilization=util,
        requested_bytes=requested,
        weights_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        non_torch_holds_context=rules.non_torch_has_context or request.gpu.rocm,
        cudagraph_bytes=cudagraph,
        available_kv_bytes=0,
        max_num_batched_tokens=mnbt,
        max_num_seqs=seqs,
        block_size_tokens=request.block_size_tokens or v.VLLM_BLOCK_SIZE,
        warnings=notes,
        sampler_path=path,
        rope_cache_bytes=rope,
        weights_padding_bytes=padding,
    )
    observed = request.observed_non_kv_bytes
    if request.kv_cache_memory_bytes is not None:  # --kv-cache-memory-bytes skips profiling
        available = request.kv_cache_memory_bytes
    elif observed is not None:  # calibrated from the live engine or a startup log
        available = requested - observed
    else:
        available = requested - estimated_non_kv_bytes(budget)
    return replace(budget, available_kv_bytes=available)


def sglang_budget(request: PlanRequest) -> Budget:
    """KV pool = mem_fraction_static x free memory at start - weights (per rank)."""
    total = total_memory_bytes(request)
    tp = request.tensor_parallel
    mfs = check_utilization(
        request.gpu_memory_utilization or v.sglang_default_mfs(request.engine_version, tp, total),
        "memFractionStatic",
    )
    init = v.SGLANG_INIT_TP1_BYTES if tp == 1 else v.SGLANG_INIT_TP_BYTES
    free_at_start = total - init
    weights, notes = _weights_as_laid_out(request)
    requested = int(free_at_start * mfs)
    observed = request.observed_non_kv_bytes
    non_kv = weights if observed is None else observed
    available = request.kv_cache_memory_bytes or requested - non_kv
    chunk = request.max_num_batched_tokens or v.sglang_chunked_prefill(total)
    return Budget(
        total_bytes=total,
        utilization=mfs,
        requested_bytes=requested,
        weights_bytes=weights,
        activation_bytes=0,
        non_torch_bytes=init,
        non_torch_holds_context=True,
        cudagraph_bytes=0,
        available_kv_bytes=available,
        max_num_batched_tokens=chunk,
        max_num_seqs=request.max_num_seqs or 0,  # derived from the pool size by the planner
        block_size_tokens=request.block_size_tokens or 1,
        warnings=notes,
    )


def free_fraction_budget(request: PlanRequest) -> Budget:
    """TGI and TensorRT-LLM: a fraction of the memory still free after weights and warm-up."""
    total = total_memory_bytes(request)
    tp = request.tensor_parallel
    is_tgi = request.engine == "tgi"
    default = v.TGI_WIGGLE_ROOM if is_tgi else v.TRTLLM_FREE_FRACTION
    frac = check_utilization(request.gpu_memory_utilization or default, "freeMemoryFraction")
    weights, notes = _weights_as_laid_out(request)
    mnbt = request.max_num_batched_tokens or (
        v.TGI_PREFILL_TOKENS if is_tgi else v.TRTLLM_MAX_NUM_TOKENS
    )
    seqs = request.max_num_seqs or (v.TGI_MAX_CONCURRENT if is_tgi else v.TRTLLM_MAX_BATCH)
    activation = _activation_forward_bytes(request.model, mnbt, tp)
    if is_tgi:  # a PyTorch server: its warm-up takes PyTorch's BLAS workspace too
        activation += blas_workspace_bytes(request.gpu)
    non_torch = v.NON_TORCH_TP1_BYTES if tp == 1 else v.NON_TORCH_TP_BYTES
    free_after = total - weights - activation - non_torch
    available = request.kv_cache_memory_bytes or int(free_after * frac)
    block = request.block_size_tokens or (v.TGI_BLOCK_SIZE if is_tgi else v.TRTLLM_TOKENS_PER_BLOCK)
    return Budget(
        total_bytes=total,
        utilization=frac,
        requested_bytes=free_after,
        weights_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        non_torch_holds_context=request.gpu.rocm,
        cudagraph_bytes=0,
        available_kv_bytes=available,
        max_num_batched_tokens=mnbt,
        max_num_seqs=seqs,
        block_size_tokens=block,
        warnings=notes,
    )


def describe_gib(n_bytes: int) -> str:
    return f"{n_bytes / GIB:.2f} GiB"
