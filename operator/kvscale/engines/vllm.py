"""vLLM (0.9 → 0.33): flags, metric names, command and endpoints as version tables.

Facts come from the wheels diffed in the team reference (engines.md §1): sampled releases
0.9.2, 0.10.2, 0.11.0, 0.12.0, 0.18.0, 0.19.0, 0.20.0, 0.26.0, 0.27.0, 0.30.0, 0.33.0. A change
between two sampled releases is dated at the first sampled release that shows it, which is
conservative for "introduced" (we may skip a flag a release already had) and — for removals —
uses the upstream PR's release line where the reference gives it.
"""

from __future__ import annotations

from kvscale.capacity.release import (
    EngineVersion,
    SupportedVersions,
    UnsupportedEngineError,
    VersionRange,
)
from kvscale.capacity.types import LayerKind
from kvscale.engines.adapter import CommandRow, EngineAdapter, EngineEndpoints
from kvscale.engines.flags import (
    ChoiceRow,
    FlagSpec,
    FlagValue,
    RenderContext,
    choose_kv_cache_dtype,
    format_fraction,
    online_fp8_flag,
    plan_non_kv_bytes,
    positive_count,
)
from kvscale.engines.metrics import MetricRow

_R = VersionRange.of
KV_BYTES_FLAG = "--kv-cache-memory-bytes"

SUPPORT = SupportedVersions(
    engine="vllm",
    minimum=EngineVersion.parse("0.9.0"),
    below=EngineVersion.parse("0.34.0"),
    sampled=tuple(
        EngineVersion.parse(v)
        for v in (
            "0.9.2",
            "0.10.2",
            "0.11.0",
            "0.12.0",
            "0.18.0",
            "0.19.0",
            "0.20.0",
            "0.26.0",
            "0.27.0",
            "0.30.0",
            "0.33.0",
        )
    ),
)

