"""The caching allocator replay (capacity/caching.py) and what vLLM releases before 0.6.4 charge
for it (capacity/legacy.py).

Every expected figure is worked out by hand from PyTorch's allocator rules (512-byte rounding;
segments of 2 MiB, 20 MiB or the request rounded to 2 MiB; best fit; a split only when more
than 1 MiB remains in the large pool; free neighbours merge) and from the order llama.py
allocates a layer's tensors, as the comments beside each test show.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvscale.capacity import PlanRequest, find_gpu, find_model, plan_capacity
from kvscale.capacity.caching import CachingAllocator
from kvscale.capacity.legacy import LayerShape, reserved_slack_bytes
from kvscale.capacity.rules import vllm_rules

MIB = 1024**2


def test_a_freed_block_serves_the_next_request_that_fits() -> None:
    heap = CachingAllocator()
    heap.free(heap.malloc(64 * MIB))
    heap.malloc(64 * MIB)
    assert heap.reserved_bytes == 64 * MIB
    heap.malloc(65 * MIB)  # no cached block holds it: a segment of its own, rounded to 2 MiB
    assert heap.reserved_bytes == 64 * MIB + 66 * MIB


def test_requests_under_10_mib_share_20_mib_segments_and_small_ones_2_mib() -> None:
    heap = CachingAllocator()
    heap.malloc(3 * MIB)
    heap.malloc(3 * MIB)
    assert heap.reserved_bytes == 20 * MIB
    heap.malloc(600 * 1024)  # the small pool: its own 2 MiB segment
    heap.malloc(600 * 1024)
    assert heap.reserved_bytes == 22 * MIB


def test_a_block_is_split_only_when_more_than_1_mib_would_remain() -> None:
    heap = CachingAllocator()
    heap.free(heap.malloc(64 * MIB))
    heap.malloc(63 * MIB + MIB // 2)  # 0.5 MiB would remain: the whole block is handed out
    assert heap.allocated_bytes == 64 * MIB
    other = CachingAllocator()
    other.free(other.malloc(64 * MIB))
    other.malloc(62 * MIB)  # 2 MiB remain: split off and cached
    other.malloc(2 * MIB)  # ... and served from there
    assert (other.allocated_bytes, other.reserved_bytes) == (64 * MIB, 64 * MIB)


def test_freed_neighbours_merge_back_into_one_block() -> None:
    heap = CachingAllocator()
    heap.free(heap.malloc(64 * MIB))
    first, second = heap.malloc(30 * MIB), heap.malloc(30 * MIB)
    heap.free(first)
    heap.free(second)
    heap.malloc(64 * MIB)  # fits only if the two halves and the tail merged again
    assert heap.reserved_bytes == 64 * MIB


def test_best_fit_keeps_the_larger_block_for_a_larger_request() -> None:
    heap = CachingAllocator()
    big, small = heap.malloc(100 * MIB), heap.malloc(40 * MIB)
    heap.free(big)
    heap.free(small)
    heap.malloc(40 * MIB)  # the 40 MiB block, not a piece of the 100 MiB one
    heap.malloc(100 * MIB)
    assert heap.reserved_bytes == 140 * MIB
    assert heap.peak_allocated_bytes == 140 * MIB


# Mistral-7B on one rank, 32,768 prompt tokens, bf16: per token the residual, the normed input,
# the QKV output (4,096 + 2 x 1,024 wide), the backend's output and the kernel's result (4,096
# each), the output projection, gate/up (28,672), SiLU-and-mul (14,336) and the down projection.
MISTRAL = LayerShape(
    hidden=4096, q_width=4096, kv_width=2048, intermediate=14336, num_layers=32
)  # fmt: skip
TOKENS = 32768


def test_the_attention_temporaries_stay_reserved_beside_the_mlp_peak() -> None:
    """Layer 0 gives every tensor its own segment except the output projection (into the
    freed kernel result's 256 MiB block) and the down projection (into the freed normed
    input's); the peak is the MLP's residual + attention output + gate/up + SiLU + down. What
    stays reserved beyond it: the QKV output's and the backend output's segments, as later
    layers reuse every block. 640 MiB = (6,144 + 4,096) x 32,768 x 2 bytes. The sampler's
    [256 x 32,768] tensors (7.6 MiB-64 MiB) all fit the cached gate/up segment."""
    slack = reserved_slack_bytes(MISTRAL, tokens=TOKENS, rows=256, vocab=32768, dtype_bytes=2)
    assert slack == (6144 + 4096) * TOKENS * 2


def test_the_slack_scales_with_the_prompt_tokens() -> None:
    # Every tensor is a multiple of 2 MiB from 8,192 tokens on, so the layout scales exactly.
    shape = {"rows": 256, "vocab": 32768, "dtype_bytes": 2}
    small = reserved_slack_bytes(MISTRAL, tokens=TOKENS // 4, **shape)  # type: ignore[arg-type]
    large = reserved_slack_bytes(MISTRAL, tokens=TOKENS, **shape)  # type: ignore[arg-type]
    assert small > 0 and large == 4 * small


def test_a_moe_layer_writes_in_place_and_its_router_keeps_a_small_segment() -> None:
    """Mixtral-8x7B: the router logits ([T, 8] bf16, 512 KiB) take a 2 MiB small-pool
    segment; `fused_experts` caches 1-3 ([T, 2, 28,672], [2T, 14,336], [T, 2, 4,096]) get
    segments of their own, reused by every later layer, and its output overwrites the
    attention output, so no down projection lands in a freed 256 MiB block. Left beyond the
    peak (residual, attention output, router, caches): layer 0's normed input, the QKV output,
    the backend output's segment and the router segment's unused 1.5 MiB."""
    mixtral = replace(MISTRAL, num_experts=8, experts_per_token=2, expert_width=14336)
    slack = reserved_slack_bytes(mixtral, tokens=TOKENS, rows=256, vocab=32000, dtype_bytes=2)
    assert slack == (4096 + 6144 + 4096) * TOKENS * 2 + 2 * MIB - 512 * 1024


@pytest.mark.parametrize(
    ("version", "legacy"),
    [("0.3.3", True), ("0.6.3", True), ("0.6.4.dev9", True), ("0.6.4", False), ("0.11.0", False)],
)
def test_legacy_profile_ends_at_the_0_6_4_release(version: str, legacy: bool) -> None:
    # A development build of 0.6.4 precedes the release (PEP 440) and keeps its rules.
    assert vllm_rules(version).legacy_profile is legacy


def test_only_legacy_releases_charge_the_slack() -> None:
    request = PlanRequest(
        model=find_model("mistralai/Mistral-7B-Instruct-v0.3"),
        gpu=find_gpu("a10g"),
        engine="vllm",
        engine_version="0.6.3",  # type: ignore[arg-type]
        max_model_len_tokens=TOKENS,
        max_num_seqs=256,
    )
    legacy = plan_capacity(request)
    later = plan_capacity(replace(request, engine_version="0.6.4"))  # type: ignore[arg-type]
    assert legacy.max_num_batched_tokens == later.max_num_batched_tokens == TOKENS
    assert legacy.activation_bytes - later.activation_bytes == (6144 + 4096) * TOKENS * 2
