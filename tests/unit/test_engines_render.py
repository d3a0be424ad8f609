"""Flag rendering per engine and version, with hand-derived expectations.

Plans are built by hand (CapacityPlan is a frozen dataclass) so these tests do not depend on
the planner's arithmetic; each expected argv / fraction below is worked out in the comment
next to it from the engine's memory definition in the team reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kvscale.capacity.types import GIB, CapacityPlan, GpuSpec, LayerKind, ModelGeometry, PlanRequest
from kvscale.engines import (
    UnsupportedEngineError,
    engine_command,
    engine_endpoints,
    render,
    render_args,
)

MODEL = ModelGeometry(
    name="test/llama-8b-like",
    architecture="LlamaForCausalLM",
    num_layers=32,
    layer_kinds=(LayerKind.FULL,) * 32,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim_k=128,
    head_dim_v=128,
    dtype_bytes=2,
    max_position_embeddings=131072,
)
GPU = GpuSpec(
    id="test_80g",
    name="Test 80 GiB",
    vendor="NVIDIA",
    label_key="nvidia.com/gpu.product",
    label_values=("TEST-80G",),
    memory_bytes=80 * GIB,
    hbm_bandwidth_bytes_per_s=3.35e12,
    bf16_flops=989e12,
    fp8_flops=1979e12,
    fp8_kv_native=True,
    price_usd_per_hour=None,
)


def make_plan(
    engine: str = "vllm",
    version: str = "0.11.0",
    *,
    available_kv_bytes: int = 36 * GIB,
    weights_bytes: int = 15 * GIB,
    activation_bytes: int = 5 * GIB,
    non_torch_bytes: int = 0,
    cudagraph_bytes: int = 0,
    kv_cache_tokens: int = 294_912,
    fits: bool = True,
    **request_fields: Any,
) -> CapacityPlan:
    request = PlanRequest(
        model=MODEL, gpu=GPU, engine=engine, engine_version=version, **request_fields
    )
    return CapacityPlan(
        request=request,
        kv_bytes_per_token=131_072,
        weights_bytes=weights_bytes,
        activation_bytes=activation_bytes,
        non_torch_bytes=non_torch_bytes,
        cudagraph_bytes=cudagraph_bytes,
        requested_bytes=72 * GIB,
        available_kv_bytes=available_kv_bytes,
        block_size_tokens=16,
        page_bytes=65_536,
        num_groups=1,
        group_size_layers=32,
        num_blocks=kv_cache_tokens // 16,
        kv_cache_tokens=kv_cache_tokens,
        blocks_per_max_len_request=512,
        max_concurrency=kv_cache_tokens / 8192,
        gpu_memory_utilization=0.9,
        max_num_batched_tokens=8192,
        max_num_seqs=1024,
        fits=fits,
        max_fitting_context_tokens=kv_cache_tokens if fits else 4096,
        reason="" if fits else "needs 1.0 GiB, has 0.5 GiB; lower max_model_len",
    )


def pairs(argv: list[str] | tuple[str, ...]) -> dict[str, str | None]:
    """{flag: value or None for a bare switch}, for order-independent assertions."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if nxt is not None and not nxt.startswith("--"):
            out[flag] = nxt
            i += 2
        else:
            out[flag] = None
            i += 1
    return out


# ---- vLLM ----------------------------------------------------------------------------------


def test_vllm_default_plan_renders_exact_argv() -> None:
    argv = render_args(make_plan(), model_ref="meta-llama/Llama-3.1-8B")
    assert argv == [
        "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
        "--max-num-seqs", "1024",
        "--max-num-batched-tokens", "8192",
        "--tensor-parallel-size", "1",
        "--enable-prefix-caching",
        "--port", "8000",
    ]  # fmt: skip


def test_vllm_optional_values_render_when_asked() -> None:
    plan = make_plan(
        version="0.33.0",
        block_size_tokens=32,
        kv_cache_dtype="fp8",
        tensor_parallel=2,
        enable_prefix_caching=False,
        disable_hybrid_kv_cache_manager=True,
    )
    got = pairs(render_args(plan, model_ref="m", port=9000, served_model_name="chat"))
    assert got["--block-size"] == "32"
    assert got["--kv-cache-dtype"] == "fp8"
    assert got["--tensor-parallel-size"] == "2"
    assert "--no-enable-prefix-caching" in got and "--enable-prefix-caching" not in got
    assert "--disable-hybrid-kv-cache-manager" in got
    assert got["--served-model-name"] == "chat"
    assert got["--port"] == "9000"


