"""Safe max concurrency per replica: the KV bound, the SLO bound and the engine cap.

KV bound: how many requests the block pool holds at once (worst case every request at
max_model_len; typical case at the declared p95 request). SLO bound: the largest batch whose
roofline decode step meets the ITL target and whose p95 prompt still meets the TTFT target
while that batch decodes. The safe figure is the smallest bound less a headroom fraction.

The SLO bound uses the pure decode step. Under steady arrivals some steps also prefill a
prompt (chunked prefill puts up to `max_num_batched_tokens` prompt tokens beside the decode
batch), and those steps set the decoding requests' ITL p95 when they are frequent. The verdict
reports that step at the safe batch and, when it misses the ITL target, the largest chunk that
would meet it (`chunk_for_itl_tokens`): the planner warns, it does not change the engine's chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.planner import blocks_for_tokens
from kvscale.capacity.roofline import Roofline, roofline_for
from kvscale.capacity.types import CapacityPlan, ConcurrencyVerdict, SloTargets, WorkloadProfile


def _largest_true(predicate: Callable[[int], bool], upper: int) -> int:
    """Largest n in [1, upper] with predicate(n) true (predicate monotone); 0 if none."""
    if upper < 1 or not predicate(1):
        return 0
    lo, hi = 1, upper
    if predicate(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicate(mid):
            lo = mid
        else:
            hi = mid
    return lo


CHUNK_GRAIN_TOKENS = 256  # suggested prefill chunks are multiples of this


def mixed_step_s(
    roof: Roofline, batch: int, ctx: int, prompt_tokens: int, chunk_tokens: int
) -> float:
    """A step that prefills (a chunk of) a `prompt_tokens` prompt beside `batch` decoding
    sequences of `ctx` tokens; the chunk is the step's token budget less the decode tokens.
    Costed at the prompt's full length (its last chunk reads the whole prompt): the slowest
    such step, what a p95 sees, and each step of `ttft_s`."""
    prefill = max(1, min(chunk_tokens - batch, prompt_tokens))
    return roof.step_time_s(prefill, batch, batch * ctx + prompt_tokens)


def chunk_meeting_itl(
    roof: Roofline, *, batch: int, ctx: int, prompt_tokens: int, chunk_tokens: int, itl_s: float
) -> int | None:
    """The largest chunk below `chunk_tokens`, a multiple of CHUNK_GRAIN_TOKENS, whose mixed
    step at `batch` meets `itl_s`; None when even the smallest does not."""
    top = (chunk_tokens - 1) // CHUNK_GRAIN_TOKENS * CHUNK_GRAIN_TOKENS
    for chunk in range(top, 0, -CHUNK_GRAIN_TOKENS):
        if chunk > batch and mixed_step_s(roof, batch, ctx, prompt_tokens, chunk) <= itl_s:
            return chunk
    return None


def decode_context_tokens(profile: WorkloadProfile) -> int:
    """Context of a p95 request half-way through its output (the ITL it sees on average)."""
    return profile.p95_input_tokens + profile.p95_output_tokens // 2


def ttft_s(roof: Roofline, plan: CapacityPlan, prompt_tokens: int, batch: int, ctx: int) -> float:
    """Chunked prefill of one prompt while `batch` sequences of `ctx` tokens keep decoding."""
    steps = math.ceil(prompt_tokens / max(plan.max_num_batched_tokens - batch, 1))
    return steps * mixed_step_s(roof, batch, ctx, prompt_tokens, plan.max_num_batched_tokens)


def _kv_bound(plan: CapacityPlan, tokens: int) -> int:
    need = blocks_for_tokens(plan, tokens)
    return plan.num_blocks // need if need else 0


def _validate(profile: WorkloadProfile, headroom_frac: float) -> None:
    for name in ("p50_input_tokens", "p95_input_tokens", "p50_output_tokens", "p95_output_tokens"):
        if getattr(profile, name) <= 0:
            raise CapacityInputError(f"workload.{name}", "must be positive", "give tokens > 0")
    if not 0 <= headroom_frac < 1:
        raise CapacityInputError("headroom", "must be in [0, 1)", "use e.g. 0.1")


def estimate_safe_concurrency(
    plan: CapacityPlan,
    profile: WorkloadProfile,
    slo: SloTargets,
    headroom_frac: float = 0.1,
) -> ConcurrencyVerdict:
    """Safe concurrent requests per replica, what limits it, and replicas for the peak."""
    _validate(profile, headroom_frac)
    roof = roofline_for(plan)
    worst = int(plan.max_concurrency)
    typical_tokens = profile.p95_input_tokens + profile.p95_output_tokens
    typical = _kv_bound(plan, min(typical_tokens, plan.request.max_model_len_tokens))
    cap = plan.engine_cap_seqs or plan.max_num_seqs
    ctx = decode_context_tokens(profile)
    p95_prompt = profile.p95_input_tokens

    def meets_slo(batch: int) -> bool:
        if slo.itl_p95_s is not None and roof.decode_step_s(batch, batch * ctx) > slo.itl_p95_s:
            return False
        if slo.ttft_p95_s is not None:
            return ttft_s(roof, plan, p95_prompt, batch, ctx) <= slo.ttft_p95_s
        return True

    has_slo = slo.itl_p95_s is not None or slo.ttft_p95_s is not None
    slo_bound = _largest_true(meets_slo, max(cap, 1)) if has_slo else None
    bounds = {"kv": typical, "engine_cap": cap}
    if slo_bound is not None:
        bounds["slo"] = slo_bound
    limited_by = min(bounds, key=lambda k: (bounds[k], k != "kv"))
    safe = math.floor(bounds[limited_by] * (1 - headroom_frac))
    if bounds[limited_by] >= 1:
        safe = max(safe, 1)
    itl = roof.decode_step_s(safe, safe * ctx) if safe else None
    chunk = plan.max_num_batched_tokens
    mixed = mixed_step_s(roof, safe, ctx, p95_prompt, chunk) if safe else None
    chunk_for_itl = None
    if mixed is not None and slo.itl_p95_s is not None and mixed > slo.itl_p95_s:
        chunk_for_itl = chunk_meeting_itl(
            roof,
            batch=safe,
            ctx=ctx,
            prompt_tokens=p95_prompt,
            chunk_tokens=chunk,
            itl_s=slo.itl_p95_s,
        )
    ttft = ttft_s(roof, plan, p95_prompt, safe, ctx) if safe else None
    replicas = None
    if profile.peak_requests_per_s is not None and safe:
        p50_ctx = profile.p50_input_tokens + profile.p50_output_tokens // 2
        step = roof.decode_step_s(safe, safe * p50_ctx)
        duration = ttft_s(roof, plan, profile.p50_input_tokens, safe, p50_ctx)
        duration += profile.p50_output_tokens * step
        in_flight = profile.peak_requests_per_s * duration  # Little's law
        replicas = max(1, math.ceil(in_flight / safe))
    price = plan.request.gpu.price_usd_per_hour
    return ConcurrencyVerdict(
        kv_bound_worst=worst,
        kv_bound_typical=typical,
        slo_bound=slo_bound,
        engine_cap=cap,
        safe_concurrency=safe,
        limited_by=limited_by,
        replicas_for_peak=replicas,
        usd_per_hour_per_replica=price * plan.request.tensor_parallel if price else None,
        itl_at_safe_s=itl,
        ttft_p95_prompt_s=ttft,
        itl_one_request_s=roof.decode_step_s(1, ctx),
        itl_with_prefill_at_safe_s=mixed,
        chunk_for_itl_tokens=chunk_for_itl,
        ttft_one_request_s=ttft_s(roof, plan, p95_prompt, 1, ctx),
    )
