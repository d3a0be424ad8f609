"""Live calibration in the pure core: the overhead a live pool implies, and plans that use it."""

from __future__ import annotations

import dataclasses

import pytest

from kvscale.capacity import CapacityInputError, find_gpu, find_model, plan_capacity
from kvscale.capacity.calibration import (
    CalibrationKey,
    LivePool,
    PoolBasis,
    calibration_key,
    modelled_non_kv_bytes,
)
from kvscale.capacity.types import CapacityPlan, PlanRequest
from kvscale.sim.engine_args import parse_engine_args
from kvscale.sim.server import engine_plan

# (model, GPU type, engine, release, TP): dense and GQA, MoE, sliding-window, SGLang, TP 2
CASES = [
    ("Qwen/Qwen2.5-7B-Instruct", "l4", "vllm", "0.11.0", 1),
    ("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm_80gb", "vllm", "0.21.0", 1),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "h100_sxm_80gb", "vllm", "0.11.0", 2),
    ("google/gemma-2-9b-it", "l40s", "vllm", "0.11.0", 1),
    ("Qwen/Qwen3-8B", "h100_sxm_80gb", "sglang", "0.5.3", 1),
]
SHORTFALLS = (0.0, 0.03, 0.1, 0.3)


def plan_for(
    model: str, gpu: str, engine: str, version: str, tp: int, **extra: object
) -> CapacityPlan:
    request = PlanRequest(
        model=find_model(model),
        gpu=find_gpu(gpu),
        engine=engine,
        engine_version=version,
        tensor_parallel=tp,
        max_model_len_tokens=4096,
    )
    return plan_capacity(dataclasses.replace(request, **extra))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}@{c[1]}-{c[2]}" for c in CASES])
@pytest.mark.parametrize("shortfall", SHORTFALLS)
def test_the_implied_overhead_plans_the_live_pool_back(
    case: tuple[str, str, str, str, int], shortfall: float
) -> None:
    """Planned again from the overhead a live pool implies, the plan holds that pool exactly."""
    plan = plan_for(*case)
    live = LivePool(int(plan.num_blocks * (1 - shortfall)), plan.block_size_tokens)
    basis = PoolBasis.of(plan)
    implied = basis.implied_non_kv_bytes(live)
    assert implied is not None
    # the engine had more overhead than modelled by the blocks it lacks (less one block's slack)
    missing_bytes = (plan.num_blocks - live.num_blocks) * basis.kv_bytes_per_block
    extra = implied - modelled_non_kv_bytes(plan)
    assert missing_bytes <= extra < missing_bytes + basis.kv_bytes_per_block
    again = plan_capacity(dataclasses.replace(plan.request, observed_non_kv_bytes=implied))
    assert again.num_blocks == live.num_blocks
    # tokens in the plan's measure: exact for one KV group, within a block per group otherwise
    slack = (plan.num_groups - 1) * plan.block_size_tokens
    assert abs(again.kv_cache_tokens - basis.live_kv_tokens(live)) <= slack
    assert again.max_concurrency <= plan.max_concurrency


def test_the_planner_takes_the_observed_overhead_instead_of_the_model() -> None:
    plan = plan_for(*CASES[0])
    observed = modelled_non_kv_bytes(plan) + 3 * 2**30
    calibrated = plan_capacity(dataclasses.replace(plan.request, observed_non_kv_bytes=observed))
    assert calibrated.available_kv_bytes == plan.available_kv_bytes - 3 * 2**30
    assert calibrated.requested_bytes == plan.requested_bytes  # the budget itself is unchanged
    assert calibrated.num_blocks < plan.num_blocks
    assert any("observed on live engines" in w for w in calibrated.warnings)
    # an overhead that leaves nothing: the reason names it, not the model's parts
    starved = plan_capacity(
        dataclasses.replace(plan.request, observed_non_kv_bytes=plan.requested_bytes + 1)
    )
    assert not starved.fits
    assert "no memory is left for the KV cache" in starved.reason