# --kv-cache-dtype choices by release (engines.md §1.2). `fp8` is fp8_e4m3 on CUDA.
KV_DTYPES: tuple[ChoiceRow, ...] = (
    *(ChoiceRow(v) for v in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")),
    ChoiceRow("fp8_inc", _R("0.10.2")),
    ChoiceRow("bfloat16", _R("0.11.0")),
    ChoiceRow("float16", _R("0.18.0")),
    ChoiceRow("fp8_ds_mla", _R("0.18.0")),
    *(
        ChoiceRow(v, _R("0.20.0"))
        for v in (
            "turboquant_k8v4",
            "turboquant_4bit_nc",
            "turboquant_k3v4_nc",
            "turboquant_3bit_nc",
            "int8_per_token_head",
            "fp8_per_token_head",
            "nvfp4",
        )
    ),
    ChoiceRow("int4_per_token_head", _R("0.26.0")),
    ChoiceRow("nvfp4_ds_mla", _R("0.30.0")),
    ChoiceRow("nvfp4_4over6", _R("0.30.0")),
    # Seen in 0.33.0 only; first release between 0.30 and 0.33 not verified.
    *(
        ChoiceRow(v, _R("0.33.0"))
        for v in ("octave_k3v4", "octave_k3v3", "octave_k3v3_compact", "ultraquant_4bit")
    ),
)

# The --quantization value that makes vLLM quantize a 16-bit checkpoint to per-tensor fp8 as
# it loads: "fp8" up to 0.19; "fp8_per_tensor" from 0.20.0, where it enters
# QUANTIZATION_METHODS (quantization/__init__.py). Later releases keep "fp8" for checkpoints
# quantized ahead of time: its Fp8Config refuses online quantization from 0.31.0, and 0.32.0's
# model loader maps a 16-bit "fp8" to fp8_per_tensor with a deprecation warning (wheels 0.19.0
# to 0.33.0; the real 0.32.0 engine, e2e/engine/test_flags.py).
ONLINE_FP8: tuple[ChoiceRow, ...] = (
    ChoiceRow("fp8", _R(None, "0.20.0")),
    ChoiceRow("fp8_per_tensor", _R("0.20.0")),
)


# Up to 0.10.2 --block-size was Literal[1, 8, 16, 32, 64, 128]; later any positive int.
_LEGACY_BLOCK_SIZES = frozenset({1, 8, 16, 32, 64, 128})
_FREE_BLOCK_SIZE = _R("0.11.0")


def _kv_bytes_requested(ctx: RenderContext) -> int | None:
    """The user's KV bytes, else the planned pool when it is pinned (ADR 0012)."""
    request = ctx.plan.request
    if request.kv_cache_memory_bytes is not None:
        return request.kv_cache_memory_bytes
    if _pinnable(ctx):  # whole blocks: the engine's floor division gives back num_blocks
        plan = ctx.plan
        return plan.num_blocks * plan.page_bytes * plan.group_size_layers
    return None


def _pinnable(ctx: RenderContext) -> bool:
    """A pinned pool renders only where the bytes flag exists and the plan leaves KV memory;
    elsewhere the engine sizes its pool from its own profile (and a note says so)."""
    plan = ctx.plan
    return plan.request.pin_kv_pool and ctx.has_flag(KV_BYTES_FLAG) and plan.available_kv_bytes > 0


def equivalent_utilization(ctx: RenderContext) -> float:
    """Utilisation that leaves the requested KV bytes, for releases without the bytes flag.

    vLLM's budget is `total·util − weights − activation − non-torch − graphs` (reference §2),
    so util = (kv + non-KV) / total, using the plan's own non-KV estimates.
    """
    kv_bytes = _kv_bytes_requested(ctx) or 0
    return (kv_bytes + plan_non_kv_bytes(ctx.plan)) / ctx.total_memory_bytes


def _utilization(ctx: RenderContext) -> FlagValue:
    if _kv_bytes_requested(ctx) is None:
        return f"{ctx.plan.gpu_memory_utilization:g}"
    if ctx.has_flag(KV_BYTES_FLAG):
        return None  # vLLM ignores utilisation when the bytes are given
    return format_fraction(min(1.0, equivalent_utilization(ctx)), places=4)


def _kv_bytes(ctx: RenderContext) -> FlagValue:
    kv_bytes = _kv_bytes_requested(ctx)
    return None if kv_bytes is None else str(kv_bytes)


def _block_size(ctx: RenderContext) -> FlagValue:
    # Only when asked: MLA and hybrid models get a backend-chosen block size we must not pin.
    size = ctx.plan.request.block_size_tokens
    return None if size is None else str(size)


def _kv_dtype(ctx: RenderContext) -> FlagValue:
    return choose_kv_cache_dtype(ctx, KV_DTYPES, {}, "vllm")


def _has_linear_layers(ctx: RenderContext) -> bool:
    return LayerKind.LINEAR in ctx.plan.request.model.layer_kinds


def _prefix_caching_on(ctx: RenderContext) -> FlagValue:
    # Forcing it on for Mamba / linear-attention hybrids fails or is experimental depending on
    # the release; there vLLM's own default decides.
    return ctx.plan.request.enable_prefix_caching and not _has_linear_layers(ctx)


def _swap_space(ctx: RenderContext) -> FlagValue:
    return None if ctx.swap_space_gib is None else f"{ctx.swap_space_gib:g}"


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("--max-model-len", lambda c: str(c.plan.request.max_model_len_tokens)),
    FlagSpec("--gpu-memory-utilization", _utilization),
    FlagSpec(
        KV_BYTES_FLAG,
        _kv_bytes,
        _R("0.10.2"),
        note="present 0.10.2, absent 0.9.2 (PR #21489, July 2025); 0.10.0/0.10.1 not verified, "
        "so they get the utilisation fallback",
    ),
    FlagSpec("--max-num-seqs", lambda c: positive_count(c.plan.max_num_seqs)),
    FlagSpec("--max-num-batched-tokens", lambda c: positive_count(c.plan.max_num_batched_tokens)),
    FlagSpec("--block-size", _block_size),
    FlagSpec("--kv-cache-dtype", _kv_dtype, required=True, plan_field="kv_cache_dtype"),
    FlagSpec("--tensor-parallel-size", lambda c: str(c.plan.request.tensor_parallel)),
    online_fp8_flag(
        "--quantization",
        ONLINE_FP8,
        note="rendered only to quantize a 16-bit checkpoint as it loads: fp8, spelled "
        "fp8_per_tensor from 0.20.0 (ONLINE_FP8); a quantized checkpoint's config names its method",
    ),
    FlagSpec(
        "--enable-prefix-caching",
        _prefix_caching_on,
        note="BooleanOptionalAction verified from 0.9.2",
    ),
    FlagSpec("--no-enable-prefix-caching", lambda c: not c.plan.request.enable_prefix_caching),
    FlagSpec(
        "--disable-hybrid-kv-cache-manager",
        lambda c: c.plan.request.disable_hybrid_kv_cache_manager,
        _R("0.9.2"),
        note="not in engines.md: the option existed on main by vLLM PR #19383 (2025-06-09); "
        "0.9.2 is the first release assumed to have it (not verified by a wheel diff)",
    ),
    FlagSpec(
        "--swap-space",
        _swap_space,
        _R(None, "0.18.0"),
        note="removed from the CLI in 0.18.0 (PR #36216; argparse error if passed); V1 never "
        "used it. Rendered only when asked for.",
    ),
    FlagSpec("--served-model-name", lambda c: c.served_model_name),
    FlagSpec("--port", lambda c: str(c.port)),
)