@pytest.mark.parametrize(
    ("version", "has_bytes_flag", "util"),
    [
        # 0.9.2 lacks the flag: util = (40 KV + 15 weights + 5 activation) GiB / 80 GiB = 0.75
        ("0.9.2", False, "0.7500"),
        ("0.10.1.1", False, "0.7500"),  # first release with it not verified -> fallback
        ("0.10.2", True, None),
        ("0.33.0", True, None),
    ],
)
def test_vllm_kv_bytes_flag_or_equivalent_utilisation(
    version: str, has_bytes_flag: bool, util: str | None
) -> None:
    plan = make_plan(version=version, kv_cache_memory_bytes=40 * GIB)
    result = render(plan, model_ref="m")
    got = pairs(result.argv)
    assert ("--kv-cache-memory-bytes" in got) is has_bytes_flag
    assert got.get("--gpu-memory-utilization") == util
    if has_bytes_flag:
        assert got["--kv-cache-memory-bytes"] == str(40 * 1024**3)
        assert result.warnings == ()
    else:
        assert any("--gpu-memory-utilization 0.7500" in w for w in result.warnings)


def test_vllm_kv_bytes_fallback_clamps_at_one_and_says_so() -> None:
    # (70 + 15 + 5) / 80 = 1.125 > 1
    plan = make_plan(version="0.9.2", kv_cache_memory_bytes=70 * GIB)
    result = render(plan, model_ref="m")
    assert pairs(result.argv)["--gpu-memory-utilization"] == "1.0000"
    assert any("clamped" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("version", "present"),
    [("0.9.0", True), ("0.12.0", True), ("0.17.1", True), ("0.18.0", False), ("0.33.0", False)],
)
def test_vllm_swap_space_only_before_its_removal(version: str, present: bool) -> None:
    result = render(make_plan(version=version), model_ref="m", swap_space_gib=4)
    assert ("--swap-space" in result.argv) is present
    if present:
        assert pairs(result.argv)["--swap-space"] == "4"
    else:
        assert any(w.startswith("--swap-space not rendered") for w in result.warnings)


def test_vllm_swap_space_not_rendered_unless_asked() -> None:
    assert "--swap-space" not in render_args(make_plan(version="0.12.0"), model_ref="m")


def test_vllm_legacy_block_size_literal_is_enforced() -> None:
    with pytest.raises(UnsupportedEngineError) as exc:
        render(make_plan(version="0.10.2", block_size_tokens=48), model_ref="m")
    assert exc.value.field == "block_size_tokens"
    argv = render_args(make_plan(version="0.11.0", block_size_tokens=48), model_ref="m")
    assert pairs(argv)["--block-size"] == "48"


@pytest.mark.parametrize(
    ("version", "dtype", "expected"),
    [
        ("0.9.2", "fp8_e5m2", "fp8_e5m2"),
        ("0.11.0", "bfloat16", "bfloat16"),
        ("0.18.0", "float16", "float16"),
        ("0.9.2", "bfloat16", None),  # no such choice before 0.11; 16-bit model -> "auto"
    ],
)
def test_vllm_kv_cache_dtype_choices_by_version(
    version: str, dtype: str, expected: str | None
) -> None:
    result = render(make_plan(version=version, kv_cache_dtype=dtype), model_ref="m")
    assert pairs(result.argv).get("--kv-cache-dtype") == expected
    if expected is None:
        assert any("kv_cache_dtype bfloat16" in w for w in result.warnings)


def test_extra_args_are_appended_and_overrides_reported() -> None:
    result = render(
        make_plan(),
        model_ref="m",
        extra_args=("--gpu-memory-utilization=0.5", "--enforce-eager"),
    )
    assert result.argv[-2:] == ("--gpu-memory-utilization=0.5", "--enforce-eager")
    assert any("--gpu-memory-utilization" in w and "override" in w for w in result.warnings)


def test_plan_that_does_not_fit_is_rendered_with_its_reason() -> None:
    result = render(make_plan(fits=False), model_ref="m")
    assert any("lower max_model_len" in w for w in result.warnings)


# ---- SGLang --------------------------------------------------------------------------------


def test_sglang_mem_fraction_matches_reference_qwq32b_example() -> None:
    # Reference §9 (QwQ-32B, 4xL4, TP4, mfs 0.85): free at start 21.63 GiB, 6.09 GiB free after
    # weights -> weights+other = 15.54 GiB; pool = 6.09 - 21.63*0.15 = 2.8455 GiB = 46,620
    # tokens x 65,536 B. Inverting: (46,620*65,536 B + 15.54 GiB) / 21.63 GiB = 0.849998 -> 0.850.
    free_at_start = round(21.63 * GIB)
    non_torch = round(0.37 * GIB)  # device 22.0 GiB minus what is gone before SGLang measures
    plan = make_plan(
        engine="sglang",
        version="0.5.9",
        available_kv_bytes=46_620 * 65_536,
        weights_bytes=round(15.54 * GIB),
        activation_bytes=round(1.0 * GIB),
        non_torch_bytes=non_torch,
        gpu_memory_bytes=free_at_start + non_torch,
        tensor_parallel=4,
        max_model_len_tokens=32768,
    )
    result = render(plan, model_ref="Qwen/QwQ-32B")
    got = pairs(result.argv)
    assert got["--mem-fraction-static"] == "0.850"
    assert got["--tp-size"] == "4"
    assert got["--context-length"] == "32768"
    # 0.15 x 21.63 = 3.24 GiB outside the pool covers the 1 GiB activation: no warning
    assert result.warnings == ()


