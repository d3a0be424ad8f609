"""Engine-release rules and the non-KV memory constants, as tables.

Every behaviour that changed between engine releases is one row here; the planner looks the
row up once (by `EngineVersion`, so "0.21" and "0.21.0" are one release) and never branches
on version numbers itself. Sources: vLLM's own wheels (`pip download vllm==X --no-deps`; file
and release cited per row), the reference notes on vLLM's memory profiling and the measured
logs in bench/data (docs/adr/0001-capacity-model.md, docs/adr/0012-physical-non-kv-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity.nonkv import SamplerPath
from kvscale.capacity.release import EngineVersion, latest_since
from kvscale.capacity.types import GIB, GpuSpec, PeerLink

_S, _F, _T, _V2 = SamplerPath.SORT, SamplerPath.FLASHINFER, SamplerPath.TRITON, SamplerPath.V2

# Non-torch memory per rank, GiB (sources below, at NON_TORCH_TP1_BYTES): V1 up to 0.16 and
# from 0.17 (TP 1, and what TP >= 2 adds).
NON_TORCH_TP1_GIB = 0.13
NON_TORCH_TP_EXTRA_GIB = 0.42
NON_TORCH_TP1_GIB_V017 = 0.25
NON_TORCH_TP_EXTRA_GIB_V017 = 1.85
# V0 before 0.6.4 (the profile charged from free-memory deltas), TP 1.
NON_TORCH_LEGACY_TP1_GIB = 0.23
# ROCm (AMD GPUs), every release: at TP 1, and what each further rank adds (notes below).
ROCM_NON_TORCH_TP1_GIB = 1.95
ROCM_NON_TORCH_PER_PEER_GIB = 1.06


@dataclass(frozen=True)
class VllmRules:
    """What one range of vLLM releases does when it sizes the KV cache."""

    since: EngineVersion
    v1: bool  # V1 engine (chunked prefill always on, shared block pool)
    default_util: float  # --gpu-memory-utilization default
    cudagraph_subtracted: bool  # CUDA-graph memory estimated and taken from the budget
    hybrid_manager: bool  # sliding-window groups drop out-of-window blocks (HMA)
    chunked_local_in_hma: bool  # Llama-4 chunked layers handled by HMA (else paid in full)
    gpu_batch_defaults: str  # "" none | "name": H100/H200 by device name | "memory": >=70 GiB
    token_formula: str  # blocks | groups | concurrency  ("GPU KV cache size" line)
    legacy_profile: bool  # V0 before 0.6.4: peak from free-memory deltas
    v0_chunked_above_tokens: int | None  # V0 turns chunked prefill on above this max_model_len
    non_torch_tp1_gib: float  # non-torch memory the profile charges at TP 1
    sampler_paths: tuple[SamplerPath, ...]  # top-k/top-p paths this release can run
    # The start-up check (one max_model_len request must fit) counts the null block the block
    # pool holds back: the request must fit in num_blocks - 1 (vLLM PR #47272, merged
    # 2026-07-01; first verified in 0.32.0 against the real engine, earlier releases not).
    fit_reserves_null_block: bool = False
    # What TP >= 2 adds per rank (NCCL and all-reduce buffers allocated during the profile run),
    # as measured over NVLink: the figure every link is charged unless it has its own below.
    non_torch_tp_extra_gib: float = NON_TORCH_TP_EXTRA_GIB
    # Fused-MoE scratch comes from a persistent workspace (v1/worker/workspace.py, first in the
    # 0.13.0 wheel; 0.12.0's modular_kernel.py allocates per call): live when the sampler runs.
    moe_workspace: bool = False
    # A link's own TP >= 2 figure, once two independent sources measure it on this release
    # range (none yet: see the non-torch notes below); links not listed pay the NVLink figure.
    non_torch_tp_extra_by_link: tuple[tuple[PeerLink, float], ...] = ()
    # The non-torch figure holds the CUDA context: 0.8.0-0.9.0 charge total − torch allocated;
    # the other rows count from a snapshot taken once the context exists (0.9.1 on, the
    # legacy free-memory deltas) or are charged as if they did (0.6.4-0.7: the safe side).
    non_torch_has_context: bool = False

    def non_torch_bytes(self, tp: int, gpu: GpuSpec) -> int:
        """Non-torch memory the profile charges per rank at tensor parallelism `tp` on `gpu`:
        by its peer link; a ROCm build (an AMD GPU) has its own figures on every release."""
        if gpu.rocm:
            return int((ROCM_NON_TORCH_TP1_GIB + (tp - 1) * ROCM_NON_TORCH_PER_PEER_GIB) * GIB)
        extra = 0.0
        if tp > 1:
            by_link = dict(self.non_torch_tp_extra_by_link)
            extra = by_link.get(gpu.peer_link, self.non_torch_tp_extra_gib)
        return int(self.non_torch_tp1_gib * GIB) + int(extra * GIB)


def _row(since: str, *cells: object, **named: object) -> VllmRules:
    return VllmRules(EngineVersion.parse(since), *cells, **named)  # type: ignore[arg-type]


# Ascending by `since`; the last row whose `since` <= the version applies. Sampler paths:
# 0.8.4-0.11.0 FlashInfer by default when it imports, else PyTorch sort
# (v1/sample/ops/topk_topp_sampler.py 0.11.0, `elif envs.VLLM_USE_FLASHINFER_SAMPLER is not
# False`); 0.11.1-0.16 sort, FlashInfer opt-in (`if envs.VLLM_USE_FLASHINFER_SAMPLER:`);
# >= 0.17 Triton top-k/top-p from 8 rows (`apply_top_k_top_p`, 0.20.0), FlashInfer opt-in;
# Model Runner V2 (v1/worker/gpu/, allow-listed models) from 0.23 (approximate).
# Llama-4's chunked-local layers join the hybrid KV cache manager by default from 0.14.0
# (`VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE` defaults to "1" in the 0.14.0 wheel's
# envs.py, "0" in 0.13.0; a 0.19.0 Llama-4-Scout log counts 4 groups of blocks per token).
# 0.20.0: util 0.92 (config/cache.py L66) and VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default
# "1" (envs.py L1725; subtracted in v1/worker/gpu_worker.py L401) — both read in the 0.20.0
# wheel. 0.8.0-0.9.0 charge the CUDA context as non-torch (total − torch allocated); from
# 0.9.1 only the increase since start-up counts. 0.8.x picks the big-GPU batch defaults by
# device name (H100/H200); later releases by memory (>= 70 GiB and not an A100).
_NT1, _NT17, _NTX17 = NON_TORCH_TP1_GIB, NON_TORCH_TP1_GIB_V017, NON_TORCH_TP_EXTRA_GIB_V017
_NT_LEGACY = NON_TORCH_LEGACY_TP1_GIB
VLLM_RULES: tuple[VllmRules, ...] = (
    _row("0", False, 0.9, False, False, False, "", "blocks", True, None, _NT_LEGACY, (_S,)),
    _row("0.6.0", False, 0.9, False, False, False, "", "blocks", True, 32768, _NT_LEGACY, (_S,)),
    _row("0.6.4", False, 0.9, False, False, False, "", "blocks", False, 32768, 0.4, (_S,)),
    _row("0.8.0", True, 0.9, False, False, False, "name", "blocks", False, None, 0.5, (_S, _F),
         non_torch_has_context=True),
    _row("0.9.0", True, 0.9, False, False, False, "memory", "blocks", False, None, 0.5, (_S, _F),
         non_torch_has_context=True),
    _row("0.9.1", True, 0.9, False, False, False, "memory", "blocks", False, None, _NT1, (_S, _F)),
    _row("0.10.0", True, 0.9, False, True, False, "memory", "groups", False, None, _NT1, (_S, _F)),
    _row("0.13.0", True, 0.9, False, True, False, "memory", "groups", False, None, _NT1, (_S, _F),
         moe_workspace=True),
    _row("0.14.0", True, 0.9, False, True, True, "memory", "groups", False, None, _NT1, (_S, _F),
         moe_workspace=True),
    _row("0.17.0", True, 0.9, False, True, True, "memory", "groups", False, None, _NT17,
         (_T, _F), non_torch_tp_extra_gib=_NTX17, moe_workspace=True),
    _row("0.20.0", True, 0.92, True, True, True, "memory", "groups", False, None, _NT17,
         (_T, _F), non_torch_tp_extra_gib=_NTX17, moe_workspace=True),
    _row(
        "0.23.0", True, 0.92, True, True, True, "memory", "concurrency", False, None, _NT17,
        (_T, _F, _V2), non_torch_tp_extra_gib=_NTX17, moe_workspace=True,
    ),
    _row(
        "0.32.0", True, 0.92, True, True, True, "memory", "concurrency", False, None, _NT17,
        (_T, _F, _V2), True, non_torch_tp_extra_gib=_NTX17, moe_workspace=True,
    ),
)  # fmt: skip


# Rotary cos/sin table layout (capacity/rope.py): multimodal rope holds 4x the positions and
# Phi-3's longrope keeps one concatenated buffer, as in the 0.8.3 wheel; 0.6.4.post1 has x1 and
# three buffers. The change lies between those wheels; 0.8.0 is where the newer layout starts.
# Model code, shared by V0 and V1: it goes by the release, not by the engine's rules row.
ROPE_V08_LAYOUT_SINCE = EngineVersion.parse("0.8.0")


def vllm_rules(version: EngineVersion | str, force_v0: bool | None = None) -> VllmRules:
    """The row for `version`; `force_v0` selects the last V0 row for V1-era releases that
    still shipped V0 (VLLM_USE_V1=0, up to 0.10.x)."""
    rows = (rules for rules in VLLM_RULES if not force_v0 or not rules.v1)
    return latest_since(rows, EngineVersion.parse(version)) or VLLM_RULES[0]


# --- vLLM batch defaults (EngineArgs.get_batch_defaults, OpenAI API server) ----------------
BIG_GPU_MIN_BYTES = 70 * GIB
BIG_GPU_NAMES = ("h100", "h200")  # 0.8.x: the big-GPU defaults by device name
BIG_GPU_BATCH = (8192, 1024)  # (max_num_batched_tokens, max_num_seqs)
SMALL_GPU_BATCH = (2048, 256)
LLM_CLASS_BIG_GPU_BATCH = (16384, 1024)
LLM_CLASS_SMALL_GPU_BATCH = (8192, 256)
V0_MAX_NUM_SEQS = 256
V0_MIN_BATCHED_TOKENS = 2048  # V0 without chunked prefill: max(max_model_len, 2048)
# V0 with chunked prefill (on by default above 32k from 0.6.0) and no --max-num-batched-tokens:
# 512 (`SchedulerConfig.__init__`, config.py of the 0.6.0 and 0.6.4 wheels).
V0_CHUNKED_BATCHED_TOKENS = 512
VLLM_BLOCK_SIZE = 16
HYBRID_MAMBA_BLOCK_ALIGN = 16  # attention block size for Mamba hybrids is a multiple of 16

# --- non-KV memory besides the activation peak (per rank; the peak is in nonkv.py) ---------
# Non-torch memory (CUDA context after the baseline, NCCL, custom all-reduce buffers) is per
# era, from measured start-up logs (no release's source states it):
# - TP 1 (VllmRules.non_torch_tp1_gib): V1 0.9.1-0.16 0.13 from llm-d-benchmark's 0.11.0 logs;
#   V1 >= 0.17 0.25 from llm-d-planner's 0.19.0 logs (0.24-0.27 on 20 H100 starts; myoceane's
#   0.19.0 A100 log implies 0.48); V0 >= 0.6.4 0.4 from vllm#10517/#10360, which count cuBLAS
#   workspaces too; legacy V0 (before 0.6.4) 0.23, the median over the seven sources that
#   measure it (PR#4454 0.35, PR#2031 0.86, bonito#7 0.23, Qwen3#16 0.89, zhjunqin 0.20,
#   llm-tracker 0.21, snap-cluster-setup 0.16; each source's median row), once the allocator's
#   reserved slack these releases charge is in the activation (legacy.py).
# - TP >= 2 adds NCCL and all-reduce buffers (VllmRules.non_torch_tp_extra_gib): 0.42 from
#   llm-d-benchmark's 0.11.0 H100 TP-2 logs; 1.85 from 0.17 on, from llm-d-planner's 0.19.0
#   H100 TP-2/TP-4 logs (2.06-2.21 GiB per rank in all, every rank equal) — the same step
#   vLLM PR#10511's 0.6.5 H100 logs show (1.79 GiB at TP 1, 3.58 at TP 2). Which release
#   between 0.11.0 and 0.19.0 grew it is not measured: 0.17 is where the Triton-sampler era
#   starts, and on the releases in between the planner charges the smaller figure.
# - Both TP >= 2 figures are NVLink measurements, and the buffers depend on the link (NCCL's
#   P2P channels and NVLS multicast buffers, vLLM's custom all-reduce IPC buffers exist over
#   NVLink; PCIe GPUs fall back to fewer channels and host memory, and vLLM turns custom
#   all-reduce off there beyond two GPUs). Every link (GpuSpec.peer_link: PCIe, xGMI, unknown)
#   is charged the NVLink figure, the larger and so the safe one, until two independent
#   sources measure a link's own (VllmRules.non_torch_tp_extra_by_link). One source each so
#   far, both PCIe: a two-L4 0.28.0 start implies ~0 GiB extra, an eight-L40S 0.10.2 start
#   logs 0.21 GiB non-torch in all (~0.08 extra); ADR 0012.
# - ROCm builds charge far more, on every era measured (V0 0.6.3-0.6.5 dev builds on MI300X;
#   the HIP runtime, rocBLAS/hipBLASLt workspaces and RCCL are not the CUDA stack's): 1.60,
#   2.02 and 1.50-2.00 GiB at TP 1 on three sources (rocm-blogs, the Hot Aisle notes, AUGMXNT's
#   notebooks, median 1.95; ROCM_NON_TORCH_TP1_GIB, the median of the three), and what TP >= 2
#   adds grows with the number of peers, as RCCL's per-peer buffers over the all-to-all xGMI
#   links would: 0.84 GiB at TP 2 and 0.91-1.03 per peer at TP 8 (AUGMXNT, median 0.91), 1.06
#   per peer at TP 8 (Hot Aisle), 1.07 (seungrokj's 0.6.5 dev build);
#   ROCM_NON_TORCH_PER_PEER_GIB, the median of the three. All measured with the allocator's
#   reserved slack of the legacy releases in the activation (legacy.py). No V1 ROCm log is
#   measured: they are charged the same (the larger figure, the safe side).
# A CUDA process's context (driver state, the kernels loaded so far) with lazy module loading,
# CUDA >= 11.7: about 300 MB (a PyTorch maintainer's measurement, pytorch/pytorch#107667). It
# holds device memory while the weights load; the non-torch charges that count from a snapshot
# taken after it (VllmRules.non_torch_has_context False) leave it out, SGLang's start-up charge
# and ROCm's measured figures hold their runtime's (Budget.non_torch_holds_context).
CUDA_CONTEXT_BYTES = 300 * 1024 * 1024
NON_TORCH_TP1_BYTES = int(NON_TORCH_TP1_GIB * GIB)
NON_TORCH_TP_EXTRA_BYTES = int(NON_TORCH_TP_EXTRA_GIB * GIB)
NON_TORCH_TP_BYTES = NON_TORCH_TP1_BYTES + NON_TORCH_TP_EXTRA_BYTES
# CUDA-graph memory estimate subtracted from 0.20.0 on (indicative; the engine measures it by
# capturing two graphs per mode and extrapolating; llm-d's 0.11.0 logs show 0.39-1.03 GiB).
CUDAGRAPH_DENSE_BYTES = int(0.5 * GIB)
CUDAGRAPH_MOE_BYTES = int(1.0 * GIB)
CUDAGRAPH_REF_SEQS = 512  # the estimate grows with the number of capture sizes

# --- SGLang ----------------------------------------------------------------------------------
SGLANG_MFS_BY_TP: tuple[tuple[int, float], ...] = ((1, 0.88), (2, 0.87), (4, 0.85), (8, 0.81))
SGLANG_MFS_MIN = 0.79  # TP16 and beyond
SGLANG_AUTO_MFS_SINCE = EngineVersion.parse("0.5.0")  # reserve-based auto fraction
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


def sglang_default_mfs(version: EngineVersion, tp: int, gpu_bytes: int) -> float:
    """SGLang's default mem_fraction_static: by TP in old releases, reserve-based in new ones."""
    if version < SGLANG_AUTO_MFS_SINCE:
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
