"""kvscale's plan given the pool equals the real engine's KV sizing, exactly.

For every KV geometry and several pools, block sizes, context lengths and prefill chunks, the
planner (mode a: the engine's KV memory is given) predicts the block count, the "KV cache size:
N tokens" figure and the maximum concurrency; the real engine, started from the argv kvscale
renders for that plan, sizes its cache and reports the same three numbers (its
`cache_config_info` labels and its log line). A configuration whose pool cannot hold one
max-length request must be refused by both, with the same largest context that would fit.

All engines are built in one engine-side process (`e2e/engine/kv_probe.py`), so vLLM is
imported once for the whole table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.realvllm import (
    KV_SIZING_LABELS,
    EngineEnv,
    KvCase,
    plan_for,
    serve_argv,
    simulated_metrics_text,
)
from kvscale.capacity.types import CapacityPlan, LayerKind

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
# (pool bytes, max_model_len, max_num_batched_tokens, block size): pools that are not a whole
# number of pages, lengths that are not a whole number of blocks, chunks below and above the
# sliding window, block sizes the CPU attention backend accepts (multiples of 32).
POOLS: tuple[tuple[int, int, int, int], ...] = (
    (8 * MIB, 2048, 2048, 32),
    (9_000_000, 1000, 1024, 64),
    (12_345_678, 4000, 512, 128),
    (5_000_000, 3000, 768, 96),
    (32 * MIB, 4096, 1024, 64),  # large enough for every geometry (Qwen3 pays 4 KiB a token)
    (1_000_000, 4096, 2048, 32),  # holds no 4096-token request in any geometry
)
SLIDING_OR_FULL = ("llama-gqa", "llama-mqa", "mistral-swa", "gemma2-hybrid", "qwen3-qknorm")
MLA = "deepseek-v2-mla"


def _host_has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return False


# vLLM 0.32.0's CPU platform (vllm/platforms/cpu.py, check_and_update_config) picks the MLA
# backend by host: on x86 with AMX tiles the AMX MLA backend, which takes block sizes that are
# multiples of 32 (and defaults to 128, the CPU platform's default); elsewhere the reference
# MLA kernel, which takes only 16 and overrides any other. Every MLA case names its block size,
# so kvscale renders --block-size and both sides use the same one on either kind of host.
MLA_TAKES_POOL_BLOCK_SIZES = _host_has_amx()

CASES: tuple[KvCase, ...] = (
    *(
        KvCase(g, pool, length, mnbt, block)
        for g in SLIDING_OR_FULL
        for pool, length, mnbt, block in POOLS
    ),
    *(
        KvCase(MLA, pool, length, mnbt, block if MLA_TAKES_POOL_BLOCK_SIZES else 16)
        for pool, length, mnbt, block in POOLS
    ),
)
TOO_SMALL = re.compile(r"To serve at least one request with the model's max seq len \((\d+)\)")
ESTIMATE = re.compile(r"the estimated maximum model length is (\d+)")
LOG_LINE = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
    r"([\d.]+)x"
)


@pytest.fixture(scope="module")
def planned(engine_env: EngineEnv, tiny_models: dict[str, Path]) -> dict[str, CapacityPlan]:
    return {c.id: plan_for(c, tiny_models[c.geometry], engine_env.version) for c in CASES}


@pytest.fixture(scope="module")
def engine_sizes(
    engine_env: EngineEnv, tiny_models: dict[str, Path], planned: dict[str, CapacityPlan]
) -> dict[str, dict[str, Any]]:
    """The engine's sizing of every case, from the argv kvscale rendered for its plan."""
    cases = [
        {"id": c.id, "argv": serve_argv(planned[c.id], tiny_models[c.geometry])} for c in CASES
    ]
    return {r["id"]: r for r in engine_env.run_script("kv_probe.py", [], stdin=cases)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_plan_given_the_pool_equals_the_engines_sizing(
    case: KvCase, planned: dict[str, CapacityPlan], engine_sizes: dict[str, dict[str, Any]]
) -> None:
    plan, engine = planned[case.id], engine_sizes[case.id]
    if not plan.fits:
        error = engine["error"] or ""
        refused = TOO_SMALL.search(error)
        assert refused, f"kvscale says it does not fit ({plan.reason}); the engine: {engine}"
        estimate = ESTIMATE.search(error)
        engine_fitting = int(estimate.group(1)) if estimate else 0
        assert min(plan.max_fitting_context_tokens, case.max_model_len) == engine_fitting
        print(f"\n{case.id}: refused by both; largest fitting context {engine_fitting}")
        return
    assert engine["error"] is None, engine["error"]
    labels = engine["cache_config"]
    assert int(labels["block_size"]) == plan.block_size_tokens
    assert int(labels["num_gpu_blocks"]) == plan.num_blocks
    assert int(labels["kv_cache_size_tokens"]) == plan.kv_cache_tokens
    assert float(labels["kv_cache_max_concurrency"]) == plan.max_concurrency  # unrounded
    (line,) = engine["log_lines"]
    logged = LOG_LINE.search(line)
    assert logged, line
    assert logged.group(1) == f"{plan.kv_cache_tokens:,}"
    assert logged.group(2) == f"{case.max_model_len:,}"
    assert logged.group(3) == f"{plan.max_concurrency:.2f}"
    print(
        f"\n{case.id}: blocks {plan.num_blocks}, tokens {plan.kv_cache_tokens}, "
        f"concurrency {plan.max_concurrency!r} (kvscale = engine)"
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_simulated_engine_reports_the_real_pool(
    case: KvCase,
    planned: dict[str, CapacityPlan],
    engine_sizes: dict[str, dict[str, Any]],
    tiny_models: dict[str, Path],
    engine_env: EngineEnv,
) -> None:
    """kvscale's simulated vLLM, started with the same flags, carries the same pool labels
    (for a sliding-window model the token figure is concurrency x max_model_len, as vLLM's)."""
    if not planned[case.id].fits:
        pytest.skip("the engine refused this pool; nothing to report")
    argv = serve_argv(planned[case.id], tiny_models[case.geometry])
    text = simulated_metrics_text(argv[1:], tiny_models[case.geometry], engine_env.version)
    (info,) = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vllm:cache_config_info"
    ]
    real = engine_sizes[case.id]["cache_config"]
    assert {k: info.labels[k] for k in KV_SIZING_LABELS} == {k: real[k] for k in KV_SIZING_LABELS}


def test_the_table_exercises_every_layout(planned: dict[str, CapacityPlan]) -> None:
    """The geometries differ where the planner branches: groups, windows, MLA, refusals."""
    fitting = [p for p in planned.values() if p.fits]
    assert {p.num_groups for p in fitting} == {1, 2}
    assert any(p.kv_cache_tokens != p.num_blocks * p.block_size_tokens for p in fitting)
    assert any(not p.fits for p in planned.values())
    kinds = {g.kind for p in fitting for g in p.kv_groups}
    assert kinds == {LayerKind.FULL, LayerKind.SLIDING, LayerKind.MLA}