def check(ctx: RenderContext) -> None:
    size = ctx.plan.request.block_size_tokens
    if (
        size is not None
        and not _FREE_BLOCK_SIZE.contains(ctx.version)
        and size not in _LEGACY_BLOCK_SIZES
    ):
        raise UnsupportedEngineError(
            "block_size_tokens",
            f"vllm {ctx.version} accepts --block-size only in {sorted(_LEGACY_BLOCK_SIZES)}",
            "pick one of those sizes, or vLLM ≥ 0.11.0 for other sizes",
        )


def notes(ctx: RenderContext) -> tuple[str, ...]:
    out: list[str] = []
    if ctx.plan.request.enable_prefix_caching and _has_linear_layers(ctx):
        out.append("prefix caching left to vLLM's default for a linear-attention/Mamba hybrid")
    request = ctx.plan.request
    if request.pin_kv_pool and request.kv_cache_memory_bytes is None and not _pinnable(ctx):
        out.append(
            f"kvCache.pool pinned needs vLLM ≥ 0.10.2 ({KV_BYTES_FLAG}) and a positive planned "
            "pool; the engine sizes its pool from its own memory profile"
        )
    if _kv_bytes_requested(ctx) is not None and not ctx.has_flag(KV_BYTES_FLAG):
        util = equivalent_utilization(ctx)
        clamp = " (clamped to 1.0: the plan's non-KV memory plus the KV bytes exceed the GPU)"
        out.append(
            f"{KV_BYTES_FLAG} needs vLLM ≥ 0.10.2; rendered the equivalent "
            f"--gpu-memory-utilization {format_fraction(min(1.0, util), places=4)} from the "
            "plan's non-KV estimates" + (clamp if util > 1.0 else "")
        )
    return tuple(out)


METRICS: tuple[MetricRow, ...] = (
    # Renamed in 0.9 (both emitted up to 0.10.2), old name hidden in 0.11, gone in 0.12. The
    # switch sits at 0.11.0 because the V0 engine (shipped until 0.10.2) only has the old name.
    MetricRow("kv_usage", "vllm:gpu_cache_usage_perc", _R(None, "0.11.0")),
    MetricRow("kv_usage", "vllm:kv_cache_usage_perc", _R("0.11.0")),
    MetricRow("num_requests_running", "vllm:num_requests_running"),
    MetricRow("num_requests_waiting", "vllm:num_requests_waiting"),
    MetricRow("preemptions", "vllm:num_preemptions_total"),
    MetricRow("ttft_seconds", "vllm:time_to_first_token_seconds"),
    # New name from 0.10.2, old one hidden in 0.12 and removed by 0.18; switch with the V0 exit.
    MetricRow("itl_seconds", "vllm:time_per_output_token_seconds", _R(None, "0.11.0")),
    MetricRow("itl_seconds", "vllm:inter_token_latency_seconds", _R("0.11.0")),
    MetricRow("queue_time_seconds", "vllm:request_queue_time_seconds"),
    MetricRow("e2e_latency_seconds", "vllm:e2e_request_latency_seconds"),
    MetricRow("cache_config_info", "vllm:cache_config_info"),
    MetricRow("cache_info_blocks_label", "num_gpu_blocks"),
    MetricRow("cache_info_block_size_label", "block_size"),
    *(
        MetricRow(
            field,
            label,
            _R("0.32.0"),
            note="CacheConfig field exported by every label-per-field cache_config_info; seen "
            "on the real 0.32.0 engine (engine tier), first release not verified",
        )
        for field, label in (
            ("cache_info_tokens_label", "kv_cache_size_tokens"),
            ("cache_info_concurrency_label", "kv_cache_max_concurrency"),
        )
    ),
    MetricRow("request_success", "vllm:request_success_total"),
    MetricRow(
        "request_rejections",
        "vllm:admission_rejections_total",
        _R("0.30.0"),
        note="with --max-num-queued-reqs/--max-num-queued-tokens; first release 0.28–0.30 "
        "not verified",
    ),
    MetricRow("prompt_tokens", "vllm:prompt_tokens_total"),
    MetricRow("generation_tokens", "vllm:generation_tokens_total"),
)

ADAPTER = EngineAdapter(
    name="vllm",
    display_name="vLLM",
    support=SUPPORT,
    # `vllm serve` predates 0.9 (every supported release has it); the older
    # `python -m vllm.entrypoints.openai.api_server --model` form is not needed here.
    commands=(CommandRow(("vllm", "serve", "{model}")),),
    flags=FLAGS,
    metrics=METRICS,
    endpoints=EngineEndpoints(health_path="/health", metrics_path="/metrics", default_port=8000),
    check=check,
    notes=notes,
)
