"""Hugging Face TGI (text-generation-launcher 2.0 → 3.3.x): flag/metric tables.

TGI sizes its KV cache at warmup from what is free after weights and the warmup batch:
`kv = TGI_WIGGLE_ROOM · (free − (1 − cuda_memory_fraction) · total)` (server
`get_cuda_free_memory` and `flash_causal_lm.warmup`; wiggle room 0.90 by default). So

    cuda_memory_fraction = (kv / 0.90 + weights + activation + non-torch) / total.

`--max-batch-total-tokens` is ignored (with a deprecation warning) for Flash-Attention models,
which is nearly all of them, so the fraction is the knob that really sets capacity; the token
figure is still rendered because the launcher validates the per-request limits against it.
Facts: engines.md §3 (snapshot after v3.3.7; TGI is in maintenance mode).
"""

from __future__ import annotations

from kvscale.capacity.release import (
    EngineVersion,
    SupportedVersions,
    UnsupportedEngineError,
    VersionRange,
)
from kvscale.engines.adapter import CommandRow, EngineAdapter, EngineEndpoints
from kvscale.engines.flags import (
    ChoiceRow,
    FlagSpec,
    FlagValue,
    RenderContext,
    choose_kv_cache_dtype,
    format_fraction,
    online_fp8_flag,
)
from kvscale.engines.metrics import MetricRow

_R = VersionRange.of
WIGGLE_ROOM_FRAC = 0.90  # env TGI_WIGGLE_ROOM default

SUPPORT = SupportedVersions(
    engine="tgi",
    minimum=EngineVersion.parse("2.0.0"),  # --max-input-tokens (renamed from --max-input-length)
    below=EngineVersion.parse("3.4.0"),
    sampled=(EngineVersion.parse("3.3.7"),),
)

KV_DTYPES: tuple[ChoiceRow, ...] = (
    ChoiceRow("fp8_e4m3fn", _R("2.4.0")),
    ChoiceRow("fp8_e5m2", _R("2.4.0")),
)
KV_DTYPE_ALIASES = {"fp8": "fp8_e4m3fn", "fp8_e4m3": "fp8_e4m3fn"}


def cuda_memory_fraction(ctx: RenderContext) -> float:
    plan = ctx.plan
    non_kv_bytes = plan.weights_bytes + plan.activation_bytes + plan.non_torch_bytes
    return (plan.available_kv_bytes / WIGGLE_ROOM_FRAC + non_kv_bytes) / ctx.total_memory_bytes


def _fraction(ctx: RenderContext) -> FlagValue:
    return format_fraction(min(1.0, cuda_memory_fraction(ctx)))


def _kv_dtype(ctx: RenderContext) -> FlagValue:
    return choose_kv_cache_dtype(ctx, KV_DTYPES, KV_DTYPE_ALIASES, "tgi")


# --quantize fp8 quantizes each 16-bit tensor as it loads it: `Quantization::Fp8` in the
# launcher's enum from v2.0.0 (launcher/src/main.rs), the server's `get_linear` building an
# `Fp8Linear` that calls `fp8_quantize` on the tensor (utils/layers.py, v2.0.0; layers/fp8.py
# `Fp8Weight.get_linear`, v3.3.7). Every supported release has it.
ONLINE_FP8: tuple[ChoiceRow, ...] = (ChoiceRow("fp8"),)

FLAGS: tuple[FlagSpec, ...] = (
    # The launcher requires max_input_tokens < max_total_tokens (per request).
    FlagSpec("--max-input-tokens", lambda c: str(c.plan.request.max_model_len_tokens - 1)),
    FlagSpec("--max-total-tokens", lambda c: str(c.plan.request.max_model_len_tokens)),
    FlagSpec("--max-batch-total-tokens", lambda c: str(c.plan.kv_cache_tokens)),
    FlagSpec("--cuda-memory-fraction", _fraction),
    FlagSpec(
        "--kv-cache-dtype",
        _kv_dtype,
        _R("2.4.0"),
        required=True,
        plan_field="kv_cache_dtype",
    ),
    FlagSpec("--num-shard", lambda c: str(c.plan.request.tensor_parallel)),
    online_fp8_flag(
        "--quantize",
        ONLINE_FP8,
        note="fp8 among the launcher's --quantize values from v2.0.0; each 16-bit tensor is "
        "quantized as it loads",
    ),
    FlagSpec("--port", lambda c: str(c.port)),
)


def check(ctx: RenderContext) -> None:
    max_len = ctx.plan.request.max_model_len_tokens
    if ctx.plan.kv_cache_tokens < max_len:
        raise UnsupportedEngineError(
            "max_model_len_tokens",
            f"TGI refuses --max-total-tokens {max_len} above --max-batch-total-tokens "
            f"{ctx.plan.kv_cache_tokens} (the plan's KV tokens)",
            f"lower max_model_len to ≤ {ctx.plan.max_fitting_context_tokens} or give the "
            "replica more KV memory",
        )


def notes(ctx: RenderContext) -> tuple[str, ...]:
    request = ctx.plan.request
    out: list[str] = []
    if cuda_memory_fraction(ctx) > 1.0:
        out.append(
            "--cuda-memory-fraction clamped to 1.000: with TGI's 10 % wiggle room the plan's "
            "KV budget does not fit; TGI will size a smaller cache"
        )
    if not request.enable_prefix_caching:
        out.append("TGI turns prefix caching off by env PREFIX_CACHING=0, not by a flag")
    if request.block_size_tokens is not None:
        out.append("TGI's block size follows its attention backend (env ATTENTION); not rendered")
    if ctx.served_model_name is not None:
        out.append("served model name not rendered for TGI (flag availability not verified)")
    return tuple(out)


METRICS: tuple[MetricRow, ...] = (
    # No 0..1 gauge: usage = reserved tokens of the running batch / pool size.
    MetricRow("kv_used_tokens", "tgi_batch_current_max_tokens"),
    MetricRow(
        "kv_capacity_tokens",
        "tgi_batch_max_total_tokens",
        _R("2.3.1"),
        note="undocumented gauge, in the source since v2.3.1",
    ),
    MetricRow("num_requests_running", "tgi_batch_current_size"),
    MetricRow("num_requests_waiting", "tgi_queue_size"),
    # No preemption (admission is budget-based) and no TTFT histogram in TGI.
    MetricRow("itl_seconds", "tgi_request_mean_time_per_token_duration"),
    MetricRow("queue_time_seconds", "tgi_request_queue_duration"),
    MetricRow("e2e_latency_seconds", "tgi_request_duration"),
    MetricRow("request_success", "tgi_request_success"),
    MetricRow("request_rejections", 'tgi_request_failure{err="overloaded"}'),
    # Histogram sums are counters of tokens.
    MetricRow("prompt_tokens", "tgi_request_input_length_sum"),
    MetricRow("generation_tokens", "tgi_request_generated_tokens_sum"),
)

ADAPTER = EngineAdapter(
    name="tgi",
    display_name="TGI",
    support=SUPPORT,
    commands=(CommandRow(("text-generation-launcher", "--model-id", "{model}")),),
    flags=FLAGS,
    metrics=METRICS,
    endpoints=EngineEndpoints(health_path="/health", metrics_path="/metrics", default_port=3000),
    check=check,
    notes=notes,
)
