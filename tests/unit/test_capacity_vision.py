"""Vision tower + projector weights of multimodal models, against published parameter counts."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from kvscale.capacity import find_model, model_from_config
from kvscale.capacity.vision import TOWERS, vision_params

# Published figures (not derived from kvscale's arithmetic):
GEMMA3_VISION_ENCODER = 417e6  # Gemma 3 technical report, table 1: SigLIP encoder 417M
GEMMA3_12B_TOTAL = 12_187_325_040  # HF safetensors total of gemma-3-12b-it (catalog `params`)
SCOUT_TOTAL = 108_641_793_536  # HF safetensors total of Llama-4-Scout-17B-16E-Instruct
MAVERICK_TOTAL = 401_583_781_376  # HF safetensors total of Llama-4-Maverick (catalog `params`)
MISTRAL_SMALL_TOTAL = 24_011_361_280  # HF safetensors total of Mistral-Small-3.1/3.2-24B


def catalog_config(file_name: str) -> dict[str, Any]:
    path = resources.files("kvscale").joinpath("data", "catalog", "models", file_name)
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["config"]
    return config


def rel(value: float | None, expected: float) -> float:
    assert value is not None
    return abs(value - expected) / expected


def test_siglip_tower_of_gemma3_is_the_published_417m() -> None:
    vision_config = catalog_config("google__gemma-3-27b-it.json")["vision_config"]
    assert rel(TOWERS["siglip_vision_model"](vision_config), GEMMA3_VISION_ENCODER) < 0.002


def test_gemma3_estimate_from_the_config_matches_the_checkpoint() -> None:
    # Without the catalog's count, the estimate from the config alone (text + SigLIP + the
    # projector) lands on the checkpoint total; text-only it is 3.5 % short.
    config = catalog_config("google__gemma-3-12b-it.json")
    assert rel(model_from_config(config, name="g").params, GEMMA3_12B_TOTAL) < 1e-4
    text_only = {k: v for k, v in config.items() if k != "vision_config"}
    assert rel(model_from_config(text_only, name="g").params, GEMMA3_12B_TOTAL) > 0.03


def test_llama4_scout_weights_include_the_vision_model() -> None:
    scout = find_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")  # no count in the catalog
    assert rel(scout.params, SCOUT_TOTAL) < 1e-4
    assert scout.weights_bytes == 2 * (scout.params or 0)  # bf16, nothing quantized
    assert rel(scout.active_params, 17e9) < 0.02  # the tower is not read per decoded token


def test_llama4_maverick_with_the_shared_vision_config_matches_its_total() -> None:
    # The catalog's Maverick config is abridged (no vision_config); Llama 4 models share one.
    config = catalog_config("meta-llama__Llama-4-Maverick-17B-128E-Instruct.json")
    scout = catalog_config("meta-llama__Llama-4-Scout-17B-16E-Instruct.json")
    assert rel(model_from_config(config, name="m").params, MAVERICK_TOTAL) > 0.002
    config["vision_config"] = scout["vision_config"]
    assert rel(model_from_config(config, name="m").params, MAVERICK_TOTAL) < 1e-4


def test_mistral3_pixtral_tower_matches_the_published_total() -> None:
    config = catalog_config("mistralai__Mistral-Small-3.2-24B-Instruct-2506.json")
    assert rel(model_from_config(config, name="m").params, MISTRAL_SMALL_TOTAL) < 1e-4
    text_only = {k: v for k, v in config.items() if k != "vision_config"}
    assert rel(model_from_config(text_only, name="t").params, MISTRAL_SMALL_TOTAL) > 0.015


TEXT: dict[str, Any] = {
    "num_hidden_layers": 2, "num_attention_heads": 8, "hidden_size": 1024, "vocab_size": 1000,
    "intermediate_size": 2048,
}  # fmt: skip
TINY_SIGLIP: dict[str, Any] = {
    "model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 16,
}  # fmt: skip


def test_tiny_siglip_counted_by_hand() -> None:
    # patch conv 3*16*16*64 + bias 64, 2*2 positions * 64; per layer q/k/v/o 4*64*64 + 4*64,
    # fc1/fc2 2*64*128 + 128 + 64, two LayerNorms 4*64; post-LayerNorm 2*64;
    # gemma-3 projector 64 x 1024 + RMSNorm 64
    embed = 3 * 16 * 16 * 64 + 64 + 4 * 64
    layer = 4 * 64 * 64 + 4 * 64 + 2 * 64 * 128 + 128 + 64 + 4 * 64
    projector = 64 * 1024 + 64
    config = {"model_type": "gemma3", "text_config": TEXT, "vision_config": TINY_SIGLIP}
    assert vision_params(config, 1024) == embed + 2 * layer + 2 * 64 + projector


def test_quantization_leaves_the_vision_tower_in_the_model_dtype() -> None:
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128}
    text = {**TEXT, "quantization_config": awq, "torch_dtype": "bfloat16"}
    multimodal = {"model_type": "gemma3", "text_config": text, "vision_config": TINY_SIGLIP}
    with_tower = model_from_config(multimodal, name="m")
    without = model_from_config({"model_type": "gemma3", "text_config": text}, name="m")
    tower = vision_params(multimodal, 1024)
    assert with_tower.params == (without.params or 0) + tower
    assert with_tower.weights_bytes == (without.weights_bytes or 0) + 2 * tower


@pytest.mark.parametrize(
    "vision_config",
    [None, {"model_type": "some_future_vit", "hidden_size": 1024}, "not a mapping"],
)
def test_unknown_or_absent_vision_config_counts_nothing(vision_config: Any) -> None:
    config = {"model_type": "gemma3", "text_config": TEXT, "vision_config": vision_config}
    assert vision_params(config, 1024) == 0
    text_only = {"model_type": "gemma3", "text_config": TEXT}
    assert (
        model_from_config(config, name="m").params == model_from_config(text_only, name="m").params
    )
