"""KV-cache layout: page bytes per layer, vLLM's KV-cache groups, blocks per request.

Mirrors vLLM's KV-cache spec/grouping rules (see docs/capacity.md): every layer gets a page
(one block of `block_size` tokens, per rank); layers of one kind form groups of equal size
that share one block pool; a request needs blocks in every group.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.geometry import DTYPE_BYTES
from kvscale.capacity.types import KvGroup, LayerKind, ModelGeometry

# KV element width by --kv-cache-dtype ("auto" follows the model dtype): the model dtypes
# plus the 8-bit cache formats
KV_DTYPE_BYTES: dict[str, float] = {
    **DTYPE_BYTES,
    **dict.fromkeys(("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fn", "fp8_inc", "int8"), 1),
}
# packed 4-bit with one fp8 scale per 16 elements
NVFP4_BYTES_PER_ELEM = 0.5 + 1 / 16
PER_TOKEN_HEAD_SCALE_BYTES = 4  # int8/fp8_per_token_head: one fp32 scale per token and head


def kv_head_bytes(dtype: str, model_dtype_bytes: int, head_dim: int) -> int:
    """Bytes one token of one KV head of width `head_dim` occupies in the cache."""
    key = dtype.strip().lower()
    if key == "auto":
        return head_dim * model_dtype_bytes
    if key in KV_DTYPE_BYTES:
        return int(head_dim * KV_DTYPE_BYTES[key])
    if key in ("nvfp4", "nvfp4_4over6"):
        return int(head_dim * NVFP4_BYTES_PER_ELEM)
    if key in ("int8_per_token_head", "fp8_per_token_head"):
        return head_dim + PER_TOKEN_HEAD_SCALE_BYTES
    raise CapacityInputError(
        "kvCacheDtype", f"unknown KV cache dtype {dtype!r}", "use auto, bfloat16, fp8 or nvfp4"
    )


def kv_heads_per_rank(model: ModelGeometry, tp: int) -> int:
    """Heads are split across TP ranks and replicated once TP exceeds them."""
    return max(1, model.num_kv_heads // tp)


def token_bytes_per_layer(model: ModelGeometry, kind: LayerKind, tp: int, kv_dtype: str) -> int:
    """Bytes one token adds to one attention layer on one rank (0 for state/no-KV layers)."""
    if kind is LayerKind.MLA:  # one latent, not split by TP
        width = (model.kv_lora_rank or 0) + (model.qk_rope_head_dim or 0)
        return kv_head_bytes(kv_dtype, model.dtype_bytes, width)
    if kind in (LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED):
        heads = kv_heads_per_rank(model, tp)
        k = kv_head_bytes(kv_dtype, model.dtype_bytes, model.head_dim_k)
        v = kv_head_bytes(kv_dtype, model.dtype_bytes, model.head_dim_v)
        return heads * (k + v)
    return 0


def window_of(model: ModelGeometry, kind: LayerKind) -> int | None:
    if kind is LayerKind.SLIDING:
        return model.sliding_window_tokens
    if kind is LayerKind.CHUNKED:
        return model.attention_chunk_tokens
    return None


def linear_state_bytes_per_rank(model: ModelGeometry, tp: int) -> int:
    """Mamba/GDN state of one layer on one rank (heads are split by TP)."""
    return -(-model.linear_state_bytes_per_layer // tp)


def hybrid_mamba_block_size(attn_token_bytes: int, state_bytes: int, align: int) -> int:
    """vLLM raises the attention block size of Mamba hybrids so a page holds the state."""
    return align * -(-state_bytes // (align * attn_token_bytes))


@dataclass(frozen=True)
class KvLayout:
    groups: tuple[KvGroup, ...]
    group_size_layers: int  # layers sharing one pool tensor (padding included)
    page_bytes: int  # per block per layer per rank (equal across groups)
    block_size_tokens: int  # the attention block size (min over groups)
    kv_bytes_per_token: int  # marginal per-rank bytes of the layers that grow without bound
    padding_layers: int


def _effective_kinds(model: ModelGeometry, unify: bool, unify_chunked: bool) -> list[LayerKind]:
    """Sliding/chunked layers pay full length when the hybrid manager does not handle them."""
    paid_in_full = {LayerKind.SLIDING: unify, LayerKind.CHUNKED: unify_chunked}
    return [LayerKind.FULL if paid_in_full.get(k, False) else k for k in model.layer_kinds]


def build_layout(
    model: ModelGeometry,
    *,
    tp: int,
    kv_dtype: str,
    block_size: int,
    hybrid_manager: bool,
    chunked_in_hma: bool,
    align: int,
) -> KvLayout:
    """Group the layers the way vLLM's KV-cache manager does and size one page."""
    kinds = _effective_kinds(model, not hybrid_manager, not (hybrid_manager and chunked_in_hma))
    counts = Counter(k for k in kinds if k is not LayerKind.NONE)
    if not counts:
        raise CapacityInputError("model", "has no layer that keeps state", "check the config")
    attn_kinds = [k for k in counts if k is not LayerKind.LINEAR]
    tok_bytes: dict[LayerKind, int] = {
        k: token_bytes_per_layer(model, k, tp, kv_dtype) for k in attn_kinds
    }
    state = linear_state_bytes_per_rank(model, tp) if LayerKind.LINEAR in counts else 0
    if state and attn_kinds:
        block_size = max(block_size, hybrid_mamba_block_size(max(tok_bytes.values()), state, align))
    pages: dict[LayerKind, int] = {k: block_size * b for k, b in tok_bytes.items()}
    if state:
        pages[LayerKind.LINEAR] = max([state, *pages.values()])  # state padded to the page
    page = max(pages.values())
    blocks: dict[LayerKind, int] = {
        k: block_size * page // pages[k] for k in attn_kinds
    }  # smaller pages: more tokens
    if len(counts) == 1:
        group_size = next(iter(counts.values()))
    else:
        group_size = min(counts.values())
        if max(counts.values()) < 1.5 * min(counts.values()):
            group_size = max(counts.values())
    groups: list[KvGroup] = []
    for kind, n in counts.items():
        for start in range(0, n, group_size):
            groups.append(
                KvGroup(
                    kind=kind,
                    layers=min(group_size, n - start),
                    block_size_tokens=blocks.get(kind, block_size),
                    page_bytes=page,
                    window_tokens=window_of(model, kind),
                )
            )
    growing = [k for k in attn_kinds if k in (LayerKind.FULL, LayerKind.MLA)] or attn_kinds
    return KvLayout(
        groups=tuple(groups),
        group_size_layers=group_size,
        page_bytes=page,
        block_size_tokens=min(g.block_size_tokens for g in groups),
        kv_bytes_per_token=sum(tok_bytes[k] * counts[k] for k in growing),
        padding_layers=len(groups) * group_size - sum(counts.values()),
    )


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def group_blocks_for_tokens(group: KvGroup, tokens: int, batched_tokens: int) -> int:
    """Blocks one request of `tokens` context needs in one group (vLLM's max_memory_usage)."""
    if tokens <= 0:
        return 0
    b = group.block_size_tokens
    if group.kind is LayerKind.SLIDING and group.window_tokens:
        return cdiv(min(group.window_tokens - 1 + batched_tokens, tokens), b) + 1
    if group.kind is LayerKind.CHUNKED and group.window_tokens:
        return cdiv(min(group.window_tokens + batched_tokens, tokens), b)
    if group.kind is LayerKind.LINEAR:
        return 1  # one state page per request (mamba_cache_mode "none")
    return cdiv(tokens, b)


def blocks_for_request(groups: tuple[KvGroup, ...], tokens: int, batched_tokens: int) -> int:
    return sum(group_blocks_for_tokens(g, tokens, batched_tokens) for g in groups)
