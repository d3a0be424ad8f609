"""The simulator's physics checks: KV capacity, decode speed, preemption point, prefix reuse."""

from __future__ import annotations

import math

import pytest

from kvscale.capacity import PlanRequest, find_gpu, find_model, plan_capacity
from kvscale.capacity.roofline import roofline_for
from kvscale.sim.engine import EngineConfig, EngineSim, SimRequest
from kvscale.sim.setup import build_engine_config

PLANS = [
    ("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm_80gb", 8192),
    ("Qwen/Qwen3-8B", "l40s", 16384),
    ("google/gemma-2-9b-it", "a100_sxm_80gb", 8192),  # sliding window: 2 KV groups
    ("openai/gpt-oss-20b", "h100_sxm_80gb", 4096),
]


def _plan(model: str, gpu: str, max_len: int):  # type: ignore[no-untyped-def]
    return plan_capacity(
        PlanRequest(model=find_model(model), gpu=find_gpu(gpu), max_model_len_tokens=max_len)
    )


def _tiny_config(num_blocks: int, step_s: float = 0.01, **kw: int) -> EngineConfig:
    block = kw.pop("block_size_tokens", 16)
    return EngineConfig(
        num_blocks=num_blocks,
        block_size_tokens=block,
        max_num_seqs=kw.pop("max_num_seqs", 8),
        max_num_batched_tokens=kw.pop("max_num_batched_tokens", 512),
        max_model_len_tokens=kw.pop("max_model_len_tokens", 1024),
        step_time_s=lambda p, d, c: step_s,
        blocks_for_tokens=lambda t: -(-t // block),
        enable_prefix_caching=bool(kw.pop("prefix", 0)),
    )


@pytest.mark.parametrize(("model", "gpu", "max_len"), PLANS)
def test_kv_pool_is_the_plans_block_count(model: str, gpu: str, max_len: int) -> None:
    plan = _plan(model, gpu, max_len)
    engine = EngineSim(build_engine_config(plan))
    assert engine.pool.num_blocks == plan.num_blocks
    assert engine.pool.usable_blocks == plan.num_blocks - 1  # vLLM's null block
    # a max_model_len request holds what the planner says it holds
    assert engine.table[max_len] == plan.blocks_per_max_len_request


@pytest.mark.parametrize(
    ("model", "gpu", "prompt", "output"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm_80gb", 1000, 300),
        ("meta-llama/Llama-3.1-8B-Instruct", "l4", 3000, 120),
        ("Qwen/Qwen3-8B", "a100_sxm_80gb", 200, 500),
    ],
)
def test_lone_request_runs_at_roofline_speed(
    model: str, gpu: str, prompt: int, output: int
) -> None:
    plan = _plan(model, gpu, 8192)
    roof = roofline_for(plan)
    engine = EngineSim(build_engine_config(plan))
    req = SimRequest(0, 0.0, prompt, output)
    assert engine.add_request(req)
    engine.run_until(math.inf)
    assert req.status == "finished"
    budget = plan.max_num_batched_tokens  # chunked prefill: one chunk per step
    chunks = [(start, min(budget, prompt - start)) for start in range(0, prompt, budget)]
    ttft = sum(roof.step_time_s(n, 0, start + n) for start, n in chunks)
    assert req.ttft_s == pytest.approx(ttft, rel=1e-9)
    # decode step i attends to prompt + i tokens (the new token's KV included)
    expected = sum(roof.decode_step_s(1, prompt + i) for i in range(1, output))
    assert req.last_token_s - req.first_token_s == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("block", "usable", "prompt"),
    [(16, 10, 32), (16, 12, 40), (32, 9, 50)],
)
def test_preemption_happens_exactly_when_blocks_run_out(
    block: int, usable: int, prompt: int
) -> None:
    engine = EngineSim(_tiny_config(usable + 1, block_size_tokens=block))
    first, second = SimRequest(0, 0.0, prompt, 900), SimRequest(1, 0.0, prompt, 900)
    engine.add_request(first)
    engine.add_request(second)
    # both prefill in step 1; decode step k makes each hold ceil((prompt + k) / block) blocks
    k_out = next(k for k in range(1, 900) if 2 * math.ceil((prompt + k) / block) > usable)
    step_end = lambda k: 0.01 * (k + 1)  # noqa: E731 - prefill is step 0
    engine.run_until(step_end(k_out - 1) - 1e-9)
    assert engine.preemptions_total == 0
    assert engine.pool.used_blocks == 2 * math.ceil((prompt + k_out - 1) / block)
    engine.run_until(step_end(k_out) - 1e-9)
    assert engine.preemptions_total == 1
    assert second.status == "waiting" and second.computed == 0 and second.preemptions == 1
    assert first.status == "running"
    assert engine.pool.used_blocks == math.ceil((prompt + k_out) / block)