def test_sglang_renders_its_own_spellings() -> None:
    plan = make_plan(
        engine="sglang",
        version="0.5.23",
        kv_cache_dtype="fp8",
        block_size_tokens=64,
        enable_prefix_caching=False,
    )
    result = render(plan, model_ref="m", port=30000)
    got = pairs(result.argv)
    assert got["--max-running-requests"] == "1024"
    assert got["--chunked-prefill-size"] == "8192"
    assert got["--kv-cache-dtype"] == "fp8_e4m3"  # SGLang has no plain "fp8"
    assert got["--page-size"] == "64"
    assert "--disable-radix-cache" in got
    assert "--enable-metrics" in got  # else /metrics does not exist
    assert got["--host"] == "0.0.0.0"
    assert got["--port"] == "30000"
    assert result.command == ("python3", "-m", "sglang.launch_server", "--model-path", "m")


def test_sglang_warns_when_headroom_cannot_hold_activations() -> None:
    # mfs = (60 + 15) / 80 = 0.9375 -> 5 GiB outside the pool < 5 + 3 GiB activation + graphs
    plan = make_plan(
        engine="sglang",
        version="0.5.23",
        available_kv_bytes=60 * GIB,
        activation_bytes=5 * GIB,
        cudagraph_bytes=3 * GIB,
    )
    result = render(plan, model_ref="m")
    assert pairs(result.argv)["--mem-fraction-static"] == "0.938"
    assert any("CUDA-graph" in w for w in result.warnings)


def test_sglang_bf16_kv_dtype_before_it_existed_is_auto() -> None:
    result = render(
        make_plan(engine="sglang", version="0.5.3", kv_cache_dtype="bfloat16"), model_ref="m"
    )
    assert "--kv-cache-dtype" not in result.argv
    assert any("kv_cache_dtype bfloat16" in w for w in result.warnings)


# ---- TGI -----------------------------------------------------------------------------------


def test_tgi_converts_budget_into_cuda_memory_fraction() -> None:
    # fraction = (36 / 0.90 + 15 + 5 + 2) / 80 = (40 + 22) / 80 = 0.775
    plan = make_plan(engine="tgi", version="3.3.7", non_torch_bytes=2 * GIB, tensor_parallel=2)
    result = render(plan, model_ref="m", port=8080)
    assert list(result.argv) == [
        "--max-input-tokens", "8191",
        "--max-total-tokens", "8192",
        "--max-batch-total-tokens", "294912",
        "--cuda-memory-fraction", "0.775",
        "--num-shard", "2",
        "--port", "8080",
    ]  # fmt: skip
    assert result.command == ("text-generation-launcher", "--model-id", "m")


@pytest.mark.parametrize(
    ("version", "expected"), [("2.4.0", "fp8_e4m3fn"), ("3.3.7", "fp8_e4m3fn")]
)
def test_tgi_fp8_kv_dtype_spelling(version: str, expected: str) -> None:
    plan = make_plan(engine="tgi", version=version, kv_cache_dtype="fp8_e4m3")
    assert pairs(render_args(plan, model_ref="m"))["--kv-cache-dtype"] == expected


def test_tgi_fp8_kv_dtype_before_2_4_is_an_error() -> None:
    with pytest.raises(UnsupportedEngineError) as exc:
        render(make_plan(engine="tgi", version="2.3.1", kv_cache_dtype="fp8"), model_ref="m")
    assert exc.value.field == "kv_cache_dtype"


def test_tgi_refuses_a_plan_smaller_than_one_request() -> None:
    plan = make_plan(engine="tgi", version="3.3.7", kv_cache_tokens=4096, fits=False)
    with pytest.raises(UnsupportedEngineError) as exc:
        render(plan, model_ref="m")
    assert exc.value.field == "max_model_len_tokens"
    assert "4096" in str(exc.value)


# ---- TensorRT-LLM --------------------------------------------------------------------------


