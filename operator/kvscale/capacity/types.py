"""Value objects of the capacity planner (frozen; units in names).

These types are the contract between the planner and everything that consumes a plan
(engine flag rendering, the simulator, the operator's status). Logic lives in the sibling
modules; this module holds data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from kvscale.capacity.nonkv import SamplerPath
from kvscale.capacity.release import EngineVersion

GIB = 1024**3
ROCM_VENDOR = "AMD"  # the catalog's vendor of GPUs served by ROCm builds


class NonKvCharges(Protocol):
    """The per-rank charges a vLLM-style budget takes before the KV pool (Budget, CapacityPlan)."""

    @property
    def weights_bytes(self) -> int: ...
    @property
    def rope_cache_bytes(self) -> int: ...
    @property
    def weights_padding_bytes(self) -> int: ...
    @property
    def activation_bytes(self) -> int: ...
    @property
    def non_torch_bytes(self) -> int: ...
    @property
    def cudagraph_bytes(self) -> int: ...


def loaded_weights_bytes(charges: NonKvCharges) -> int:
    """What vLLM's "Model loading took" covers, per rank: the checkpoint's share, the padding
    loading adds (allocator block tails, the mxfp4 layout) and the rope tables."""
    return charges.weights_bytes + charges.weights_padding_bytes + charges.rope_cache_bytes


def estimated_non_kv_bytes(charges: NonKvCharges) -> int:
    """The loaded weights + activation peak + non-torch + CUDA graphs, per rank."""
    return (
        loaded_weights_bytes(charges)
        + charges.activation_bytes
        + charges.non_torch_bytes
        + charges.cudagraph_bytes
    )


DEFAULT_ENGINE_VERSION = EngineVersion.parse("0.11.0")


class LayerKind(StrEnum):
    """How one decoder layer stores its per-sequence state."""

    FULL = "full"  # full attention (MHA / GQA / MQA): grows with every token
    SLIDING = "sliding"  # sliding-window attention: holds at most the window
    CHUNKED = "chunked"  # chunked local attention (Llama 4): holds at most one chunk
    MLA = "mla"  # multi-head latent attention: one latent per token, not split by TP
    LINEAR = "linear"  # linear attention / Mamba / GDN: fixed state per sequence
    NONE = "none"  # no KV state (e.g. a layer whose KV is shared with another)


class PeerLink(StrEnum):
    """How the GPUs of one node reach each other (catalog column `scaleup_interconnect`).

    The TP >= 2 non-torch charge (NCCL channels, custom all-reduce and multicast buffers)
    depends on it; UNKNOWN is planned as the costliest link measured (rules.py)."""

    NVLINK = "nvlink"  # NVLink links, NVSwitch or an NVLink bridge the SKU ships with
    PCIE = "pcie"  # no peer link: PCIe (and host memory) only
    XGMI = "xgmi"  # AMD Infinity Fabric
    UNKNOWN = "unknown"  # blank, optional bridge, or a fabric vLLM's CUDA path does not use


class TensorSplit(StrEnum):
    """How tensor parallelism splits one weight tensor over the ranks (vLLM's parallel layers)."""

    ROWS = "rows"  # column-parallel: output features split (gate/up, fused-MoE w13)
    COLS = "cols"  # row-parallel: input features split (o_proj, down, fused-MoE w2)
    QKV = "qkv"  # query heads split; KV heads split, or one per rank when TP > KV heads
    VOCAB = "vocab"  # vocab-parallel: rows padded to a multiple of 64, then split
    REPLICATED = "replicated"  # whole on every rank (a fused-MoE router: ReplicatedLinear)


@dataclass(frozen=True)
class WeightTensor:
    """One kind of weight tensor as the engine allocates it: `count` tensors of
    `batch` x `rows` x `cols` elements (QKV: `rows` are the query rows, the KV heads come on
    top), split over the ranks by `split`. `quantized` is False for what a weight quantization
    leaves in the model dtype (embeddings, the lm_head)."""

    rows: int
    cols: int
    split: TensorSplit
    count: int = 1
    batch: int = 1  # fused-MoE: experts stacked in one tensor
    kv_heads: int = 0  # QKV only
    head_dim: int = 0  # QKV only
    quantized: bool = True
    routed_experts: bool = False  # a fused-MoE w13 or w2 (what an mxfp4 checkpoint quantizes)

    def elements_per_rank(self, tp: int) -> int:
        rows, cols = self.rows, self.cols
        if self.split is TensorSplit.QKV:
            kv_per_rank = 1 if tp >= self.kv_heads else self.kv_heads // tp
            rows = rows // tp + 2 * kv_per_rank * self.head_dim
        elif self.split is TensorSplit.VOCAB:
            rows = -(-rows // VOCAB_PAD_ROWS) * VOCAB_PAD_ROWS // tp
        elif self.split is TensorSplit.ROWS:
            rows //= tp
        elif self.split is TensorSplit.COLS:
            cols //= tp
        return self.batch * rows * cols


# vLLM pads the vocabulary of its embeddings and lm_head to a multiple of this before splitting
# it (DEFAULT_VOCAB_PADDING_SIZE, model_executor/layers/vocab_parallel_embedding.py, 0.19.0).
VOCAB_PAD_ROWS = 64


@dataclass(frozen=True)
class RopeTable:
    """One rotary-embedding cos/sin table the engine builds (capacity/rope.py sizes it)."""

    kind: str  # default | linear | dynamic | dynamic_alpha | yarn | longrope | mrope | …
    rotary_dim: int  # columns: the rotated part of one head
    max_positions: int  # max_position_embeddings
    factor: float  # rope scaling factor (1.0 when none)
    original_max_positions: int  # original_max_position_embeddings (yarn, longrope)
    fp32: bool = False  # the model asks for a float32 table instead of the model dtype


@dataclass(frozen=True)
class ModelGeometry:
    """What the KV cache and the weights of one model cost, from its HF config.json."""

    name: str
    architecture: str
    num_layers: int
    layer_kinds: tuple[LayerKind, ...]  # one entry per decoder layer
    num_attention_heads: int
    num_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    dtype_bytes: int  # model (activation/KV "auto") dtype width: 2 for bf16/fp16
    max_position_embeddings: int
    sliding_window_tokens: int | None = None
    attention_chunk_tokens: int | None = None
    kv_lora_rank: int | None = None  # MLA latent rank
    qk_rope_head_dim: int | None = None  # MLA rope part, stored beside the latent
    linear_state_bytes_per_layer: int = 0  # fixed per-sequence state of one LINEAR layer (bf16)
    params: int | None = None  # total parameters
    active_params: int | None = None  # parameters touched per token (MoE < total)
    weights_bytes: int | None = None  # checkpoint bytes (quantisation included) when known
    quantization: str | None = None  # fp8, awq, gptq, mxfp4, nvfp4, bnb-4bit, …
    hidden_size: int | None = None
    num_experts: int | None = None
    # added by the planner (optional, defaulted): inputs of the calibrated activation model
    vocab_size: int | None = None
    intermediate_size: int | None = None
    experts_per_token: int | None = None  # MoE: routed experts per token (num_experts_per_tok)
    expert_intermediate_size: int | None = None  # MoE: one expert's FFN width
    is_multimodal: bool = False  # has a vision/audio encoder the engine profiles too
    rope_tables: tuple[RopeTable, ...] = ()  # distinct rotary cos/sin tables (vLLM _ROPE_DICT)
    # parameters a weight quantization leaves in the model dtype (embeddings, an untied lm_head,
    # a vision tower) and the routed-expert parameters (what mxfp4 quantizes): from the config
    kept_params: int | None = None
    expert_params: int | None = None
    # the decoder's weight tensors as the engine allocates them (what the caching allocator
    # rounds, capacity/allocator.py); empty when the config lacks the widths
    weight_tensors: tuple[WeightTensor, ...] = ()


@dataclass(frozen=True)
class GpuSpec:
    """One GPU type from the catalog."""

    id: str
    name: str
    vendor: str
    label_key: str  # e.g. nvidia.com/gpu.product
    label_values: tuple[str, ...]  # e.g. ("NVIDIA-H100-80GB-HBM3",)
    memory_bytes: int  # as CUDA/torch reports the device total (what vLLM multiplies by util)
    hbm_bandwidth_bytes_per_s: float
    bf16_flops: float | None  # dense, per second
    fp8_flops: float | None
    fp8_kv_native: bool
    price_usd_per_hour: float | None
    peer_link: PeerLink = PeerLink.UNKNOWN  # GPU-to-GPU link within a node (unknown: safe side)
    # Streaming multiprocessors (NVIDIA) or compute units (AMD): what torch reports as
    # multi_processor_count; None when the catalog has no source for it
    compute_units: int | None = None
    # FP4 tensor cores (Blackwell): vLLM's mxfp4 MoE kernels there pad the experts further
    fp4_native: bool = False
    # CUDA compute capability ("9.0") or ROCm gfx target ("gfx942"); "" when not known
    arch: str = ""

    @property
    def rocm(self) -> bool:
        """An AMD GPU: the engine runs its ROCm build (HIP runtime, RCCL, its own kernels)."""
        return self.vendor == ROCM_VENDOR


@dataclass(frozen=True)
class OnlineQuantization:
    """The engine quantizes a 16-bit checkpoint as it loads it (vLLM and SGLang
    `--quantization`, TGI `--quantize`): the model's weights are the quantized size, and
    `checkpoint_weights_bytes` (all ranks) is the 16-bit checkpoint the engine reads."""

    method: str  # fp8: the one method every engine applies to any 16-bit checkpoint
    checkpoint_weights_bytes: int


@dataclass(frozen=True)
class PlanRequest:
    """Inputs for one engine instance (one replica) of one model on one GPU type."""

    model: ModelGeometry
    gpu: GpuSpec
    engine: str = "vllm"  # vllm | sglang | tgi | trtllm
    engine_version: EngineVersion = DEFAULT_ENGINE_VERSION  # a string is parsed on creation
    tensor_parallel: int = 1
    max_model_len_tokens: int = 8192
    gpu_memory_utilization: float | None = None  # None -> the engine version's default
    gpu_memory_bytes: int | None = None  # override of gpu.memory_bytes (e.g. --gpu-memory-gib)
    kv_cache_dtype: str = "auto"  # auto | fp8 | fp8_e4m3 | fp8_e5m2 | bfloat16 | float16
    block_size_tokens: int | None = None  # None -> engine default (16 for vLLM on CUDA)
    max_num_batched_tokens: int | None = None  # None -> engine/version/GPU default
    max_num_seqs: int | None = None  # None -> engine/version/GPU default
    kv_cache_memory_bytes: int | None = None  # vLLM --kv-cache-memory-bytes short-circuit
    weights_bytes: int | None = None  # explicit per-model weight bytes (whole model, all ranks)
    enable_prefix_caching: bool = True
    disable_hybrid_kv_cache_manager: bool = False
    api_server: bool = True  # vLLM batch defaults differ for the API server vs the LLM class
    vllm_v0: bool | None = None  # force vLLM's V0 engine (VLLM_USE_V1=0); None: the version's
    # V0 only: --enable-chunked-prefill as the engine was started (None: the release's default,
    # on above v0_chunked_above_tokens); V1 always chunks
    chunked_prefill: bool | None = None
    sampler_path: SamplerPath = SamplerPath.AUTO  # vLLM top-k/top-p path of the profile run
    # Render the planned KV bytes as --kv-cache-memory-bytes (where the release has it), so
    # the engine's pool is the plan; the non-KV estimate is then the out-of-memory guard.
    pin_kv_pool: bool = False
    # Per-rank non-KV memory the engine was seen to charge (requested - available KV bytes:
    # weights, activation peak, non-torch, CUDA graphs) for this model, GPU type, release, TP
    # and sampler path. When given it replaces the estimate (live calibration feeds it).
    observed_non_kv_bytes: int | None = None
    # The engine quantizes the model's 16-bit checkpoint as it loads (None: it loads the
    # weights as they are stored); quantload.py checks the load's peak and the GPU.
    online_quantization: OnlineQuantization | None = None

    def __post_init__(self) -> None:
        version = EngineVersion.parse(self.engine_version)
        object.__setattr__(self, "engine_version", version)
        object.__setattr__(self, "sampler_path", SamplerPath(self.sampler_path))


@dataclass(frozen=True)
class CapacityPlan:
    """What the engine will really leave for KV cache on one replica, and what that buys.

    All byte figures are per GPU (per TP rank); tokens/blocks are per replica (the engine's
    shared block pool).
    """

    request: PlanRequest
    kv_bytes_per_token: int  # marginal KV bytes per token per rank, summed over growing layers
    weights_bytes: int  # per rank
    activation_bytes: int  # profiled activation peak per rank
    non_torch_bytes: int  # NCCL / CUDA context etc. per rank
    cudagraph_bytes: int  # CUDA-graph estimate subtracted by the engine (0 when not)
    requested_bytes: int  # total * utilisation (per rank)
    available_kv_bytes: int  # the engine's "Available KV cache memory" per rank
    block_size_tokens: int
    page_bytes: int  # bytes of one block of one layer (padded), per rank
    num_groups: int  # vLLM KV-cache groups (1 for uniform models)
    group_size_layers: int  # layers that share one block-pool tensor
    num_blocks: int
    kv_cache_tokens: int  # the engine's "GPU KV cache size: N tokens" figure
    blocks_per_max_len_request: int  # blocks one max_model_len request needs over all groups
    max_concurrency: float  # num_blocks / blocks_per_max_len_request (the engine's "x" figure)
    gpu_memory_utilization: float  # effective value
    max_num_batched_tokens: int  # effective value
    max_num_seqs: int  # effective value
    fits: bool  # one max_model_len request fits in the KV cache
    max_fitting_context_tokens: int  # largest max_model_len that would fit (0 if none)
    reason: str  # empty when fits; else needed vs available and the knob to turn
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # added by the planner (optional, defaulted)
    kv_groups: tuple[KvGroup, ...] = ()  # the engine's KV-cache groups (block allocator input)
    kv_needed_bytes: int = 0  # KV bytes one max_model_len request needs (per rank)
    engine_cap_seqs: int = 0  # the engine's own limit on running sequences
    sampler_path: SamplerPath | None = None  # the path the activation charge assumed (vLLM V1)
    rope_cache_bytes: int = 0  # vLLM rotary cos/sin tables per rank, beside weights_bytes
    weights_padding_bytes: int = 0  # vLLM: block tails and mxfp4 padding beyond weights_bytes

    @property
    def loaded_weights_bytes(self) -> int:
        """What vLLM's "Model loading took" covers (`loaded_weights_bytes`)."""
        return loaded_weights_bytes(self)

    @property
    def non_kv_bytes(self) -> int:
        """Per rank: what the budget charges besides the KV pool — observed when the request
        carries `observed_non_kv_bytes`; else SGLang's weights (its pool is mem_fraction_static
        x free-at-start − weights); else weights + rope tables + activation + non-torch +
        graphs."""
        observed = self.request.observed_non_kv_bytes
        if observed is not None:
            return observed
        if self.request.engine == "sglang":
            return self.weights_bytes
        return estimated_non_kv_bytes(self)

    @property
    def non_kv_source(self) -> str:
        return "estimate" if self.request.observed_non_kv_bytes is None else "observed"


@dataclass(frozen=True)
class KvGroup:
    """One KV-cache group: layers of one kind that share a block table.

    A request holds blocks in every group; `layers` counts the group's real layers
    (padding excluded) and `page_bytes` is one block of one layer, per rank.
    """

    kind: LayerKind
    layers: int
    block_size_tokens: int
    page_bytes: int
    window_tokens: int | None = None  # sliding window or attention chunk, tokens


@dataclass(frozen=True)
class WorkloadProfile:
    """The declared request-length profile and peak demand of one deployment."""

    p50_input_tokens: int
    p95_input_tokens: int
    p50_output_tokens: int
    p95_output_tokens: int
    peak_requests_per_s: float | None = None


@dataclass(frozen=True)
class SloTargets:
    """Latency targets; None means "no target" (that bound is not applied)."""

    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None


@dataclass(frozen=True)
class ConcurrencyVerdict:
    """How many requests one replica can safely run at once, and what limits it."""

    kv_bound_worst: int  # every request at max_model_len
    kv_bound_typical: int  # every request at the p95 prompt + p95 output
    slo_bound: int | None  # largest batch meeting the ITL/TTFT targets (None: no targets)
    engine_cap: int  # max_num_seqs / max_running_requests / max_batch_size
    safe_concurrency: int  # min(typical KV bound, SLO bound, cap) less the headroom
    limited_by: str  # kv | slo | engine_cap
    replicas_for_peak: int | None  # Little's law at the declared peak (None: no peak given)
    usd_per_hour_per_replica: float | None
    itl_at_safe_s: float | None
    ttft_p95_prompt_s: float | None
    # what one request alone gets: an SLO tighter than these cannot be met at any concurrency
    itl_one_request_s: float
    ttft_one_request_s: float  # for the p95 prompt
    # a step that also prefills (a chunk of) a p95 prompt, at the safe batch: the ITL p95 of
    # a replica under steady arrivals; and a smaller chunk that meets the ITL target when that
    # step misses it (None: it meets it, or no chunk does)
    itl_with_prefill_at_safe_s: float | None
    chunk_for_itl_tokens: int | None