def test_preempted_request_recomputes_and_still_finishes() -> None:
    engine = EngineSim(_tiny_config(11))
    reqs = [SimRequest(i, 0.0, 32, 60) for i in range(2)]
    for r in reqs:
        engine.add_request(r)
    engine.run_until(math.inf)
    assert engine.preemptions_total >= 1
    assert all(r.status == "finished" and r.generated == 60 for r in reqs)
    assert engine.pool.used_blocks == 0


@pytest.mark.parametrize("num_blocks", [100, 11])  # room for both; preemption (recompute)
def test_scheduled_tokens_count_every_prefill_and_decode_input(num_blocks: int) -> None:
    """The counter the engine's step log is compared on: each request's prompt and each of its
    outputs but the last goes through a step once, plus what preemption makes it recompute."""
    engine = EngineSim(_tiny_config(num_blocks, max_num_batched_tokens=20))
    reqs = [SimRequest(i, 0.0, 32, 60) for i in range(2)]
    for r in reqs:
        engine.add_request(r)
    recomputed = 0
    while engine.has_work:
        before = {r.rid: r.computed for r in reqs}
        engine.run_until(engine.clock_s + 1e-12)
        recomputed += sum(before[r.rid] for r in reqs if r.computed < before[r.rid])
    assert engine.scheduled_tokens_total == 2 * (32 + 60 - 1) + recomputed
    assert (recomputed > 0) == (engine.preemptions_total > 0) == (num_blocks == 11)


@pytest.mark.parametrize(("max_num_seqs", "expected_second_start_s"), [(1, 0.05), (2, 0.0)])
def test_max_num_seqs_bounds_the_batch(max_num_seqs: int, expected_second_start_s: float) -> None:
    engine = EngineSim(_tiny_config(100, max_num_seqs=max_num_seqs))
    first, second = SimRequest(0, 0.0, 16, 5), SimRequest(1, 0.0, 16, 5)
    engine.add_request(first)
    engine.add_request(second)
    engine.run_until(math.inf)
    assert second.first_scheduled_s == pytest.approx(expected_second_start_s)


def test_chunked_prefill_splits_long_prompts_by_the_token_budget() -> None:
    engine = EngineSim(_tiny_config(200, max_num_batched_tokens=256))
    req = SimRequest(0, 0.0, 1000, 2)
    engine.add_request(req)
    engine.run_until(math.inf)
    assert req.ttft_s == pytest.approx(0.01 * math.ceil(1000 / 256))


@pytest.mark.parametrize(("shared", "expected_hit_tokens"), [(3, 96), (0, 0), (1, 32)])
def test_prefix_cache_hits_on_shared_hashes(shared: int, expected_hit_tokens: int) -> None:
    config = EngineConfig(
        num_blocks=400, block_size_tokens=16, max_num_seqs=8, max_num_batched_tokens=4096,
        max_model_len_tokens=2048, step_time_s=lambda p, d, c: 0.001 + p * 1e-4,
        blocks_for_tokens=lambda t: -(-t // 16), prefix_hash_tokens=32,
    )  # fmt: skip
    engine = EngineSim(config)
    first = SimRequest(0, 0.0, 128, 3, hashes=(1, 2, 3, 4))
    engine.add_request(first)
    engine.run_until(1.0)
    hashes = (1, 2, 3, 4)[:shared] + (90, 91, 92, 93)[shared:]
    second = SimRequest(1, 1.0, 128, 3, hashes=hashes)
    engine.add_request(second)
    engine.run_until(math.inf)
    assert engine.pool.hit_hashes == shared
    assert second.ttft_s == pytest.approx(0.001 + (128 - expected_hit_tokens) * 1e-4)


def test_request_longer_than_max_model_len_is_rejected() -> None:
    engine = EngineSim(_tiny_config(100, max_model_len_tokens=256))
    assert not engine.add_request(SimRequest(0, 0.0, 256, 10))
    ok = SimRequest(1, 0.0, 200, 500)
    assert engine.add_request(ok)
    assert ok.output_tokens == 56  # generation stops at max_model_len


def test_a_preemption_is_reported_when_the_request_emits_its_next_token() -> None:
    """vLLM counts a preemption in num_preemptions_total only with the preempted request's next
    output; the simulator's exported counter follows (its internal total does not wait)."""
    engine = EngineSim(_tiny_config(11))
    reqs = [SimRequest(i, 0.0, 32, 60) for i in range(2)]
    for r in reqs:
        engine.add_request(r)
    while engine.preemptions_total == 0:
        engine.run_until(engine.clock_s + 1e-9)
    (victim,) = [r for r in reqs if r.status == "waiting"]
    assert engine.preemptions_reported_total == 0
    emitted = victim.generated
    while victim.generated == emitted:
        engine.run_until(engine.clock_s + 1e-9)
        assert engine.preemptions_reported_total == (victim.generated > emitted)
    engine.run_until(math.inf)
    assert engine.preemptions_reported_total == engine.preemptions_total >= 1
