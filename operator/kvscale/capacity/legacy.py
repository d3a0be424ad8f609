"""What vLLM releases before 0.6.4 charge for the profile run: the memory the allocator reserved.

Up to 0.6.3, `Worker.determine_num_available_blocks` runs the profile, synchronises and reads
`torch.cuda.mem_get_info()`; the charge is the drop in free memory since start-up (worker.py
of the 0.3.3, 0.4.3, 0.5.5 and 0.6.3 wheels: `peak_memory = self.init_gpu_memory -
free_gpu_memory`, no `empty_cache` between the run and the reading). The free memory has
dropped by every segment the caching allocator reserved during the run, and that is more than
the allocated peak the planner computes (nonkv.py): the temporaries of a decoder layer come in
different sizes, and one that no cached block can hold takes a new segment (caching.py). From
0.6.4 (vLLM PR #9352) the charge is the allocated peak, after `empty_cache`, plus the memory
outside PyTorch: the reserved slack no longer counts.

`reserved_slack_bytes` replays the profile run's allocations through the allocator and returns
reserved minus allocated peak. The order is the model code's (llama.py of the 0.4.3 and 0.6.3
wheels; Mistral, Qwen and the other Llama-like decoders share it; Mixtral's MoE layer
`fused_moe`), per layer:

- input norm: layer 0 allocates its output (the residual keeps the embedding), later layers
  normalise in place (`fused_add_rms_norm`);
- attention: the QKV projection; the backend's output (`torch.empty_like(query)`, the xformers
  and ROCm backends from 0.4.0) and the kernel's own result, copied into it and freed (0.3.x's
  xformers call and 0.6.3's FlashAttention return the kernel's result alone: one tensor
  fewer, the smaller slack; the planner replays the larger, the environment being unknown);
  the output projection, after which the QKV output, the attention output and the layer's
  input are freed;
- MLP: gate/up, SiLU-and-mul and down projections, the first two freed after the third; or the
  MoE layer's router logits and `fused_experts` caches, its output written in place;
- after the last layer, the sampler's sort-path tensors over `rows` requests (nonkv.py).

The replay stops once a whole layer leaves the reserved memory unchanged: every later layer
repeats the same requests into the same cached blocks. docs/adr/0012-physical-non-kv-model.md
§12 compares it with the legacy logs.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity.caching import Block, CachingAllocator
from kvscale.capacity.nonkv import FUSED_MOE_CHUNK_TOKENS, SORT_TENSOR_BYTES_PER_ELEMENT


@dataclass(frozen=True)
class LayerShape:
    """Per-rank widths of one decoder layer, in elements per token."""

    hidden: int
    q_width: int  # query heads x head dim on this rank
    kv_width: int  # key + value heads x head dims on this rank
    intermediate: int  # dense MLP width on this rank
    num_layers: int
    num_experts: int = 0  # MoE: routed experts (0: a dense MLP)
    experts_per_token: int = 0
    expert_width: int = 0  # one expert's FFN width on this rank


def reserved_slack_bytes(
    layer: LayerShape, *, tokens: int, rows: int, vocab: int, dtype_bytes: int
) -> int:
    """Bytes the allocator holds beyond the allocated peak after the profile run of `tokens`
    prompt tokens and a sampler over `rows` requests (per rank)."""
    heap = CachingAllocator()
    width = tokens * dtype_bytes
    heap.malloc(width * layer.hidden)  # the embedding output, kept as the residual to the end
    hidden = heap.malloc(width * layer.hidden)  # layer 0's normalised input
    settled = 0
    for _ in range(layer.num_layers):
        before = heap.reserved_bytes
        qkv = heap.malloc(width * (layer.q_width + layer.kv_width))
        out = heap.malloc(width * layer.q_width)
        heap.free(heap.malloc(width * layer.q_width))  # the kernel's result, copied into out
        attn = heap.malloc(width * layer.hidden)
        for done in (out, qkv, hidden):
            heap.free(done)
        hidden = _mlp(heap, layer, attn, tokens=tokens, dtype_bytes=dtype_bytes)
        settled = settled + 1 if heap.reserved_bytes == before else 0
        if settled == 2:
            break
    sampler = [heap.malloc(rows * vocab * b) for b in SORT_TENSOR_BYTES_PER_ELEMENT]
    for tensor in sampler:
        heap.free(tensor)
    return heap.reserved_bytes - heap.peak_allocated_bytes


def _mlp(
    heap: CachingAllocator,
    layer: LayerShape,
    attn: Block,
    *,
    tokens: int,
    dtype_bytes: int,
) -> Block:
    """Replay one MLP (or MoE) block on the attention output `attn`; returns the layer's
    output (the next layer's input)."""
    width = tokens * dtype_bytes
    if not layer.num_experts:
        gate_up = heap.malloc(width * 2 * layer.intermediate)
        act = heap.malloc(width * layer.intermediate)
        down = heap.malloc(width * layer.hidden)
        for done in (gate_up, act, attn):
            heap.free(done)
        return down
    routed = min(tokens, FUSED_MOE_CHUNK_TOKENS) * dtype_bytes * layer.experts_per_token
    per_rank = layer.expert_width
    scratch = [
        heap.malloc(width * layer.num_experts),  # router logits
        heap.malloc(routed * 2 * per_rank),  # intermediate_cache1
        heap.malloc(routed * per_rank),  # intermediate_cache2
        heap.malloc(routed * layer.hidden),  # intermediate_cache3
    ]
    for done in scratch:
        heap.free(done)
    return attn  # fused_experts writes its output into the input (inplace=True)
