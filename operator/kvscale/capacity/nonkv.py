"""vLLM's profiled activation peak, from the tensors its profile run allocates.

`profile_run` runs the model once on `max_num_batched_tokens` (MNBT) tokens and then the
sampler once on a dummy batch of S = min(max_num_seqs, MNBT) requests (vllm 0.11.0
`v1/worker/gpu_model_runner.py` L3391-3397 and L2977; 0.20.0 `v1/worker/gpu/model_runner.py`
`_dummy_sampler_run`). The profiler records the *peak* of torch allocations, so the
activation charge is max(forward peak, sampler peak), never their sum. Every sampler tensor
is `[S, vocab]` or `[S]`: the charge is linear in S, and its bytes per element depend on the
top-k/top-p path the release runs (docs/adr/0012-physical-non-kv-model.md).

From 0.13.0 the fused-MoE kernels take their scratch tensors from a persistent workspace
(`v1/worker/workspace.py`, `fused_moe/modular_kernel.py` `_allocate_buffers`): allocated by the
forward pass and never freed, it is still live when the sampler runs, so it adds to whichever
peak is larger (`moe_workspace_bytes`); so does PyTorch's BLAS workspace, taken on the first
GEMM and kept (allocator.py `blas_workspace_bytes`). Before 0.13.0, `fused_experts` allocates
the same kind of scratch per call and frees it (0.6.4 `fused_moe/fused_moe.py`
`fused_experts_impl`): it widens the forward peak only (`moe_forward_bytes`). A multimodal
model's dummy encoder outputs are held under both peaks too (`encoder_outputs_bytes`).

No constant here is fitted to the bench rows; each is a sum of tensor widths read in the
source, cross-checked against logs in the ADR.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kvscale.capacity.errors import CapacityInputError


class SamplerPath(StrEnum):
    """The top-k/top-p implementation the sampler's dummy run goes through."""

    AUTO = "auto"  # the largest charge among the paths the release can run (safe side)
    SORT = "sort"  # PyTorch sort (`apply_top_k_top_p`, v1/sample/ops/topk_topp_sampler.py)
    FLASHINFER = "flashinfer"  # flashinfer top_k_top_p_sampling_from_logits
    TRITON = "triton"  # in-place Triton kernel (`apply_top_k_top_p_triton`, >= 0.17)
    V2 = "v2"  # Model Runner V2 (v1/worker/gpu/sample): no top-k/top-p in the dummy run


# Bytes per [S x vocab] element live at the sampler's peak (widths from the source):
# every path keeps the model-dtype logits (2, `compute_logits`, still referenced by
# `_dummy_sampler_run`) and their fp32 copy (4, `logits.to(torch.float32)`, sampler.py).
# sort: + sorted values fp32 (4) + int64 indices (8) + the int64 index iota the sort reads (8)
#   + the radix sort's key/value double buffers (4 + 8)                        = 38
#   (38.4-38.9 measured on four vLLM 0.11.0 H100 logs at 1,024 sequences, including the
#   MNBT x hidden states and the 32 MiB cuBLAS workspace the planner adds separately)
# flashinfer: + top-k masked logits fp32 (4) + softmax probs fp32 (4)          = 14
# triton: masks in place; + softmax probs fp32 (4) + exponential noise q (4,
#   `random_sample`)                                                           = 14
# v2: the dummy batch keeps top_k = vocab, top_p = 1, so top-k/top-p is skipped; the Gumbel
#   sampler reduces per block                                                  = 6
# The sort path's tensors: the logits, their fp32 copy, then what the sort holds (legacy.py
# replays them in this order).
SORT_TENSOR_BYTES_PER_ELEMENT = (2, 4, 4, 8, 8, 4, 8)
SAMPLER_BYTES_PER_ELEMENT: dict[SamplerPath, int] = {
    SamplerPath.SORT: sum(SORT_TENSOR_BYTES_PER_ELEMENT),
    SamplerPath.FLASHINFER: 2 + 4 + 4 + 4,
    SamplerPath.TRITON: 2 + 4 + 4 + 4,
    SamplerPath.V2: 2 + 4,
}
# The Triton kernel runs from 8 rows; below, the sort path (apply_top_k_top_p, 0.20.0).
TRITON_MIN_ROWS = 8
# ...and keeps one fp32 row of vocab per program it launches, in a buffer it caches for the
# process: min(next_pow2(programs), compute units) rows, programs = min(compute units, rows)
# (`apply_top_k_top_p_triton`, v1/sample/ops/topk_topp_triton.py, 0.17.0 and 0.19.0).
TRITON_BUFFER_BYTES_PER_ELEMENT = 4
# Forward pass of a dense decoder layer, per token, in activation-dtype elements: the
# residual, the normed input and the layer output (3 x hidden); the gate/up projection
# (2 x intermediate / TP) and the SiLU-and-mul output (1 x intermediate / TP).
FORWARD_HIDDEN_TENSORS = 3
FORWARD_INTERMEDIATE_TENSORS = 3
# Hidden states of the dummy batch held while the sampler runs: the forward's output
# (MNBT rows) plus the sampled rows and their random stand-in (2 x S rows).
SAMPLER_HELD_HIDDEN_ROWS_PER_SEQ = 2


