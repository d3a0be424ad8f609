"""Model geometry from a Hugging Face config.json: what one token and one sequence cost.

The per-layer attention kind decides how much state a layer keeps, so it is read with one
rule per config convention (first match wins), not with per-model special cases spread
around the planner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from kvscale.capacity.configkeys import Config, get_key, moe_dims, optional_int, require_int
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.rope import rope_tables
from kvscale.capacity.types import LayerKind, ModelGeometry
from kvscale.capacity.vision import vision_params
from kvscale.capacity.weights import (
    ParamEstimate,
    checkpoint_bytes,
    estimate_params,
    loaded_params,
    quantized_weight_bits,
    weight_tensors,
)

DTYPE_BYTES: Mapping[str, int] = {
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "float32": 4,
    "fp32": 4,
    "float": 4,
}

# names used in `layer_types` (transformers >= 4.5x and vendor configs)
LAYER_TYPE_NAMES: Mapping[str, LayerKind] = {
    "full_attention": LayerKind.FULL,
    "attention": LayerKind.FULL,
    "global_attention": LayerKind.FULL,
    "sliding_attention": LayerKind.SLIDING,
    "local_attention": LayerKind.SLIDING,
    "chunked_attention": LayerKind.CHUNKED,
    "linear_attention": LayerKind.LINEAR,
    "mamba": LayerKind.LINEAR,
    "mamba2": LayerKind.LINEAR,
    "conv": LayerKind.LINEAR,
}

# Nemotron-H `hybrid_override_pattern`: M = Mamba2, * = attention, - = MLP, E = MoE
NEMOTRON_PATTERN: Mapping[str, LayerKind] = {
    "M": LayerKind.LINEAR,
    "*": LayerKind.FULL,
    "-": LayerKind.NONE,
    "E": LayerKind.NONE,
}

LLAMA4_NOPE_INTERVAL = 4  # Llama 4: every 4th layer is a global NoPE layer by default


def flatten_config(config: Config) -> dict[str, Any]:
    """Merge a multimodal wrapper's `text_config` over its top level (the LM is what caches)."""
    flat = dict(config)
    text = config.get("text_config")
    if isinstance(text, Mapping):
        flat.update(text)
        for key in ("quantization_config", "torch_dtype", "dtype"):
            if config.get(key) is not None and text.get(key) is None:
                flat[key] = config[key]
    return flat


def parse_dtype_bytes(cfg: Config) -> int:
    name = get_key(cfg, "torch_dtype", "dtype")
    if name is None:
        return 2  # HF default for every modern checkpoint
    key = str(name).removeprefix("torch.").lower()
    if key not in DTYPE_BYTES:
        raise CapacityInputError(
            "config.torch_dtype", f"unknown dtype {name!r}", "use bfloat16, float16 or float32"
        )
    return DTYPE_BYTES[key]


# --- per-layer attention kind -------------------------------------------------------------


