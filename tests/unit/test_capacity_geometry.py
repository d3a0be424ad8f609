"""model_from_config: head dims, KV heads, dtype, quantized weight bytes, bad configs."""

from __future__ import annotations

from typing import Any

import pytest

from kvscale.capacity import CapacityInputError, find_model, model_from_config
from kvscale.capacity.types import LayerKind
from kvscale.capacity.weights import with_quantization

BASE: dict[str, Any] = {
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "hidden_size": 1024,
    "vocab_size": 1000,
    "intermediate_size": 2048,
    "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(
    ("extra", "kv_heads", "head_k", "head_v"),
    [
        ({}, 8, 128, 128),  # MHA, head_dim = hidden / heads
        ({"num_key_value_heads": 2}, 2, 128, 128),  # GQA
        ({"multi_query": True}, 1, 128, 128),  # Falcon MQA
        ({"num_key_value_heads": 2, "head_dim": 96}, 2, 96, 96),  # explicit head_dim
        ({"kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
          "v_head_dim": 128}, 1, 192, 128),  # MLA: one latent
    ],
)  # fmt: skip
def test_heads(extra: dict[str, Any], kv_heads: int, head_k: int, head_v: int) -> None:
    model = model_from_config({**BASE, **extra}, name="m")
    assert (model.num_kv_heads, model.head_dim_k, model.head_dim_v) == (kv_heads, head_k, head_v)


@pytest.mark.parametrize(
    ("extra", "kinds"),
    [
        ({"sliding_window": 4096, "use_sliding_window": False}, "FFFF"),  # Qwen2 convention
        ({"sliding_window": 4096}, "SSSS"),  # Mistral v0.1
        ({"sliding_window": 512, "sliding_window_pattern": 2}, "SFSF"),
        ({"sliding_window": 512, "model_type": "gemma2"}, "SFSF"),
        ({"attention_chunk_size": 8192}, "CCCF"),  # Llama 4
        ({"layer_types": ["full_attention", "linear_attention"] * 2}, "FLFL"),
        ({"hybrid_override_pattern": "M*-M"}, "MFNM"),
    ],
)
def test_layer_kind_rules(extra: dict[str, Any], kinds: str) -> None:
    letter = {LayerKind.FULL: "F", LayerKind.SLIDING: "S", LayerKind.CHUNKED: "C",
              LayerKind.LINEAR: "L", LayerKind.NONE: "N"}  # fmt: skip
    cfg = {**BASE, **extra, "mamba_num_heads": 8, "mamba_head_dim": 64, "ssm_state_size": 16}
    if "hybrid_override_pattern" in extra:
        letter[LayerKind.LINEAR] = "M"
    model = model_from_config(cfg, name="m")
    assert "".join(letter[k] for k in model.layer_kinds) == kinds


@pytest.mark.parametrize(
    ("qcfg", "bits"),
    [
        (None, 16.0),
        ({"quant_method": "fp8"}, 8.0),
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, 4 + 20 / 128),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, 4 + 20 / 128),
        ({"quant_method": "mxfp4"}, 4.25),
        ({"quant_method": "nvfp4"}, 4.5),
    ],
)
def test_quantized_weight_bytes(qcfg: dict[str, Any] | None, bits: float) -> None:
    params, embed = 10_000_000, 1000 * 1024 * 2  # untied embeddings + lm_head stay bf16
    cfg = dict(BASE) | ({"quantization_config": qcfg} if qcfg else {})
    model = model_from_config(cfg, name="m", params=params)
    expected = int((params - embed) * bits / 8 + embed * 2) if qcfg else params * 2
    assert model.weights_bytes == expected


