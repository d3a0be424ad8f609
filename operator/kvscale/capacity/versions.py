"""Engine-version rules and the calibrated non-KV memory model, as tables.

Every behaviour that changed between engine releases is one row here; the planner looks the
row up once and never branches on version numbers itself. Sources: reference notes on
vLLM's memory profiling (PR numbers in docs/capacity.md) and the development observations
in bench/data/vllm_kv_observations.csv (calibration in docs/adr/0001-capacity-model.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.types import GIB

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """'v0.10.1.1 (V1)' -> (0, 10, 1, 1); the leading dotted number is what counts."""
    match = re.search(r"\d+(?:\.\d+)*", text or "")
    if match is None:
        raise CapacityInputError(
            "engineVersion", f"cannot read a version from {text!r}", "use a release like 0.11.0"
        )
    return tuple(int(p) for p in match.group().split("."))


@dataclass(frozen=True)
class VllmRules:
    """What one range of vLLM releases does when it sizes the KV cache."""

    since: Version
    v1: bool  # V1 engine (chunked prefill always on, shared block pool)
    default_util: float  # --gpu-memory-utilization default
    cudagraph_subtracted: bool  # CUDA-graph memory estimated and taken from the budget
    hybrid_manager: bool  # sliding-window groups drop out-of-window blocks (HMA)
    chunked_local_in_hma: bool  # Llama-4 chunked layers handled by HMA (else paid in full)
    gpu_batch_defaults: bool  # >=70 GiB and not A100 -> 8192 tokens / 1024 seqs
    token_formula: str  # blocks | groups | concurrency  ("GPU KV cache size" line)
    legacy_profile: bool  # V0 before 0.6.4: peak from free-memory deltas
    v0_chunked_above_tokens: int | None  # V0 turns chunked prefill on above this max_model_len
    non_torch_tp1_gib: float  # non-torch memory the profile charges at TP 1
    # The start-up check (one max_model_len request must fit) counts the null block the block
    # pool holds back: the request must fit in num_blocks - 1 (vLLM PR #47272, merged
    # 2026-07-01; first verified in 0.32.0 against the real engine, earlier releases not).
    fit_reserves_null_block: bool = False


# Ascending by `since`; the last row whose `since` <= the version applies.
VLLM_RULES: tuple[VllmRules, ...] = (
    VllmRules((0,), False, 0.9, False, False, False, False, "blocks", True, None, 0.8),
    VllmRules((0, 6, 0), False, 0.9, False, False, False, False, "blocks", True, 32768, 0.8),
    VllmRules((0, 6, 4), False, 0.9, False, False, False, False, "blocks", False, 32768, 0.4),
    VllmRules((0, 8, 0), True, 0.9, False, False, False, True, "blocks", False, None, 0.13),
    VllmRules((0, 10, 0), True, 0.9, False, True, False, True, "groups", False, None, 0.13),
    VllmRules((0, 21, 0), True, 0.92, True, True, False, True, "groups", False, None, 0.13),
    VllmRules((0, 23, 0), True, 0.92, True, True, True, True, "concurrency", False, None, 0.13),
    VllmRules(
        (0, 32, 0), True, 0.92, True, True, True, True, "concurrency", False, None, 0.13, True
    ),
)


def vllm_rules(version: str, force_v0: bool | None = None) -> VllmRules:
    """The row for `version`; `force_v0` selects the last V0 row for V1-era releases that
    still shipped V0 (VLLM_USE_V1=0, up to 0.10.x)."""
    parsed = parse_version(version)
    chosen = VLLM_RULES[0]
    for rules in VLLM_RULES:
        if rules.since <= parsed and (not force_v0 or not rules.v1):
            chosen = rules
    return chosen


# --- vLLM batch defaults (EngineArgs.get_batch_defaults, OpenAI API server) ----------------
BIG_GPU_MIN_BYTES = 70 * GIB
BIG_GPU_BATCH = (8192, 1024)  # (max_num_batched_tokens, max_num_seqs)
SMALL_GPU_BATCH = (2048, 256)
LLM_CLASS_BIG_GPU_BATCH = (16384, 1024)
LLM_CLASS_SMALL_GPU_BATCH = (8192, 256)
V0_MAX_NUM_SEQS = 256
V0_MIN_BATCHED_TOKENS = 2048  # V0 without chunked prefill: max(max_model_len, 2048)
VLLM_BLOCK_SIZE = 16
HYBRID_MAMBA_BLOCK_ALIGN = 16  # attention block size for Mamba hybrids is a multiple of 16

# --- calibrated non-KV memory (per rank) ---------------------------------------------------
# V1 activation peak = sampler term + forward term. The sampler dummy run dominates; across the
# three batch configurations observed (1024 seqs/8192 tokens, 1024/1024, 256/2048) it grows
# with vocab x max_num_seqs^2 and hardly with the batched tokens. Fit (docs/adr/0001): 7 rows,
# residuals < 0.1 GiB.
ACT_V1_BYTES_PER_VOCAB_SEQ2 = 0.03758
ACT_V1_BYTES_PER_TOKEN_HIDDEN = 2.56
# Multimodal models: the profiled peak was 0.44x the text-model figure (Mistral-Small-3.2,
# 2.12 GiB vs 4.8 predicted); one observation, so treat it as indicative.
ACT_MULTIMODAL_FRAC = 0.44
# V0 (no chunked prefill) profiles a full batch of max_num_batched_tokens prompt tokens:
# peak ~ tokens x (hidden + intermediate); fit on vllm#10517 (20k and 29k tokens, 2 rows).
ACT_V0_BYTES_PER_TOKEN_WIDTH = 6.12
# Non-torch memory (CUDA context after the baseline, NCCL, custom all-reduce buffers): the
# TP-1 figure is per era (VllmRules.non_torch_tp1_gib: V1 0.13 from llm-d; V0 >= 0.6.4 0.4 from
# vllm#10517/#10360, which count cuBLAS workspaces too; legacy V0 0.8 from PR#4454, PR#2031 and
# bonito#7, because it measured the peak from free-memory deltas); TP >= 2 adds NCCL and
# custom all-reduce buffers.
NON_TORCH_TP1_BYTES = int(0.13 * GIB)
NON_TORCH_TP_EXTRA_BYTES = int(0.42 * GIB)
NON_TORCH_TP_BYTES = NON_TORCH_TP1_BYTES + NON_TORCH_TP_EXTRA_BYTES
# CUDA-graph memory estimate subtracted from >= 0.21 (indicative; the real estimate is
# measured by capturing two graphs per mode and extrapolating).
CUDAGRAPH_DENSE_BYTES = int(0.5 * GIB)
CUDAGRAPH_MOE_BYTES = int(1.0 * GIB)
CUDAGRAPH_REF_SEQS = 512  # the estimate grows with the number of capture sizes

# --- SGLang ----------------------------------------------------------------------------------
SGLANG_MFS_BY_TP: tuple[tuple[int, float], ...] = ((1, 0.88), (2, 0.87), (4, 0.85), (8, 0.81))
SGLANG_MFS_MIN = 0.79  # TP16 and beyond
SGLANG_AUTO_MFS_SINCE: Version = (0, 5, 0)  # reserve-based auto fraction
SGLANG_INIT_TP1_BYTES = int(0.5 * GIB)  # CUDA context + NCCL before the free-memory probe
SGLANG_INIT_TP_BYTES = int(0.85 * GIB)
SGLANG_CHUNKED_PREFILL_BY_GIB: tuple[tuple[float, int], ...] = (
    (20, 2048),
    (60, 4096),
    (160, 8192),
    (float("inf"), 16384),
)
SGLANG_CUDA_GRAPH_BS = 256

# --- TGI / TensorRT-LLM ------------------------------------------------------------------------
TGI_WIGGLE_ROOM = 0.90  # TGI_WIGGLE_ROOM default: fraction of free memory given to KV blocks
TGI_BLOCK_SIZE = 1  # flashinfer attention (default since v3)
TGI_MAX_CONCURRENT = 128
TGI_PREFILL_TOKENS = 4096
TRTLLM_FREE_FRACTION = 0.9  # kv_cache_free_gpu_memory_fraction
TRTLLM_TOKENS_PER_BLOCK = 32
TRTLLM_MAX_BATCH = 2048
TRTLLM_MAX_NUM_TOKENS = 8192


def sglang_default_mfs(version: str, tp: int, gpu_bytes: int) -> float:
    """SGLang's default mem_fraction_static: by TP in old releases, reserve-based in new ones."""
    if parse_version(version) < SGLANG_AUTO_MFS_SINCE:
        for max_tp, frac in SGLANG_MFS_BY_TP:
            if tp <= max_tp:
                return frac
        return SGLANG_MFS_MIN
    gpu_gib = gpu_bytes / GIB
    chunk = next(c for limit, c in SGLANG_CHUNKED_PREFILL_BY_GIB if gpu_gib < limit)
    reserved_mb = 512 + max(chunk, 2048) * 1.5 + SGLANG_CUDA_GRAPH_BS * 2 + tp / 8 * 1024
    reserved_gib = reserved_mb / 1024
    if gpu_gib > 60:
        reserved_gib = max(reserved_gib, 10.0)
    return round((gpu_gib - reserved_gib) / gpu_gib, 3)


def sglang_chunked_prefill(gpu_bytes: int) -> int:
    gpu_gib = gpu_bytes / GIB
    return next(c for limit, c in SGLANG_CHUNKED_PREFILL_BY_GIB if gpu_gib < limit)
