"""SGLang (0.4.10 → 0.5.x): flags, metric names, command and endpoints as version tables.

The memory knob means something else than vLLM's: `--mem-fraction-static` is the share of the
memory *free when the server starts* that weights plus the KV pool may take; activations and
CUDA graphs live in the rest (reference vllm-kv-memory.md §9). So the plan's KV budget becomes

    mfs = (available_kv_bytes + weights_bytes) / free_at_start_bytes,
    free_at_start_bytes = device memory − non-torch (CUDA context / NCCL, taken before SGLang
                          measures).

Facts from engines.md §2 (sampled wheels 0.4.10.post2, 0.5.3, 0.5.9, 0.5.14, 0.5.18, 0.5.21,
0.5.23).
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
    online_fp8_flag,
    positive_count,
)
from kvscale.engines.metrics import MetricRow

_R = VersionRange.of
GIB = 1024**3

SUPPORT = SupportedVersions(
    engine="sglang",
    minimum=EngineVersion.parse("0.4.10"),
    below=EngineVersion.parse("0.6.0"),
    sampled=tuple(
        EngineVersion.parse(v)
        for v in ("0.4.10.post2", "0.5.3", "0.5.9", "0.5.14", "0.5.18", "0.5.21", "0.5.23")
    ),
)

# --kv-cache-dtype choices (engines.md §2.1). A first/last release between two sampled ones is
# dated conservatively: introduced at the later sample, removed at the first sample lacking it
# (or, when unknown, at the sample after the last one showing it).
KV_DTYPES: tuple[ChoiceRow, ...] = (
    *(ChoiceRow(v) for v in ("auto", "fp8_e5m2", "fp8_e4m3")),
    ChoiceRow("bf16", _R("0.5.9")),
    ChoiceRow("bfloat16", _R("0.5.9")),
    ChoiceRow("fp4_e2m1", _R("0.5.9", "0.5.21")),
    *(ChoiceRow(v, _R("0.5.18")) for v in ("mxfp8", "nvfp4", "fp4_mx_block16")),
)
# SGLang has no plain "fp8"; on CUDA vLLM's fp8 is e4m3, so the plan's bytes are the same.
KV_DTYPE_ALIASES = {"fp8": "fp8_e4m3"}


def free_at_start_bytes(ctx: RenderContext) -> int:
    return ctx.total_memory_bytes - ctx.plan.non_torch_bytes


def mem_fraction_static(ctx: RenderContext) -> float:
    """SGLang's fraction that yields the plan's KV bytes (see the module docstring)."""
    plan = ctx.plan
    return (plan.available_kv_bytes + plan.weights_bytes) / free_at_start_bytes(ctx)


def _mfs(ctx: RenderContext) -> FlagValue:
    return format_fraction(min(1.0, mem_fraction_static(ctx)))


def _page_size(ctx: RenderContext) -> FlagValue:
    size = ctx.plan.request.block_size_tokens
    return None if size is None else str(size)


def _kv_dtype(ctx: RenderContext) -> FlagValue:
    return choose_kv_cache_dtype(ctx, KV_DTYPES, KV_DTYPE_ALIASES, "sglang")


# --quantization fp8 quantizes a 16-bit checkpoint as it loads (choices of every sampled release).
ONLINE_FP8: tuple[ChoiceRow, ...] = (ChoiceRow("fp8"),)

FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("--context-length", lambda c: str(c.plan.request.max_model_len_tokens)),
    FlagSpec("--mem-fraction-static", _mfs),
    FlagSpec("--max-running-requests", lambda c: positive_count(c.plan.max_num_seqs)),
    FlagSpec("--chunked-prefill-size", lambda c: positive_count(c.plan.max_num_batched_tokens)),
    FlagSpec("--page-size", _page_size),
    FlagSpec("--kv-cache-dtype", _kv_dtype, required=True, plan_field="kv_cache_dtype"),
    FlagSpec("--tp-size", lambda c: str(c.plan.request.tensor_parallel)),
    online_fp8_flag(
        "--quantization",
        ONLINE_FP8,
        note="fp8 in the choices of every sampled release; rendered only to quantize a 16-bit "
        "checkpoint as it loads",
    ),
    FlagSpec("--disable-radix-cache", lambda c: not c.plan.request.enable_prefix_caching),
    # Off by default; without it /metrics does not exist and the autoscaler is blind.
    FlagSpec("--enable-metrics", lambda c: True),
    FlagSpec("--served-model-name", lambda c: c.served_model_name),
    # SGLang listens on 127.0.0.1 by default, unreachable from a Service.
    FlagSpec("--host", lambda c: "0.0.0.0"),
    FlagSpec("--port", lambda c: str(c.port)),
)


def notes(ctx: RenderContext) -> tuple[str, ...]:
    plan = ctx.plan
    mfs = mem_fraction_static(ctx)
    out: list[str] = []
    if mfs > 1.0:
        out.append(
            f"--mem-fraction-static would be {mfs:.3f} > 1 for the plan's KV budget; "
            "clamped to 1.000, SGLang will size a smaller pool than planned"
        )
    headroom_bytes = (1.0 - min(mfs, 1.0)) * free_at_start_bytes(ctx)
    needed_bytes = plan.activation_bytes + plan.cudagraph_bytes
    if headroom_bytes < needed_bytes:
        out.append(
            f"SGLang keeps {headroom_bytes / GIB:.2f} GiB outside the static pool but the plan "
            f"expects {needed_bytes / GIB:.2f} GiB of activations + CUDA graphs; lower the KV "
            "budget or expect out-of-memory at CUDA-graph capture"
        )
    return tuple(out)


METRICS: tuple[MetricRow, ...] = (
    MetricRow("kv_usage", "sglang:token_usage", note="counts evictable radix-cached tokens free"),
    MetricRow("kv_capacity_tokens", "sglang:max_total_num_tokens", _R("0.5.14")),
    MetricRow("num_requests_running", "sglang:num_running_reqs"),
    MetricRow("num_requests_waiting", "sglang:num_queue_reqs"),
    MetricRow(
        "preemptions",
        "sglang:num_retracted_requests_total",
        _R("0.5.9"),
        note="0.4.10 had a gauge sglang:total_retracted_reqs; 0.5.3–0.5.8 not verified",
    ),
    MetricRow("ttft_seconds", "sglang:time_to_first_token_seconds"),
    MetricRow("itl_seconds", "sglang:inter_token_latency_seconds"),
    MetricRow("e2e_latency_seconds", "sglang:e2e_request_latency_seconds"),
    MetricRow(
        "queue_time_seconds",
        "sglang:queue_time_seconds",
        note="read in 0.5.23; older releases not verified",
    ),
    MetricRow("cache_config_info", "sglang:cache_config_info", _R("0.5.9", "0.5.14")),
    MetricRow("cache_info_blocks_label", "num_pages", _R("0.5.9", "0.5.14")),
    MetricRow("cache_info_block_size_label", "page_size", _R("0.5.9", "0.5.14")),
    MetricRow(
        "request_success",
        "sglang:num_requests_total",
        note="all finished requests (SGLang has no success-only counter)",
    ),
    MetricRow(
        "request_rejections",
        "sglang:num_aborted_requests_total",
        _R("0.5.3"),
        note="queue-full 503s and client aborts alike",
    ),
    MetricRow("prompt_tokens", "sglang:prompt_tokens_total"),
    MetricRow("generation_tokens", "sglang:generation_tokens_total"),
)

ADAPTER = EngineAdapter(
    name="sglang",
    display_name="SGLang",
    support=SUPPORT,
    commands=(CommandRow(("python3", "-m", "sglang.launch_server", "--model-path", "{model}")),),
    flags=FLAGS,
    metrics=METRICS,
    endpoints=EngineEndpoints(
        health_path="/health",
        metrics_path="/metrics",
        default_port=30000,
        metrics_need_flag="--enable-metrics",
    ),
    notes=notes,
)
