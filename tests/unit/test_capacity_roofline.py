"""Roofline step times and the safe-concurrency verdict."""

from __future__ import annotations

import pytest

from kvscale.capacity import (
    GIB,
    PlanRequest,
    SloTargets,
    WorkloadProfile,
    estimate_safe_concurrency,
    find_gpu,
    find_model,
    plan_capacity,
)
from kvscale.capacity.concurrency import (
    CHUNK_GRAIN_TOKENS,
    chunk_meeting_itl,
    decode_context_tokens,
    mixed_step_s,
)
from kvscale.capacity.roofline import Roofline, roofline_for

ROOF = Roofline(
    weights_bytes_per_rank=1_000_000_000,
    kv_bytes_per_token_per_rank=1000,
    window_kv_bytes_per_rank=0,
    window_tokens=0,
    linear_state_bytes_per_seq=0,
    active_params_per_rank=1e9,
    hbm_bytes_per_s=1e12,
    flops_per_s=1e15,
    overhead_s=0.0,
)


@pytest.mark.parametrize(
    ("prefill", "decode", "context", "expected_s"),
    [
        (0, 10, 10_000, (1e9 + 10_000 * 1000) / 1e12),  # memory-bound decode: 1.01 ms
        (1000, 0, 1000, 2 * 1e9 * 1000 / 1e15),  # compute-bound prefill: 2 ms > 1.001 ms
        (0, 1, 0, 1e9 / 1e12),  # weights only
    ],
)
def test_step_time_is_max_of_memory_and_compute(
    prefill: int, decode: int, context: int, expected_s: float
) -> None:
    assert ROOF.step_time_s(prefill, decode, context) == pytest.approx(expected_s)


def test_overhead_is_added_and_helpers_agree() -> None:
    roof = Roofline(**{**ROOF.__dict__, "overhead_s": 0.004})
    assert roof.decode_step_s(10, 10_000) == pytest.approx(0.00101 + 0.004)
    assert roof.prefill_s(1000) == pytest.approx(0.002 + 0.004)


def _plan(**kw: object) -> object:
    fields: dict[str, object] = {
        "model": find_model("meta-llama/Llama-3.1-8B-Instruct"),
        "gpu": find_gpu("H100"),
        "max_model_len_tokens": 32768,
        "kv_cache_memory_bytes": 20 * GIB,
    }
    fields.update(kw)
    return plan_capacity(PlanRequest(**fields))  # type: ignore[arg-type]


PROFILE = WorkloadProfile(1000, 4000, 200, 1000, peak_requests_per_s=50.0)


def test_kv_bound_without_slo() -> None:
    plan = _plan()
    # 20 GiB / 2 MiB = 10240 blocks; worst cdiv(32768,16) = 2048 -> 5; typical 5000 tokens
    # -> cdiv(5000,16) = 313 blocks -> 10240 // 313 = 32; safe = floor(32 * 0.9) = 28
    verdict = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, None))  # type: ignore[arg-type]
    assert (verdict.kv_bound_worst, verdict.kv_bound_typical) == (5, 32)
    assert verdict.slo_bound is None and verdict.limited_by == "kv"
    assert verdict.safe_concurrency == 28
    assert verdict.usd_per_hour_per_replica == pytest.approx(3.99)


def test_tight_itl_makes_slo_the_limit() -> None:
    plan = _plan(kv_cache_memory_bytes=60 * GIB)
    roof = roofline_for(plan)  # type: ignore[arg-type]
    ctx = 4000 + 1000 // 2
    target = roof.decode_step_s(8, 8 * ctx)
    verdict = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, target))  # type: ignore[arg-type]
    assert verdict.slo_bound == 8 and verdict.limited_by == "slo"
    assert verdict.safe_concurrency == 7  # floor(8 * 0.9)
    assert verdict.itl_at_safe_s is not None and verdict.itl_at_safe_s <= target


def test_replicas_follow_littles_law() -> None:
    plan = _plan()
    verdict = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, None))  # type: ignore[arg-type]
    low = estimate_safe_concurrency(
        plan,
        WorkloadProfile(1000, 4000, 200, 1000, peak_requests_per_s=5.0),
        SloTargets(),  # type: ignore[arg-type]
    )
    assert verdict.replicas_for_peak is not None and low.replicas_for_peak is not None
    assert verdict.replicas_for_peak >= low.replicas_for_peak >= 1
    assert verdict.replicas_for_peak > 1  # 50 req/s x multi-second requests >> 28 slots


def test_one_request_floors_bound_every_slo_and_mark_the_unattainable() -> None:
    plan = _plan(kv_cache_memory_bytes=60 * GIB)
    free = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, None))  # type: ignore[arg-type]
    assert free.itl_at_safe_s is not None and free.ttft_p95_prompt_s is not None
    # one request alone is the fastest a replica gets
    assert 0 < free.itl_one_request_s < free.itl_at_safe_s
    assert 0 < free.ttft_one_request_s <= free.ttft_p95_prompt_s
    # a target a hair above the floor admits at least one request, a hair below none
    above = SloTargets(free.ttft_one_request_s * 1.01, free.itl_one_request_s * 1.01)
    below = SloTargets(None, free.itl_one_request_s * 0.99)
    assert estimate_safe_concurrency(plan, PROFILE, above).safe_concurrency >= 1  # type: ignore[arg-type]
    refused = estimate_safe_concurrency(plan, PROFILE, below)  # type: ignore[arg-type]
    assert refused.safe_concurrency == 0 and refused.limited_by == "slo"


def test_a_step_that_also_prefills_is_slower_and_a_smaller_chunk_meets_the_target() -> None:
    plan = _plan(kv_cache_memory_bytes=60 * GIB)  # H100, 8192-token steps
    roof = roofline_for(plan)  # type: ignore[arg-type]
    free = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, None))  # type: ignore[arg-type]
    assert free.itl_with_prefill_at_safe_s is not None and free.itl_at_safe_s is not None
    assert free.itl_with_prefill_at_safe_s > free.itl_at_safe_s
    assert free.chunk_for_itl_tokens is None  # no ITL target, nothing to suggest
    # a target between the decode step and the prefill step: a smaller chunk is suggested
    target = (free.itl_at_safe_s + free.itl_with_prefill_at_safe_s) / 2
    verdict = estimate_safe_concurrency(plan, PROFILE, SloTargets(None, target))  # type: ignore[arg-type]
    chunk = verdict.chunk_for_itl_tokens
    assert chunk is not None and chunk < plan.max_num_batched_tokens  # type: ignore[attr-defined]
    assert chunk % CHUNK_GRAIN_TOKENS == 0
    batch, ctx = verdict.safe_concurrency, decode_context_tokens(PROFILE)
    assert mixed_step_s(roof, batch, ctx, PROFILE.p95_input_tokens, chunk) <= target
    # ... and it is the largest such chunk
    bigger = chunk + CHUNK_GRAIN_TOKENS
    assert mixed_step_s(roof, batch, ctx, PROFILE.p95_input_tokens, bigger) > target


def test_no_chunk_is_suggested_when_even_the_smallest_misses_the_itl_target() -> None:
    plan = _plan(kv_cache_memory_bytes=60 * GIB)
    roof = roofline_for(plan)  # type: ignore[arg-type]
    floor = roof.decode_step_s(8, 8 * decode_context_tokens(PROFILE))
    found = chunk_meeting_itl(
        roof,
        batch=8,
        ctx=decode_context_tokens(PROFILE),
        prompt_tokens=4000,
        chunk_tokens=8192,
        itl_s=floor * 0.999,
    )
    assert found is None
