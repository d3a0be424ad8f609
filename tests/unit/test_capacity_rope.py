"""vLLM's rotary cos/sin tables: one per distinct rope configuration, whole on every rank.

Expected figures are worked out by hand from the configs (positions x rotated dims x bytes),
not read back from the planner.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kvscale.capacity import GIB, PlanRequest, find_gpu, find_model, model_from_config
from kvscale.capacity.planner import plan_capacity, plan_to_json
from kvscale.capacity.rope import rope_cache_bytes

MIB = 1024**2
H100 = find_gpu("H100")


def _cfg(**kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "hidden_size": 1024,
        "head_dim": 128,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    cfg.update(kw)
    return cfg


def test_scout_table_is_two_and_a_half_gib() -> None:
    # 10,485,760 positions x 128 dims x 2 B (llama3 scaling keeps the configured length)
    scout = find_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert rope_cache_bytes(scout, v08_layout=True) == 10_485_760 * 128 * 2 == int(2.5 * GIB)


def test_llama31_8b_table_is_32_mib() -> None:
    llama = find_model("meta-llama/Llama-3.1-8B-Instruct")
    assert rope_cache_bytes(llama, v08_layout=True) == 131_072 * 128 * 2 == 32 * MIB


def test_gemma3_has_a_local_and_a_scaled_global_table() -> None:
    # global: linear x8 -> 1,048,576 positions; local: plain 131,072; head_dim 128, bf16
    gemma = find_model("google/gemma-3-27b-it")
    assert len(gemma.rope_tables) == 2
    assert rope_cache_bytes(gemma, v08_layout=True) == (1_048_576 + 131_072) * 128 * 2


def test_gpt_oss_asks_for_a_float32_yarn_table() -> None:
    # yarn: original 4096 x factor 32 = 131,072 positions x 64 dims x 4 B = 32 MiB
    oss = find_model("openai/gpt-oss-20b")
    assert rope_cache_bytes(oss, v08_layout=True) == 32 * MIB


def test_partial_rotary_and_mla_columns() -> None:
    phi = model_from_config(
        _cfg(max_position_embeddings=2048, head_dim=80, partial_rotary_factor=0.4), name="p"
    )
    assert rope_cache_bytes(phi, v08_layout=True) == 2048 * 32 * 2
    mla = model_from_config(
        _cfg(
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=128,
            v_head_dim=128,
            max_position_embeddings=163840,
            rope_scaling={
                "type": "yarn",
                "factor": 40,
                "original_max_position_embeddings": 4096,
            },
        ),
        name="mla",
    )
    assert rope_cache_bytes(mla, v08_layout=True) == 163_840 * 64 * 2


@pytest.mark.parametrize(
    ("scaling", "v08", "positions"),
    [
        ({"rope_type": "dynamic", "factor": 2.0}, True, 65536),
        ({"rope_type": "dynamic", "alpha": 1000.0}, True, 32768),
        ({"type": "linear", "factor": 4.0}, True, 131072),
        (
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
             "original_max_position_embeddings": 4096},
            True, 4096 + 32768,
        ),
        (
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
             "original_max_position_embeddings": 4096},
            False, 2 * (4096 + 32768),
        ),
        ({"type": "mrope", "mrope_section": [16, 24, 24]}, True, 4 * 32768),
        ({"type": "mrope", "mrope_section": [16, 24, 24]}, False, 32768),
    ],
)  # fmt: skip
def test_table_length_by_rope_type_and_layout(
    scaling: dict[str, Any], v08: bool, positions: int
) -> None:
    model = model_from_config(_cfg(rope_scaling=scaling), name="m")
    assert rope_cache_bytes(model, v08_layout=v08) == positions * 128 * 2


def test_models_without_rotary_positions_have_no_table() -> None:
    gpt2 = model_from_config(_cfg(model_type="gpt2", architectures=["GPT2LMHeadModel"]), name="g")
    granite = model_from_config(_cfg(position_embedding_type="nope"), name="n")
    assert gpt2.rope_tables == granite.rope_tables == ()


def test_the_planner_charges_the_table_once_per_rank_whatever_the_tp() -> None:
    scout = find_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    base = PlanRequest(
        model=scout,
        gpu=H100,
        engine_version="0.19.0",
        tensor_parallel=4,
        max_model_len_tokens=8192,
        weights_bytes=200 * GIB,
    )
    without = plan_capacity(replace(base, model=replace(scout, rope_tables=())))
    with_rope = plan_capacity(base)
    assert with_rope.rope_cache_bytes == int(2.5 * GIB)  # not divided by TP 4
    assert with_rope.weights_bytes == without.weights_bytes == 50 * GIB
    assert without.available_kv_bytes - with_rope.available_kv_bytes == int(2.5 * GIB)
    assert with_rope.non_kv_bytes - without.non_kv_bytes == int(2.5 * GIB)
    assert plan_to_json(with_rope)["ropeCacheBytes"] == int(2.5 * GIB)


def test_other_engines_are_not_charged() -> None:
    llama = find_model("meta-llama/Llama-3.1-8B-Instruct")
    plan = plan_capacity(PlanRequest(model=llama, gpu=H100, engine="sglang"))
    assert plan.rope_cache_bytes == 0


@pytest.mark.parametrize(("version", "factor"), [("0.6.4", 1), ("0.8.3", 4), ("0.19.0", 4)])
def test_the_layout_follows_the_release_even_on_v0(version: str, factor: int) -> None:
    # the rope modules are model code, shared by V0 and V1: 0.8.3 run as V0 keeps the x4 table
    model = model_from_config(_cfg(rope_scaling={"mrope_section": [16, 24, 24]}), name="vl")
    request = PlanRequest(
        model=model, gpu=H100, engine_version=version, weights_bytes=GIB, vllm_v0=True
    )
    assert plan_capacity(request).rope_cache_bytes == factor * 32768 * 128 * 2