def test_a_pinned_pool_ignores_the_observed_overhead() -> None:
    pinned = plan_for(*CASES[0], kv_cache_memory_bytes=4 * 2**30)
    with_observed = plan_capacity(
        dataclasses.replace(pinned.request, observed_non_kv_bytes=20 * 2**30)
    )
    assert with_observed.num_blocks == pinned.num_blocks
    basis = PoolBasis.of(pinned)
    assert basis.requested_bytes is None
    assert basis.implied_non_kv_bytes(LivePool(pinned.num_blocks // 2, 16)) is None


@pytest.mark.parametrize("value", [0, -1])
def test_a_non_positive_observed_overhead_is_refused_by_name(value: int) -> None:
    with pytest.raises(CapacityInputError) as error:
        plan_for(*CASES[0], observed_non_kv_bytes=value)
    assert error.value.field == "observedNonKvBytes"


def test_pool_basis_scales_block_size_and_layout_tokens() -> None:
    plan = plan_for(*CASES[0])
    basis = PoolBasis.of(plan)
    same = LivePool(plan.num_blocks, plan.block_size_tokens)
    doubled = LivePool(plan.num_blocks // 2, plan.block_size_tokens * 2)  # same slots
    assert (
        basis.live_kv_bytes(doubled)
        == basis.live_kv_bytes(same) - (plan.num_blocks % 2) * basis.kv_bytes_per_block
    )
    assert basis.drift_fraction(same) == 0.0
    assert basis.drift_fraction(LivePool(plan.num_blocks - 10, 16)) == pytest.approx(
        -10 / plan.num_blocks
    )
    # a sliding-window model's token figure is not blocks x block size: the plan's ratio holds
    gemma = plan_for(*CASES[3])
    gemma_basis = PoolBasis.of(gemma)
    assert gemma.kv_cache_tokens != gemma.num_blocks * gemma.block_size_tokens
    live = LivePool(gemma.num_blocks, gemma.block_size_tokens)
    assert gemma_basis.live_kv_tokens(live) == gemma.kv_cache_tokens


def test_record_keys_name_the_tuple_in_configmap_characters() -> None:
    plan = plan_for(*CASES[0])
    key = calibration_key(plan, "Qwen/Qwen2.5-7B-Instruct")
    text = key.record_key()
    assert text == "vllm-0.11.0.l4.tp1.auto.mnbt2048.seqs256.Qwen__Qwen2.5-7B-Instruct"
    other = dataclasses.replace(key, max_num_seqs=key.max_num_seqs + 1)
    assert other.record_key() != text  # the batch shape is part of the key
    odd = dataclasses.replace(key, model="s3://bucket/my model:v2/" + "x" * 400)
    long_key = odd.record_key()
    assert len(long_key) <= 253
    assert all(c.isalnum() or c in "-._" for c in long_key)
    assert long_key != dataclasses.replace(odd, model=odd.model + "y").record_key()


def test_the_key_uses_the_effective_batch_shape() -> None:
    """An empty spec field and the engine default it resolves to are the same tuple."""
    implicit = plan_for(*CASES[1])
    explicit = plan_for(*CASES[1], max_num_seqs=implicit.max_num_seqs)
    model = CASES[1][0]
    assert calibration_key(implicit, model) == calibration_key(explicit, model)
    assert isinstance(calibration_key(implicit, model), CalibrationKey)


@pytest.mark.parametrize("fraction", [0.9, 0.5])
def test_the_simulated_engine_holds_the_given_fraction_of_the_plan(fraction: float) -> None:
    argv = ["vllm", "serve", CASES[0][0], "--max-model-len", "4096"]
    args = parse_engine_args("vllm", "0.11.0", argv, "l4")
    planned = engine_plan(args)
    short = engine_plan(args, fraction)
    assert abs(short.num_blocks - fraction * planned.num_blocks) <= 1
    assert short.request.observed_non_kv_bytes is not None
