"""KV layout per attention kind: bytes per token, pages, groups, blocks per request.

Expected values are derived by hand from the reference formulas (shown in each row):
full/sliding/chunked page = block * kv_heads_per_rank * (head_k + head_v) * dtype_bytes;
MLA = block * (kv_lora_rank + qk_rope_head_dim) * dtype_bytes; hybrid group_size = min count,
or max count when max < 1.5 * min.
"""

from __future__ import annotations

from collections import Counter

import pytest

from kvscale.capacity import GIB, PlanRequest, find_gpu, find_model, plan_capacity
from kvscale.capacity.types import LayerKind

H100 = find_gpu("H100")


def _plan(model_id: str, **kw: object) -> object:
    fields = {"model": find_model(model_id), "gpu": H100, "kv_cache_memory_bytes": 10 * GIB}
    fields.update(kw)
    return plan_capacity(PlanRequest(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model_id", "tp", "kv_dtype", "expected"),
    [
        ("Qwen/Qwen3-8B", 1, "auto", 36 * 8 * (128 + 128) * 2),  # GQA
        ("meta-llama/Llama-2-7b-hf", 1, "auto", 32 * 32 * (128 + 128) * 2),  # MHA
        ("tiiuae/falcon-7b", 1, "auto", 32 * 1 * (64 + 64) * 2),  # MQA
        ("Qwen/Qwen3-8B", 1, "fp8", 36 * 8 * (128 + 128) * 1),  # fp8 KV halves it
        ("Qwen/Qwen3-8B", 2, "auto", 36 * 4 * (128 + 128) * 2),  # heads split over TP
        ("Qwen/Qwen3-235B-A22B", 8, "auto", 94 * 1 * (128 + 128) * 2),  # TP8 > 4 KV heads
        ("deepseek-ai/DeepSeek-V3", 8, "auto", 61 * (512 + 64) * 2),  # MLA latent, no TP split
        ("deepseek-ai/DeepSeek-V3", 1, "auto", 61 * (512 + 64) * 2),
        ("google/gemma-2-9b-it", 1, "auto", 21 * 8 * (256 + 256) * 2),  # global layers only
        ("openai/gpt-oss-120b", 4, "auto", 18 * 2 * (64 + 64) * 2),
    ],
)
def test_kv_bytes_per_token(model_id: str, tp: int, kv_dtype: str, expected: int) -> None:
    plan = _plan(model_id, tensor_parallel=tp, kv_cache_dtype=kv_dtype, engine_version="0.11.0")
    assert plan.kv_bytes_per_token == expected


@pytest.mark.parametrize(
    ("model_id", "kinds"),
    [
        ("google/gemma-2-9b-it", {"sliding": 21, "full": 21}),  # Gemma-2 alternation
        ("google/gemma-3-27b-it", {"sliding": 52, "full": 10}),  # every 6th layer global
        ("openai/gpt-oss-20b", {"sliding": 12, "full": 12}),  # layer_types
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", {"chunked": 36, "full": 12}),  # NoPE 1/4
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", {"linear": 36, "full": 12}),  # interval 4
        ("ai21labs/AI21-Jamba-1.5-Mini", {"linear": 28, "full": 4}),  # period 8, offset 4
        ("nvidia/Nemotron-H-56B-Base-8K", {"linear": 54, "none": 54, "full": 10}),
        ("Qwen/Qwen2-7B-Instruct", {"full": 28}),  # use_sliding_window: false -> full
        ("microsoft/Phi-3-mini-4k-instruct", {"sliding": 32}),  # window on every layer
        ("deepseek-ai/DeepSeek-V3", {"mla": 61}),
    ],
)
def test_layer_kinds_from_config(model_id: str, kinds: dict[str, int]) -> None:
    counted = Counter(k.value for k in find_model(model_id).layer_kinds)
    assert dict(counted) == kinds


@pytest.mark.parametrize(
    ("model_id", "version", "tp", "length", "batched", "groups", "group_size", "per_request"),
    [
        # gpt-oss-120b TP4: 18 SW(128) + 18 full -> group_size 18 (18 < 1.5*18), 2 groups;
        # full cdiv(16384,16)=1024; SW cdiv(min(127+2048,16384),16)+1 = 136+1 = 137
        ("openai/gpt-oss-120b", "0.10.1.1", 4, 16384, 2048, 2, 18, 1024 + 137),
        # Gemma-3-27b: 52 SW + 10 full -> group_size 10; SW cdiv(52,10)=6 groups + 1 full;
        # full cdiv(8192,16)=512; each SW group cdiv(min(1023+2048,8192),16)+1 = 192+1 = 193
        ("google/gemma-3-27b-it", "0.11.0", 1, 8192, 2048, 7, 10, 512 + 6 * 193),
        # Llama-4 chunked layers in HMA (>= 0.14: the env default flips to "1"): group_size 12
        # -> 3 chunked + 1 full groups;
        # full cdiv(32768,16)=2048; chunked cdiv(min(8192+8192,32768),16)=1024 each
        (
            "meta-llama/Llama-4-Scout-17B-16E-Instruct",
            "0.14.0",
            8,
            32768,
            8192,
            4,
            12,
            2048 + 3 * 1024,
        ),
        # before that, chunked layers pay full length: one uniform group of 48
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "0.13.0", 8, 32768, 8192, 1, 48, 2048),
        # V0 (< 0.8) has no hybrid manager: Gemma-2 sliding layers pay full length
        ("google/gemma-2-9b-it", "0.6.4", 1, 8192, 8192, 1, 42, 512),
    ],
)
def test_hybrid_groups_and_blocks_per_request(
    model_id: str, version: str, tp: int, length: int, batched: int,
    groups: int, group_size: int, per_request: int,
) -> None:  # fmt: skip
    plan = _plan(
        model_id, engine_version=version, tensor_parallel=tp, max_model_len_tokens=length,
        max_num_batched_tokens=batched,
    )  # fmt: skip
    assert (plan.num_groups, plan.group_size_layers) == (groups, group_size)
    assert plan.blocks_per_max_len_request == per_request


