"""Hostile config.json values: every one is a CapacityInputError naming the key, never a crash.

A NaN, an infinity, a huge or a mistyped number in any numeric key of a real model's config
must end as one actionable error (or be ignored where the key is optional and unusable), never
as a ValueError/OverflowError/MemoryError traceback, and never after building a structure whose
size the user controls.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import pytest

from kvscale.capacity import CapacityInputError, model_from_config
from kvscale.capacity.configkeys import MAX_LAYERS

FAMILIES = (  # one config per geometry reader: dense GQA, MLA, hybrid GDN, Mamba2, mxfp4 MoE
    "meta-llama__Llama-3.1-8B-Instruct.json",
    "deepseek-ai__DeepSeek-V3.json",
    "Qwen__Qwen3-Next-80B-A3B-Instruct.json",
    "nvidia__Nemotron-H-56B-Base-8K.json",
    "openai__gpt-oss-20b.json",
    "google__gemma-3-12b-it.json",
)
HOSTILE = (math.nan, math.inf, -math.inf, 1e300, 10**30, -3, "12x")


def _config(file_name: str) -> dict[str, Any]:
    path = resources.files("kvscale").joinpath("data", "catalog", "models", file_name)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dict(data["config"])


def _numeric_paths(config: dict[str, Any]) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            paths += [(key, *p) for p in _numeric_paths(value)]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            paths.append((key,))
    return paths


def _with(config: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(config))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


@pytest.mark.parametrize("file_name", FAMILIES)
def test_every_numeric_key_survives_hostile_values(file_name: str) -> None:
    config = _config(file_name)
    paths = _numeric_paths(config)
    assert len(paths) >= 10
    for path in paths:
        for value in HOSTILE:
            try:
                model_from_config(_with(config, path, value), name="m")
            except CapacityInputError as exc:
                assert exc.field.startswith("config."), (path, value, exc)
                assert len(str(exc)) < 400, (path, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
def test_non_finite_layer_count_names_the_key(value: float) -> None:
    config = _with(_config(FAMILIES[0]), ("num_hidden_layers",), value)
    with pytest.raises(CapacityInputError) as raised:
        model_from_config(config, name="m")
    assert raised.value.field == "config.num_hidden_layers"


def test_absurd_layer_count_is_refused_before_any_per_layer_work() -> None:
    config = _with(_config(FAMILIES[0]), ("num_hidden_layers",), 10**13)
    with pytest.raises(CapacityInputError) as raised:
        model_from_config(config, name="m")
    assert raised.value.field == "config.num_hidden_layers"
    assert f"≤ {MAX_LAYERS}" in raised.value.problem


def test_a_nan_in_an_optional_key_is_an_error_not_a_silent_default() -> None:
    config = _with(_config(FAMILIES[0]), ("num_key_value_heads",), math.nan)
    with pytest.raises(CapacityInputError) as raised:
        model_from_config(config, name="m")
    assert raised.value.field == "config.num_key_value_heads"
    assert "finite" in raised.value.problem


@pytest.mark.parametrize(
    ("quantization", "key"),
    [
        ({"quant_method": "awq", "bits": "4bit"}, "bits"),
        ({"quant_method": "awq", "bits": math.nan}, "bits"),
        ({"quant_method": "gptq", "bits": 4, "group_size": math.inf}, "group_size"),
        ({"quant_method": "compressed-tensors",
          "config_groups": {"g": {"weights": {"num_bits": "8"}}}},
         "config_groups.weights.num_bits"),
    ],
)  # fmt: skip
def test_bad_quantization_numbers_name_the_key(quantization: dict[str, Any], key: str) -> None:
    config = {**_config(FAMILIES[0]), "quantization_config": quantization}
    with pytest.raises(CapacityInputError) as raised:
        model_from_config(config, name="m")
    assert raised.value.field == f"config.quantization_config.{key}"


def test_per_channel_group_size_is_still_accepted() -> None:
    quantization = {"quant_method": "gptq", "bits": 4, "group_size": -1}
    config = {**_config(FAMILIES[0]), "quantization_config": quantization}
    assert model_from_config(config, name="m").weights_bytes
