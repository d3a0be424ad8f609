"""Roofline latency of one engine step: the planner's SLO bound and the simulator's clock.

A step reads every weight once plus the KV of every token it attends to (memory-bound), and
does 2 FLOPs per active parameter per token (compute-bound); it takes the longer of the two
plus a fixed per-step overhead. The efficiency factors are named constants, stated in
docs/capacity.md; both the planner and the simulator use this one model so that the SLO
bound and the simulated latency agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity.types import CapacityPlan, LayerKind

HBM_EFFICIENCY_FRAC = 0.80  # achieved / peak HBM bandwidth in decode GEMV + attention
COMPUTE_EFFICIENCY_FRAC = 0.50  # achieved / peak dense tensor FLOPs in prefill (MFU)
STEP_OVERHEAD_S = 0.004  # scheduler, sampling and kernel launches per engine step
TP_STEP_OVERHEAD_S = 0.001  # extra all-reduce latency per step per doubling of TP
FALLBACK_FLOPS_PER_BYTE = 150.0  # GPUs without a TFLOPs figure: assume this ridge point
FP8_WEIGHT_METHODS = ("fp8", "fbgemm_fp8", "compressed-tensors")


@dataclass(frozen=True)
class Roofline:
    """Per-rank step-time model of one replica."""

    weights_bytes_per_rank: int
    kv_bytes_per_token_per_rank: int  # growing layers (full attention / MLA)
    window_kv_bytes_per_rank: int  # windowed layers: bytes per token while in the window
    window_tokens: int  # the window those layers keep (0 if none)
    linear_state_bytes_per_seq: int  # Mamba/GDN state read per sequence per step
    active_params_per_rank: float
    hbm_bytes_per_s: float
    flops_per_s: float
    overhead_s: float

    def _kv_read_bytes(self, decode_seqs: int, context_tokens: int) -> float:
        seqs = max(decode_seqs, 1)
        per_seq_ctx = context_tokens / seqs
        windowed = min(per_seq_ctx, self.window_tokens) * seqs if self.window_tokens else 0.0
        return (
            context_tokens * self.kv_bytes_per_token_per_rank
            + windowed * self.window_kv_bytes_per_rank
            + decode_seqs * self.linear_state_bytes_per_seq
        )

    def step_time_s(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """One step: `prefill_tokens` new prompt tokens plus `decode_seqs` decode tokens,
        reading the KV of `context_tokens` tokens in total (over all sequences)."""
        memory_bytes = self.weights_bytes_per_rank + self._kv_read_bytes(
            decode_seqs, context_tokens
        )
        memory_s = memory_bytes / self.hbm_bytes_per_s
        flops = 2.0 * self.active_params_per_rank * (prefill_tokens + decode_seqs)
        compute_s = flops / self.flops_per_s
        return max(memory_s, compute_s) + self.overhead_s

    def decode_step_s(self, batch_size: int, context_tokens: int) -> float:
        """A pure decode step of `batch_size` sequences holding `context_tokens` in total."""
        return self.step_time_s(0, batch_size, context_tokens)

    def prefill_s(self, tokens: int) -> float:
        """Prefill of one prompt of `tokens` tokens in a single step."""
        return self.step_time_s(tokens, 0, tokens)


def prefill_capacity_tokens_per_s(plan: CapacityPlan) -> float:
    """Prompt tokens per second one replica prefills in full chunks, at this roofline.

    A chunk is `max_num_batched_tokens`, the engine's per-step token budget. The autoscaler
    sizes the prompt load against this rate (`ScalingConfig.prefill_tokens_per_s_per_replica`,
    carried in the status plan), and the simulator's replicas run on the same roofline, so
    both sides mean the same capacity.
    """
    chunk = plan.max_num_batched_tokens
    return chunk / roofline_for(plan).step_time_s(chunk, 0, chunk)


def _flops(plan: CapacityPlan) -> float:
    gpu, model = plan.request.gpu, plan.request.model
    if model.quantization in FP8_WEIGHT_METHODS and gpu.fp8_flops:
        peak = gpu.fp8_flops
    else:
        peak = gpu.bf16_flops or gpu.hbm_bandwidth_bytes_per_s * FALLBACK_FLOPS_PER_BYTE
    return peak * COMPUTE_EFFICIENCY_FRAC


def roofline_for(plan: CapacityPlan) -> Roofline:
    """The step-time model of the replica that `plan` describes."""
    request = plan.request
    model, tp = request.model, request.tensor_parallel
    window_bytes, window = 0, 0
    state = 0
    for group in plan.kv_groups:
        per_token = group.page_bytes // group.block_size_tokens * group.layers
        if group.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            window_bytes += per_token
            window = max(window, group.window_tokens or 0)
        elif group.kind is LayerKind.LINEAR:
            state += group.page_bytes * group.layers
    growing = (
        0 if window_bytes and plan.kv_bytes_per_token == window_bytes else (plan.kv_bytes_per_token)
    )
    active = model.active_params or model.params or plan.weights_bytes * tp / model.dtype_bytes
    tp_levels = max(tp.bit_length() - 1, 0)
    return Roofline(
        weights_bytes_per_rank=plan.weights_bytes,
        kv_bytes_per_token_per_rank=growing,
        window_kv_bytes_per_rank=window_bytes,
        window_tokens=window,
        linear_state_bytes_per_seq=state,
        active_params_per_rank=active / tp,
        hbm_bytes_per_s=request.gpu.hbm_bandwidth_bytes_per_s * HBM_EFFICIENCY_FRAC,
        flops_per_s=_flops(plan),
        overhead_s=STEP_OVERHEAD_S + TP_STEP_OVERHEAD_S * tp_levels,
    )