@pytest.mark.parametrize(
    ("model_id", "block_size", "page_bytes", "groups", "per_request"),
    [
        # Qwen3-Next: attention 2 heads*(256+256)*2 = 2048 B/token; GDN state per layer
        # 3*(2*16*128+32*128) + 32*128*128 = 548864 elems * 2 B = 1097728 B;
        # block = 16*cdiv(1097728, 16*2048) = 16*34 = 544; page = 544*2048 = 1114112;
        # group_size 12 -> 3 linear + 1 full groups; full cdiv(32768,544)=61, linear 1 each
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", 544, 544 * 2048, 4, 61 + 3),
        # Jamba: attention 8*(128+128)*2 = 4096 B/token; Mamba 3*8192+8192*16 = 155648 elems
        # * 2 = 311296 B; block = 16*cdiv(311296, 65536) = 80; group_size 4 -> 7 + 1 groups;
        # full cdiv(32768,80)=410
        ("ai21labs/AI21-Jamba-1.5-Mini", 80, 80 * 4096, 8, 410 + 7),
        # Nemotron-H: Mamba2 3*(16384+2*8*256)+256*64*256 = 4255744 elems * 2 = 8511488 B;
        # block = 16*cdiv(8511488, 65536) = 16*130 = 2080; group_size 10 -> 6 + 1 groups;
        # full cdiv(32768,2080)=16
        ("nvidia/Nemotron-H-56B-Base-8K", 2080, 2080 * 4096, 7, 16 + 6),
    ],
)
def test_linear_hybrids_raise_block_size(
    model_id: str, block_size: int, page_bytes: int, groups: int, per_request: int
) -> None:
    plan = _plan(model_id, engine_version="0.11.0", max_model_len_tokens=32768)
    assert plan.block_size_tokens == block_size
    assert plan.page_bytes == page_bytes
    assert plan.num_groups == groups
    assert plan.blocks_per_max_len_request == per_request
    assert any(g.kind is LayerKind.LINEAR for g in plan.kv_groups)


@pytest.mark.parametrize(
    ("kv_bytes", "blocks"),
    [
        # Llama-3.1-8B: 32 layers * 8 * 256 * 2 = 131072 B/token; 16-token blocks = 2 MiB
        (GIB, 512),
        (GIB - 1, 511),  # one byte short of a block: rounds down
        (GIB + 2 * 1024**2 - 1, 512),
    ],
)
def test_block_rounding(kv_bytes: int, blocks: int) -> None:
    plan = _plan("meta-llama/Llama-3.1-8B-Instruct", kv_cache_memory_bytes=kv_bytes)
    assert plan.num_blocks == blocks
    assert plan.kv_cache_tokens == blocks * 16


@pytest.mark.parametrize(
    ("version", "fits_at_exact_pool"),
    [("0.31.0", True), ("0.32.0", False)],
)
def test_start_up_check_reserves_the_null_block_from_0_32(
    version: str, fits_at_exact_pool: bool
) -> None:
    """A pool of exactly one max-length request's blocks: 0.32 refuses it (the block pool holds
    one block back, vLLM PR #47272), and its largest fitting context is one block shorter."""
    block_bytes = 2 * 1024**2  # Llama-3.1-8B: 16 tokens x 131072 B
    request_blocks = 8192 // 16
    plan = _plan(
        "meta-llama/Llama-3.1-8B-Instruct",
        engine_version=version,
        max_model_len_tokens=8192,
        kv_cache_memory_bytes=request_blocks * block_bytes,
    )
    assert plan.num_blocks == request_blocks
    assert plan.fits is fits_at_exact_pool
    usable = request_blocks if fits_at_exact_pool else request_blocks - 1
    assert plan.max_fitting_context_tokens == usable * 16
    bigger = _plan(
        "meta-llama/Llama-3.1-8B-Instruct",
        engine_version=version,
        max_model_len_tokens=8192,
        kv_cache_memory_bytes=(request_blocks + 1) * block_bytes,
    )
    assert bigger.fits
