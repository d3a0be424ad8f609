"""NVIDIA TensorRT-LLM `trtllm-serve` (1.0 → 1.4): flag/metric tables.

`--kv_cache_free_gpu_memory_fraction` is a share of the memory still free *after* the weights
and the warm-up forward pass, not of the device total, so

    fraction = available_kv_bytes / (total − weights − activation − non-torch).

Unverified by a wheel diff (PyPI only has an sdist stub): versions are dated from code comments,
PR merge dates and NVIDIA docs (engines.md §4). 1.3.0 pre-releases sort before 1.3.0 and so are
treated like 1.2.x — conservative for flags that appeared "in the 1.3.0rc line".
"""

from __future__ import annotations

from kvscale.capacity.release import EngineVersion, SupportedVersions, VersionRange
from kvscale.engines.adapter import CommandRow, EngineAdapter, EngineEndpoints
from kvscale.engines.flags import (
    ChoiceRow,
    FlagSpec,
    FlagValue,
    RenderContext,
    choose_kv_cache_dtype,
    format_fraction,
    positive_count,
)
from kvscale.engines.metrics import MetricRow

_R = VersionRange.of
DEFAULT_TOKENS_PER_BLOCK = 32  # KvCacheConfig.tokens_per_block; YAML only
_NATIVE_METRICS = _R("1.3.0")  # trtllm_* prefix, PR #12545 / #12636 (2026-03)

SUPPORT = SupportedVersions(
    engine="trtllm",
    minimum=EngineVersion.parse("1.0.0"),
    below=EngineVersion.parse("1.5.0"),
)

# --kv_cache_dtype came with PR #11487 (1.3.0rc line); 1.2.x only takes the dtype via YAML.
KV_DTYPES: tuple[ChoiceRow, ...] = tuple(
    ChoiceRow(v, _R("1.3.0")) for v in ("auto", "fp8", "nvfp4")
)
KV_DTYPE_ALIASES = {"fp8_e4m3": "fp8"}
_YAML_DTYPE_HINT = " (1.2.x takes it only as kv_cache_config.dtype in --extra_llm_api_options YAML)"


def free_after_weights_bytes(ctx: RenderContext) -> int:
    plan = ctx.plan
    return (
        ctx.total_memory_bytes - plan.weights_bytes - plan.activation_bytes - plan.non_torch_bytes
    )


def kv_free_fraction(ctx: RenderContext) -> float:
    free_bytes = free_after_weights_bytes(ctx)
    return ctx.plan.available_kv_bytes / free_bytes if free_bytes > 0 else float("inf")


def _fraction(ctx: RenderContext) -> FlagValue:
    return format_fraction(min(1.0, kv_free_fraction(ctx)))


def _kv_dtype(ctx: RenderContext) -> FlagValue:
    return choose_kv_cache_dtype(ctx, KV_DTYPES, KV_DTYPE_ALIASES, "trtllm", _YAML_DTYPE_HINT)


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("--max_seq_len", lambda c: str(c.plan.request.max_model_len_tokens)),
    FlagSpec("--max_num_tokens", lambda c: positive_count(c.plan.max_num_batched_tokens)),
    FlagSpec("--max_batch_size", lambda c: positive_count(c.plan.max_num_seqs)),
    # Older serve.py only knows the short form; newer builds accept both.
    FlagSpec("--tp_size", lambda c: str(c.plan.request.tensor_parallel)),
    FlagSpec("--kv_cache_free_gpu_memory_fraction", _fraction),
    FlagSpec(
        "--kv_cache_dtype",
        _kv_dtype,
        _R("1.3.0"),
        note="PR #11487 (merged 2026-03-03), 1.3.0rc line; first release not verified",
        required=True,
        plan_field="kv_cache_dtype",
    ),
    FlagSpec(
        "--served_model_name",
        lambda c: c.served_model_name,
        _R("1.3.0"),
        note="seen in the newer (1.3) serve.py only; first release not verified",
    ),
    # trtllm-serve binds localhost by default, unreachable from a Service.
    FlagSpec("--host", lambda c: "0.0.0.0"),
    FlagSpec("--port", lambda c: str(c.port)),
)


def notes(ctx: RenderContext) -> tuple[str, ...]:
    request = ctx.plan.request
    out: list[str] = []
    if kv_free_fraction(ctx) > 1.0:
        out.append(
            "--kv_cache_free_gpu_memory_fraction clamped to 1.000: the plan's KV budget exceeds "
            "what is free after weights and activations"
        )
    if not request.enable_prefix_caching:
        out.append(
            "TensorRT-LLM block reuse is on by default; turning it off needs "
            "kv_cache_config.enable_block_reuse: false in an --extra_llm_api_options YAML"
        )
    size = request.block_size_tokens
    if size is not None and size != DEFAULT_TOKENS_PER_BLOCK:
        out.append(
            f"block size {size} not rendered: trtllm-serve takes tokens_per_block only from "
            f"YAML (default {DEFAULT_TOKENS_PER_BLOCK})"
        )
    if not _NATIVE_METRICS.contains(ctx.version):
        out.append(
            f"trtllm {ctx.version} exposes no KV-usage or queue gauges (only latency "
            "histograms); KV-based autoscaling needs ≥ 1.3.0"
        )
    return tuple(out)


_OLD = _R(None, "1.3.0")
METRICS: tuple[MetricRow, ...] = (
    # ~1.0–1.2 (PR #5785): five unprefixed series only.
    MetricRow("request_success", "request_success_total", _OLD),
    MetricRow("e2e_latency_seconds", "e2e_request_latency_seconds", _OLD),
    MetricRow("ttft_seconds", "time_to_first_token_seconds", _OLD),
    MetricRow("itl_seconds", "time_per_output_token_seconds", _OLD),
    MetricRow("queue_time_seconds", "request_queue_time_seconds", _OLD),
    # 1.3+: native trtllm_ prefix (names from the collector docstring; check the image).
    MetricRow("kv_usage", "trtllm_kv_cache_utilization", _NATIVE_METRICS),
    MetricRow("num_requests_running", "trtllm_num_requests_running", _NATIVE_METRICS),
    MetricRow("num_requests_waiting", "trtllm_num_requests_waiting", _NATIVE_METRICS),
    MetricRow("ttft_seconds", "trtllm_time_to_first_token_seconds", _NATIVE_METRICS),
    MetricRow("itl_seconds", "trtllm_time_per_output_token_seconds", _NATIVE_METRICS),
    MetricRow("queue_time_seconds", "trtllm_request_queue_time_seconds", _NATIVE_METRICS),
    MetricRow("e2e_latency_seconds", "trtllm_e2e_request_latency_seconds", _NATIVE_METRICS),
    MetricRow("request_success", "trtllm_request_success_total", _NATIVE_METRICS),
    MetricRow("prompt_tokens", "trtllm_prompt_tokens_total", _NATIVE_METRICS),
    MetricRow("generation_tokens", "trtllm_generation_tokens_total", _NATIVE_METRICS),
    # No preemption counter: trtllm-serve forces GUARANTEED_NO_EVICT (requests wait instead).
)

ADAPTER = EngineAdapter(
    name="trtllm",
    display_name="TensorRT-LLM",
    support=SUPPORT,
    commands=(CommandRow(("trtllm-serve", "serve", "{model}")),),
    flags=FLAGS,
    metrics=METRICS,
    endpoints=EngineEndpoints(
        health_path="/health", metrics_path="/prometheus/metrics", default_port=8000
    ),
    notes=notes,
)