def test_explicit_weights_win() -> None:
    assert model_from_config(BASE, name="m", weights_bytes=123).weights_bytes == 123


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({k: v for k, v in BASE.items() if k != "num_hidden_layers"}, "config.num_hidden_layers"),
        ({**BASE, "num_attention_heads": 0}, "config.num_attention_heads"),
        ({**BASE, "hidden_size": 1000, "num_attention_heads": 3}, "config.head_dim"),
        ({**BASE, "torch_dtype": "int3"}, "config.torch_dtype"),
        ({**BASE, "layer_types": ["full_attention"]}, "config.layer_types"),
        ({**BASE, "layer_types": ["mamba"] * 4}, "config.mamba_d_state"),
    ],
)
def test_malformed_config(cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(CapacityInputError) as info:
        model_from_config(cfg, name="m")
    assert info.value.field == field


def test_params_estimate_for_a_mamba_hybrid() -> None:
    # Nemotron-H-56B has no parameter count in the catalog, so weights come from the estimate.
    # Mamba2 layer: in_proj 8192*(2*16384 + 2*8*256 + 256) + out_proj 16384*8192 = 438.3M (x54)
    # relu2 MLP layer: 2*8192*32768 = 536.9M (x54); attention: 8192*128*(2*64+2*8) (x10)
    # embeddings + lm_head: 2*131072*8192
    mamba = 8192 * (2 * 16384 + 2 * 8 * 256 + 256) + 16384 * 8192
    expected = 54 * mamba + 54 * 2 * 8192 * 32768 + 10 * 8192 * 128 * 144 + 2 * 131072 * 8192
    model = find_model("nvidia/Nemotron-H-56B-Base-8K")
    assert model.params == expected
    assert model.weights_bytes == expected * 2


def test_mxfp4_quantizes_only_the_experts() -> None:
    # 2 layers, hidden 2880, 4 experts of moe_inter 2880, gated (3 matrices), no attention
    # heads beyond 1: experts = 2 * 4 * 3 * 2880 * 2880 at 4.25 bits, unpadded (the kernel's
    # padding is the engine's, per GPU: test_capacity_allocator.py)
    cfg = {
        "num_hidden_layers": 2, "num_attention_heads": 1, "num_key_value_heads": 1,
        "head_dim": 64, "hidden_size": 2880, "vocab_size": 1000, "num_local_experts": 4,
        "num_experts_per_tok": 1, "intermediate_size": 2880,
        "quantization_config": {"quant_method": "mxfp4"},
    }  # fmt: skip
    experts = 2 * 4 * 3 * 2880 * 2880
    attention = 2 * 2880 * 64 * (2 * 1 + 2 * 1)
    embed = 2 * 1000 * 2880
    router = 2 * 4 * 2880  # per MoE layer [experts, hidden], in the model dtype
    expected = int(experts * 4.25 / 8 + (attention + embed + router) * 2)
    assert model_from_config(cfg, name="m").weights_bytes == expected


@pytest.mark.parametrize(
    "hf_id",
    ["meta-llama/Llama-4-Scout-17B-16E-Instruct", "meta-llama/Llama-4-Maverick-17B-128E-Instruct"],
)
def test_llama4_counts_its_shared_expert(hf_id: str) -> None:
    # Both models are published as "17B active parameters" (the 17B in their names): one routed
    # expert + the shared expert per MoE layer, attention, embeddings and lm_head.
    active = find_model(hf_id).active_params
    assert active is not None and abs(active - 17e9) / 17e9 < 0.02


def test_with_quantization_keeps_embeddings_and_quantizes_the_rest() -> None:
    # linear layers at the method's bits; embeddings and the untied lm_head stay in bf16;
    # mxfp4 shrinks only the routed experts; the same method again changes nothing
    dense = find_model("meta-llama/Llama-3.1-8B-Instruct")
    assert dense.params and dense.kept_params and dense.weights_bytes
    fp8 = with_quantization(dense, "fp8")
    assert fp8.weights_bytes == (dense.params - dense.kept_params) + 2 * dense.kept_params
    assert with_quantization(fp8, "fp8") == fp8
    moe = find_model("Qwen/Qwen3-30B-A3B")
    assert moe.expert_params and moe.weights_bytes and moe.params
    mx = with_quantization(moe, "mxfp4")
    assert mx.weights_bytes is not None
    non_expert_bytes = 2 * (moe.params - moe.expert_params)
    assert non_expert_bytes < mx.weights_bytes < non_expert_bytes + moe.expert_params
    assert with_quantization(dense, "mxfp4").weights_bytes == dense.weights_bytes  # no experts