def _kinds_from_layer_types(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    names = cfg.get("layer_types")
    if not isinstance(names, Sequence) or isinstance(names, str) or not names:
        return None
    kinds = []
    for name in names[:n]:
        kind = LAYER_TYPE_NAMES.get(str(name))
        if kind is None:
            raise CapacityInputError(
                "config.layer_types",
                f"unknown layer type {name!r}",
                f"use one of {sorted(LAYER_TYPE_NAMES)}",
            )
        kinds.append(kind)
    if len(kinds) != n:
        raise CapacityInputError(
            "config.layer_types",
            f"has {len(kinds)} entries for {n} layers",
            "give one entry per num_hidden_layers",
        )
    return tuple(kinds)


def _kinds_from_nemotron_pattern(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    pattern = cfg.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or not pattern:
        return None
    if len(pattern) != n or any(ch not in NEMOTRON_PATTERN for ch in pattern):
        raise CapacityInputError(
            "config.hybrid_override_pattern",
            f"expected {n} characters from 'M*-E'",
            "copy the pattern from the model's config.json",
        )
    return tuple(NEMOTRON_PATTERN[ch] for ch in pattern)


def _kinds_from_jamba_period(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    period = optional_int(cfg, "attn_layer_period")
    if period is None:
        return None
    offset = int(cfg.get("attn_layer_offset") or 0)
    return tuple(LayerKind.FULL if i % period == offset else LayerKind.LINEAR for i in range(n))


def _kinds_from_full_interval(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    interval = optional_int(cfg, "full_attention_interval")
    if interval is None:
        return None
    return tuple(LayerKind.FULL if (i + 1) % interval == 0 else LayerKind.LINEAR for i in range(n))


def _kinds_from_attention_chunk(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    if optional_int(cfg, "attention_chunk_size") is None:
        return None
    flags = cfg.get("no_rope_layers")
    if isinstance(flags, Sequence) and len(flags) == n:
        # 1 = RoPE layer with chunked local attention, 0 = global NoPE layer
        return tuple(LayerKind.CHUNKED if f else LayerKind.FULL for f in flags)
    return tuple(
        LayerKind.FULL if (i + 1) % LLAMA4_NOPE_INTERVAL == 0 else LayerKind.CHUNKED
        for i in range(n)
    )


def _kinds_from_sliding_window(cfg: Config, n: int) -> tuple[LayerKind, ...] | None:
    window = optional_int(cfg, "sliding_window", "sliding_window_size")
    if window is None or cfg.get("use_sliding_window") is False:
        return None  # Qwen2/Qwen3 ship a window but `use_sliding_window: false` means full
    pattern = optional_int(cfg, "sliding_window_pattern", "_sliding_window_pattern")
    model_type = str(cfg.get("model_type", ""))
    if pattern is not None:  # Gemma 3 / Cohere 2: every `pattern`-th layer is global
        return tuple(
            LayerKind.FULL if (i + 1) % pattern == 0 else LayerKind.SLIDING for i in range(n)
        )
    if model_type in ("gemma2", "gpt_oss"):  # alternate: even layers slide
        return tuple(LayerKind.SLIDING if i % 2 == 0 else LayerKind.FULL for i in range(n))
    if cfg.get("use_sliding_window") is True and "max_window_layers" in cfg:
        first = int(cfg["max_window_layers"])  # Qwen2 convention: layers >= this slide
        return tuple(LayerKind.SLIDING if i >= first else LayerKind.FULL for i in range(n))
    return (LayerKind.SLIDING,) * n  # Mistral v0.1, Phi-3: every layer slides


LAYER_KIND_RULES: tuple[Callable[[Config, int], tuple[LayerKind, ...] | None], ...] = (
    _kinds_from_layer_types,
    _kinds_from_nemotron_pattern,
    _kinds_from_jamba_period,
    _kinds_from_full_interval,
    _kinds_from_attention_chunk,
    _kinds_from_sliding_window,
)


def detect_layer_kinds(cfg: Config, num_layers: int) -> tuple[LayerKind, ...]:
    """One LayerKind per decoder layer; the first matching config convention wins."""
    if optional_int(cfg, "kv_lora_rank") is not None:
        return (LayerKind.MLA,) * num_layers
    for rule in LAYER_KIND_RULES:
        kinds = rule(cfg, num_layers)
        if kinds is not None:
            return kinds
    return (LayerKind.FULL,) * num_layers


# --- fixed per-sequence state of linear-attention / Mamba layers ---------------------------


def _gdn_state_elems(cfg: Config) -> int | None:
    """Gated DeltaNet (Qwen3-Next): conv window over q,k,v + one k x v matrix per value head."""
    kh, kd = optional_int(cfg, "linear_num_key_heads"), optional_int(cfg, "linear_key_head_dim")
    vh = optional_int(cfg, "linear_num_value_heads")
    vd = optional_int(cfg, "linear_value_head_dim")
    if None in (kh, kd, vh, vd):
        return None
    assert kh and kd and vh and vd
    conv_k = optional_int(cfg, "linear_conv_kernel_dim") or 4
    conv_dim = 2 * kh * kd + vh * vd
    return (conv_k - 1) * conv_dim + vh * kd * vd


def _mamba2_state_elems(cfg: Config) -> int | None:
    """Mamba2 (Nemotron-H, Granite 4): conv over x,B,C + heads x head_dim x state."""
    heads = optional_int(cfg, "mamba_num_heads", "mamba_n_heads")
    head_dim = optional_int(cfg, "mamba_head_dim", "mamba_d_head")
    state = optional_int(cfg, "ssm_state_size", "mamba_d_state")
    if heads is None or head_dim is None or state is None:
        return None
    groups = optional_int(cfg, "n_groups", "mamba_n_groups") or 1
    conv_k = optional_int(cfg, "conv_kernel", "mamba_d_conv") or 4
    inner = heads * head_dim
    return (conv_k - 1) * (inner + 2 * groups * state) + inner * state


def _mamba1_state_elems(cfg: Config) -> int | None:
    """Mamba1 (Jamba): conv over d_inner + d_inner x d_state."""
    state = optional_int(cfg, "mamba_d_state")
    hidden = optional_int(cfg, "hidden_size")
    if state is None or hidden is None:
        return None
    inner = (optional_int(cfg, "mamba_expand") or 2) * hidden
    conv_k = optional_int(cfg, "mamba_d_conv") or 4
    return (conv_k - 1) * inner + inner * state


def linear_state_elems(cfg: Config) -> int | None:
    for rule in (_gdn_state_elems, _mamba2_state_elems, _mamba1_state_elems):
        elems = rule(cfg)
        if elems is not None:
            return elems
    return None


# --- the public constructor ----------------------------------------------------------------


def _kv_heads(cfg: Config, heads: int) -> int:
    explicit = optional_int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if explicit is not None:
        return explicit
    if cfg.get("multi_query") is True:
        return 1  # Falcon-style MQA
    return heads  # MHA


def _head_dims(cfg: Config, hidden: int | None, heads: int) -> tuple[int, int]:
    if optional_int(cfg, "kv_lora_rank") is not None:  # MLA: attention-side head sizes
        nope = optional_int(cfg, "qk_nope_head_dim") or 128
        rope = optional_int(cfg, "qk_rope_head_dim") or 64
        return nope + rope, optional_int(cfg, "v_head_dim") or nope
    explicit = optional_int(cfg, "head_dim", "attention_head_dim")
    if explicit is None:
        if hidden is None:
            raise CapacityInputError(
                "config.head_dim", "missing (and no hidden_size to derive it)", "add head_dim"
            )
        if hidden % heads:
            raise CapacityInputError(
                "config.head_dim",
                f"hidden_size {hidden} is not divisible by {heads} heads",
                "add an explicit head_dim",
            )
        explicit = hidden // heads
    return explicit, optional_int(cfg, "v_head_dim") or explicit


def model_from_config(
    config: Mapping[str, Any],
    *,
    name: str,
    weights_bytes: int | None = None,
    params: int | None = None,
) -> ModelGeometry:
    """Build the geometry from a config.json mapping.

    `weights_bytes` (whole checkpoint, all ranks) wins over every estimate; `params` (a real
    parameter count, e.g. from the catalog) wins over the geometry-based estimate.
    """
    if not isinstance(config, Mapping):
        raise CapacityInputError("config", "is not a JSON object", "pass the model's config.json")
    cfg = flatten_config(config)
    layers = require_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = require_int(cfg, "num_attention_heads", "n_head")
    hidden = optional_int(cfg, "hidden_size", "n_embd", "d_model")
    kv_heads = _kv_heads(cfg, heads)
    head_k, head_v = _head_dims(cfg, hidden, heads)
    dtype_bytes = parse_dtype_bytes(cfg)
    kinds = detect_layer_kinds(cfg, layers)
    state_bytes = 0
    if LayerKind.LINEAR in kinds:
        elems = linear_state_elems(cfg)
        if elems is None:
            raise CapacityInputError(
                "config.mamba_d_state",
                "linear-attention/Mamba layers but no state geometry",
                "add the mamba_*/linear_* fields of the model's config.json",
            )
        state_bytes = elems * dtype_bytes
    method, bits = quantized_weight_bits(cfg.get("quantization_config"))
    weight_head_dim = head_k if not cfg.get("kv_lora_rank") else head_v
    est = (
        estimate_params(cfg, weight_head_dim, kv_heads, kinds)
        if hidden
        else ParamEstimate(0, 0, 0, 0)
    )
    tensors = weight_tensors(cfg, weight_head_dim, kv_heads, kinds) if hidden else ()
    if est.total:  # the vision tower is loaded too (but touched by no decoded token)
        vision = vision_params(config, hidden)
        est = replace(est, total=est.total + vision, vision=vision)
    total = (params and loaded_params(cfg, est, params)) or est.total or None
    active = int(total * est.active / est.total) if total and est.total else total
    if weights_bytes is None and total:
        weights_bytes = checkpoint_bytes(
            est, total, dtype_bytes=dtype_bytes, method=method, bits=bits
        )
    windows = optional_int(cfg, "sliding_window", "sliding_window_size")
    experts, per_token, expert_inter = moe_dims(cfg)
    architecture = str((cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0])
    return ModelGeometry(
        name=name,
        architecture=architecture,
        num_layers=layers,
        layer_kinds=kinds,
        num_attention_heads=heads,
        num_kv_heads=1 if LayerKind.MLA in kinds else kv_heads,
        head_dim_k=head_k,
        head_dim_v=head_v,
        dtype_bytes=dtype_bytes,
        max_position_embeddings=optional_int(cfg, "max_position_embeddings", "n_positions") or 4096,
        sliding_window_tokens=windows if LayerKind.SLIDING in kinds else None,
        attention_chunk_tokens=optional_int(cfg, "attention_chunk_size"),
        kv_lora_rank=optional_int(cfg, "kv_lora_rank"),
        qk_rope_head_dim=optional_int(cfg, "qk_rope_head_dim"),
        linear_state_bytes_per_layer=state_bytes,
        params=total,
        active_params=active,
        weights_bytes=weights_bytes,
        quantization=method,
        hidden_size=hidden,
        num_experts=experts,
        vocab_size=optional_int(cfg, "vocab_size"),
        intermediate_size=optional_int(cfg, "intermediate_size", "ffn_hidden_size"),
        experts_per_token=per_token if experts else None,
        expert_intermediate_size=expert_inter if experts else None,
        is_multimodal=isinstance(config.get("vision_config"), Mapping)
        or str(cfg.get("architectures", [""])[0]).endswith("ForConditionalGeneration"),
        rope_tables=rope_tables(cfg, head_k, kinds, architecture),
        kept_params=(est.embed + est.vision) or None,
        expert_params=est.experts or None,
        weight_tensors=tensors,
    )
