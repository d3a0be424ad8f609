"""Reading config.json values: first present key wins, typed, bounded, with actionable errors.

HF config conventions differ by family (n_layer vs num_hidden_layers, …), so every reader
takes the candidate keys in order. A config.json is user input (inline in a CR, in a
ConfigMap, or a file): NaN, infinities and absurd magnitudes are refused with the key named,
before any per-layer structure is built from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kvscale.capacity.errors import CapacityInputError

Config = Mapping[str, Any]

#: Decoder layers a config may declare. The deepest published decoders have ~130 layers;
#: the planner builds per-layer tuples, so the bound keeps a hostile value from allocating.
MAX_LAYERS = 4096
#: Any other count or size read from a config (heads, dims, vocab, context, experts): 2**31,
#: above every published value (the longest context, Llama 4 Scout, is 10,485,760 tokens).
MAX_CONFIG_INT = 2**31
_LIMITS: Mapping[str, int] = {"num_hidden_layers": MAX_LAYERS, "n_layer": MAX_LAYERS}


def get_key(cfg: Config, *keys: str) -> Any:
    """First present, non-None value among `keys` (config conventions differ by family)."""
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def _first_key(cfg: Config, keys: tuple[str, ...]) -> str:
    return next((key for key in keys if cfg.get(key) is not None), keys[0])


def _bounded_int(key: str, value: int | float) -> int:
    """`value` as an int, or a CapacityInputError naming `config.<key>`."""
    limit = _LIMITS.get(key, MAX_CONFIG_INT)
    if isinstance(value, float) and not math.isfinite(value):
        raise CapacityInputError(
            f"config.{key}", f"must be a finite number, got {value}", "use the model's value"
        )
    if value > limit:
        raise CapacityInputError(
            f"config.{key}",
            f"must be ≤ {limit}, got {value:.6g}",
            "copy the value from the model's real config.json",
        )
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(cfg: Config, *keys: str) -> int:
    value = get_key(cfg, *keys)
    if value is None:
        raise CapacityInputError(
            f"config.{keys[0]}",
            "missing from config.json",
            f"add {keys[0]} (the model's value) to the config",
        )
    key = _first_key(cfg, keys)
    if not _is_number(value) or _bounded_int(key, value) <= 0:
        shown = repr(value)[:40]
        raise CapacityInputError(
            f"config.{key}", f"must be a positive integer, got {shown}", "correct the value"
        )
    return _bounded_int(key, value)


def optional_int(cfg: Config, *keys: str) -> int | None:
    """The value when it is a positive number (non-numbers and ≤ 0 mean "not given");
    NaN, infinities and values above the limit are errors, not silent defaults."""
    value = get_key(cfg, *keys)
    if not _is_number(value):
        return None
    number = _bounded_int(_first_key(cfg, keys), value)
    return number if number > 0 else None


def moe_dims(cfg: Config) -> tuple[int | None, int | None, int | None]:
    """(routed experts, experts per token, one expert's FFN width) as config.json names them
    across families (Mixtral, Qwen-MoE, DeepSeek, gpt-oss); None where a key is absent. The
    expert width falls back to `intermediate_size` (Mixtral, gpt-oss and Llama-4 size their
    experts with it)."""
    return (
        optional_int(cfg, "num_local_experts", "num_experts", "n_routed_experts"),
        optional_int(cfg, "num_experts_per_tok", "experts_per_token"),
        optional_int(cfg, "moe_intermediate_size")
        or optional_int(cfg, "intermediate_size", "ffn_hidden_size"),
    )