def test_trtllm_fraction_is_of_memory_free_after_weights() -> None:
    # fraction = 36 / (80 - 15 - 5 - 0) = 0.6
    plan = make_plan(engine="trtllm", version="1.3.0", kv_cache_dtype="fp8", tensor_parallel=4)
    result = render(plan, model_ref="nvidia/model", served_model_name="chat")
    assert list(result.argv) == [
        "--max_seq_len", "8192",
        "--max_num_tokens", "8192",
        "--max_batch_size", "1024",
        "--tp_size", "4",
        "--kv_cache_free_gpu_memory_fraction", "0.600",
        "--kv_cache_dtype", "fp8",
        "--served_model_name", "chat",
        "--host", "0.0.0.0",
        "--port", "8000",
    ]  # fmt: skip
    assert result.command == ("trtllm-serve", "serve", "nvidia/model")


@pytest.mark.parametrize("version", ["1.2.1", "1.3.0rc21"])
def test_trtllm_fp8_before_the_flag_existed_is_an_error(version: str) -> None:
    with pytest.raises(UnsupportedEngineError) as exc:
        render(make_plan(engine="trtllm", version=version, kv_cache_dtype="fp8"), model_ref="m")
    assert exc.value.field == "kv_cache_dtype"


def test_trtllm_old_release_drops_served_name_and_warns_about_metrics() -> None:
    result = render(
        make_plan(engine="trtllm", version="1.2.1"), model_ref="m", served_model_name="x"
    )
    assert "--served_model_name" not in result.argv
    assert any("--served_model_name not rendered" in w for w in result.warnings)
    assert any("KV-usage" in w for w in result.warnings)


# ---- dispatch and errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "version", "field"),
    [
        ("llamacpp", "1.0", "engine"),
        ("vllm", "0.8.5", "engine_version"),
        ("vllm", "0.34.0", "engine_version"),
        ("vllm", "latest", "engine_version"),
        ("sglang", "0.4.9", "engine_version"),
        ("tgi", "1.4.5", "engine_version"),
        ("trtllm", "0.21.0", "engine_version"),
    ],
)
def test_unknown_engine_or_version_is_a_clear_error(engine: str, version: str, field: str) -> None:
    with pytest.raises(UnsupportedEngineError) as exc:
        render(make_plan(engine=engine, version=version), model_ref="m")
    assert isinstance(exc.value, ValueError)
    assert exc.value.field == field
    assert "fix:" in str(exc.value)


@pytest.mark.parametrize(
    ("engine", "version", "command"),
    [
        ("vllm", "0.9.0", ["vllm", "serve", "org/m"]),
        ("vllm", "v0.33.0", ["vllm", "serve", "org/m"]),
        ("sglang", "0.5.23", ["python3", "-m", "sglang.launch_server", "--model-path", "org/m"]),
        ("tgi", "3.3.7", ["text-generation-launcher", "--model-id", "org/m"]),
        ("trtllm", "1.3.0", ["trtllm-serve", "serve", "org/m"]),
    ],
)
def test_engine_command(engine: str, version: str, command: list[str]) -> None:
    assert engine_command(engine, version, "org/m") == command


@pytest.mark.parametrize(
    ("engine", "health", "metrics"),
    [
        ("vllm", "/health", "/metrics"),
        ("sglang", "/health", "/metrics"),
        ("tgi", "/health", "/metrics"),
        ("trtllm", "/health", "/prometheus/metrics"),
    ],
)
def test_endpoints(engine: str, health: str, metrics: str) -> None:
    endpoints = engine_endpoints(engine)
    assert (endpoints.health_path, endpoints.metrics_path) == (health, metrics)
    if endpoints.metrics_need_flag:  # the flag that turns metrics on is always rendered
        plan = make_plan(engine=engine, version="0.5.23")
        assert endpoints.metrics_need_flag in render_args(plan, model_ref="m")


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_unset_counts_are_left_to_the_engine(engine: str) -> None:
    version = {"vllm": "0.11.0", "sglang": "0.5.23", "trtllm": "1.3.0"}[engine]
    plan = dataclasses.replace(
        make_plan(engine=engine, version=version), max_num_seqs=0, max_num_batched_tokens=0
    )
    argv = render_args(plan, model_ref="m")
    assert not {"--max-num-seqs", "--max-running-requests", "--max_batch_size"} & set(argv)
    assert not {"--max-num-batched-tokens", "--chunked-prefill-size", "--max_num_tokens"} & set(
        argv
    )


def test_vllm_prefix_caching_not_forced_on_linear_attention_hybrids() -> None:
    hybrid = dataclasses.replace(MODEL, layer_kinds=(LayerKind.LINEAR, LayerKind.FULL) * 16)
    plan = make_plan(version="0.11.0")
    plan = dataclasses.replace(plan, request=dataclasses.replace(plan.request, model=hybrid))
    result = render(plan, model_ref="m")
    assert "--enable-prefix-caching" not in result.argv
    assert "--no-enable-prefix-caching" not in result.argv
    assert any("prefix caching left to vLLM's default" in w for w in result.warnings)