# Before the workspace, `fused_experts_impl` runs at most this many tokens per call: its three
# scratch caches are sized by min(tokens, chunk) (VLLM_FUSED_MOE_CHUNK_SIZE, "32768" in the
# 0.6.4 wheel's envs.py).
FUSED_MOE_CHUNK_TOKENS = 32768
# A MoE layer's forward, besides that scratch: the residual and the normed input, which the
# kernel overwrites in place with its output (`inplace=True`, FusedMoE.forward_cuda, 0.6.4).
MOE_FORWARD_HIDDEN_TENSORS = 2

# The workspace manager aligns each tensor it hands out to 256 bytes (workspace.py).
MOE_WORKSPACE_ALIGN_BYTES = 256


def padded_widths(width: int, hidden: int, pads: tuple[int, int]) -> tuple[int, int]:
    """(width, hidden) rounded up to the multiples `pads` (an mxfp4 layout, weights.mxfp4_pads)."""
    pad_width, pad_hidden = pads
    return -(-width // pad_width) * pad_width, -(-hidden // pad_hidden) * pad_hidden


@dataclass(frozen=True)
class MoeShape:
    """What sizes one fused-MoE call's scratch: routed experts per token, one expert's FFN
    width (before TP), and, for an mxfp4 checkpoint (gpt-oss), the multiples the Marlin kernel
    pads the per-rank expert width and the hidden size to (weights.mxfp4_pads; the backend is
    the image's choice, and Marlin's scratch is the larger of the two the planner knows: OpenAI's
    Triton kernels keep one of the tensors inside the kernel). None: not mxfp4."""

    experts_per_token: int
    expert_intermediate: int
    mxfp4_pads: tuple[int, int] | None = None  # (expert width per rank, hidden)

    @property
    def mxfp4(self) -> bool:
        return self.mxfp4_pads is not None

    def marlin_dims(self, hidden: int, tp: int) -> tuple[int, int]:
        """(N, K): the padded expert width per rank and the padded hidden size."""
        return padded_widths(
            max(1, self.expert_intermediate // tp), hidden, self.mxfp4_pads or (1, 1)
        )


def _aligned(elements: int, dtype_bytes: int) -> int:
    align = MOE_WORKSPACE_ALIGN_BYTES
    return -(-elements * dtype_bytes // align) * align


def moe_workspace_bytes(moe: MoeShape, *, mnbt: int, hidden: int, tp: int, dtype_bytes: int) -> int:
    """The persistent fused-MoE workspace of a forward pass over `mnbt` tokens (per rank).

    `workspace_shapes` (0.19.0) with M = MNBT tokens, K = hidden, N = w1 rows = 2 x I/TP and
    the gated activation's output I/TP: TritonExperts (fused_moe.py) asks for
    [M, topk, max(I/TP, K)] and [M, topk, max(N, K)], the first sharing its memory with the
    [M, K] output (`_allocate_buffers`); MarlinExperts (fused_marlin_moe.py, mxfp4) for
    [M x topk, max(N', K')], [M x topk x max(2N', K')] and the [M, K'] output apart, with N'
    and K' the padded widths.
    """
    rows = mnbt * moe.experts_per_token
    if moe.mxfp4:
        width, padded_hidden = moe.marlin_dims(hidden, tp)
        return sum(
            _aligned(elements, dtype_bytes)
            for elements in (
                rows * max(width, padded_hidden),
                rows * max(2 * width, padded_hidden),
                mnbt * padded_hidden,
            )
        )
    per_rank = max(1, moe.expert_intermediate // tp)
    first = max(rows * max(per_rank, hidden), mnbt * hidden)
    second = rows * max(2 * per_rank, hidden)
    return _aligned(first, dtype_bytes) + second * dtype_bytes


def moe_forward_bytes(moe: MoeShape, *, mnbt: int, hidden: int, tp: int, dtype_bytes: int) -> int:
    """The widest point of a fused-MoE layer whose scratch is allocated per call (per rank).

    `fused_experts_impl` (0.6.4) with M = min(tokens, FUSED_MOE_CHUNK_TOKENS), topk routed
    experts, N = w1 rows = 2 x I/TP and K = hidden: `intermediate_cache1` [M, topk, N] (the
    gate/up output), `intermediate_cache2` [M x topk, N / 2] (SiLU-and-mul) and
    `intermediate_cache3` [M, topk, K] (the down projection before `moe_sum`), all live at
    once, beside the residual and the in-place hidden states. mxfp4 (`fused_marlin_moe`,
    0.10.1.1): `intermediate_cache13` [M x topk x max(2N', K')] (gate/up output and down
    projection share it), `intermediate_cache2` [M x topk, N'] and the [M, K'] output, over all
    M tokens, with N' and K' the padded widths; when K' > K, the layer first pads its input to
    K' (`F.pad` in `FusedMoE.forward_native`, 0.11.2), one more [M, K'] held through the call.
    """
    if moe.mxfp4:
        width, padded_hidden = moe.marlin_dims(hidden, tp)
        rows = mnbt * moe.experts_per_token
        padded_input = mnbt * padded_hidden if padded_hidden > hidden else 0
        scratch = (
            rows * max(2 * width, padded_hidden)
            + rows * width
            + mnbt * padded_hidden
            + padded_input
        )
        return dtype_bytes * (MOE_FORWARD_HIDDEN_TENSORS * mnbt * hidden + scratch)
    per_rank = max(1, moe.expert_intermediate // tp)
    rows = min(mnbt, FUSED_MOE_CHUNK_TOKENS) * moe.experts_per_token
    scratch = rows * (2 * per_rank + per_rank + hidden)
    return dtype_bytes * (MOE_FORWARD_HIDDEN_TENSORS * mnbt * hidden + scratch)


def encoder_outputs_bytes(mnbt: int, hidden: int, dtype_bytes: int) -> int:
    """The dummy encoder outputs V1's profile run keeps in its encoder cache through the
    forward pass and the sampler (`profile_run`: `encoder_cache["tmp_…"]`, cleared only after
    `_dummy_sampler_run`; 0.10.1.1 and 0.19.0 `v1/worker/gpu_model_runner.py`).

    The encoder budget is max(MNBT, tokens per item) (`compute_mm_encoder_budget`,
    v1/core/encoder_cache_manager.py) and the batch holds budget // tokens-per-item items of
    that many embeddings in the LM's hidden size: at most MNBT x hidden, exact when an item's
    tokens divide MNBT (gemma-3: 256). An item larger than MNBT is not modelled.
    """
    return mnbt * hidden * dtype_bytes


@dataclass(frozen=True)
class ActivationPeak:
    """The two peaks the profiler can see, which path produced the sampler's, and what is
    live under both (the MoE workspace, a multimodal model's dummy encoder outputs)."""

    sampler_path: SamplerPath
    sampler_bytes: int
    forward_bytes: int
    moe_workspace_bytes: int = 0
    encoder_outputs_bytes: int = 0
    blas_workspace_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        held = self.moe_workspace_bytes + self.encoder_outputs_bytes + self.blas_workspace_bytes
        return max(self.sampler_bytes, self.forward_bytes) + held


def resolve_sampler_path(requested: SamplerPath, runnable: tuple[SamplerPath, ...]) -> SamplerPath:
    """`auto` -> the runnable path with the largest charge; a named path must be runnable."""
    if requested is SamplerPath.AUTO:
        return max(runnable, key=SAMPLER_BYTES_PER_ELEMENT.__getitem__)
    if requested not in runnable:
        names = ", ".join(p.value for p in runnable)
        raise CapacityInputError(
            "samplerPath",
            f"this engine release cannot run the {requested.value} sampler path",
            f"use auto or one of: {names}",
        )
    return requested


def triton_buffer_rows(rows: int, compute_units: int | None) -> int:
    """Rows of the Triton top-k/top-p kernel's per-program buffer. Unknown compute units: the
    bound over every device, next_pow2(rows)."""
    programs = rows if compute_units is None else min(compute_units, rows)
    size = 1 << max(0, programs - 1).bit_length()
    return size if compute_units is None else min(size, compute_units)


def sampler_peak_bytes(
    path: SamplerPath,
    rows: int,
    vocab: int,
    *,
    hidden: int,
    mnbt: int,
    dtype_bytes: int,
    compute_units: int | None = None,
) -> int:
    """Bytes live while the dummy sampler runs on `rows` requests on a device with
    `compute_units` SMs/CUs (None: unknown, the largest buffer any device could need)."""
    if path is SamplerPath.TRITON and rows < TRITON_MIN_ROWS:
        path = SamplerPath.SORT
    held = dtype_bytes * hidden * (mnbt + SAMPLER_HELD_HIDDEN_ROWS_PER_SEQ * rows)
    buffer = 0
    if path is SamplerPath.TRITON:
        buffer = TRITON_BUFFER_BYTES_PER_ELEMENT * triton_buffer_rows(rows, compute_units) * vocab
    return SAMPLER_BYTES_PER_ELEMENT[path] * rows * vocab + held + buffer


def forward_peak_bytes(mnbt: int, hidden: int, intermediate: int, tp: int, dtype_bytes: int) -> int:
    """Bytes live at the widest point of one decoder layer over `mnbt` tokens (per rank)."""
    width = FORWARD_HIDDEN_TENSORS * hidden + FORWARD_INTERMEDIATE_TENSORS * intermediate / tp
    return int(dtype_bytes * mnbt * width)


def sampler_rows(max_num_seqs: int, mnbt: int) -> int:
    """Requests in the profile run's dummy sampler batch: min(max_num_seqs, MNBT)."""
    return min(max_num_seqs, mnbt)


def activation_peak(
    path: SamplerPath,
    *,
    max_num_seqs: int,
    mnbt: int,
    vocab: int,
    hidden: int,
    intermediate: int,
    tp: int,
    dtype_bytes: int,
    moe: MoeShape | None = None,
    moe_workspace: bool = False,
    compute_units: int | None = None,
    multimodal: bool = False,
    blas_workspace_bytes: int = 0,
) -> ActivationPeak:
    """The profile run's two peaks; the charge is `peak_bytes`, the larger of the two plus what
    is held under both: the MoE workspace (`moe`: None for dense models) and, for a multimodal
    model, the dummy encoder outputs (`multimodal`, `encoder_outputs_bytes`), and the BLAS
    workspace the first GEMM allocates and keeps (`blas_workspace_bytes`, allocator.py). With
    `moe_workspace` (releases that keep the fused-MoE scratch in a persistent workspace) the
    scratch is live under both peaks; without, it is freed after each layer and widens the
    forward peak only."""
    rows = sampler_rows(max_num_seqs, mnbt)
    shape = {"mnbt": mnbt, "hidden": hidden, "tp": tp, "dtype_bytes": dtype_bytes}
    workspace = moe_workspace_bytes(moe, **shape) if moe is not None and moe_workspace else 0
    forward = forward_peak_bytes(mnbt, hidden, intermediate, tp, dtype_bytes)
    if moe is not None and not moe_workspace:
        forward = max(forward, moe_forward_bytes(moe, **shape))
    return ActivationPeak(
        sampler_path=path,
        sampler_bytes=sampler_peak_bytes(
            path,
            rows,
            vocab,
            hidden=hidden,
            mnbt=mnbt,
            dtype_bytes=dtype_bytes,
            compute_units=compute_units,
        ),
        forward_bytes=forward,
        moe_workspace_bytes=workspace,
        encoder_outputs_bytes=encoder_outputs_bytes(mnbt, hidden, dtype_bytes) if multimodal else 0,
        blas_workspace_bytes=blas_workspace_bytes,
    )
