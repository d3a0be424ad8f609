"""Reading config.json values: first present key wins, typed, with actionable errors.

HF config conventions differ by family (n_layer vs num_hidden_layers, …), so every reader
takes the candidate keys in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvscale.capacity.errors import CapacityInputError

Config = Mapping[str, Any]


def get_key(cfg: Config, *keys: str) -> Any:
    """First present, non-None value among `keys` (config conventions differ by family)."""
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def require_int(cfg: Config, *keys: str) -> int:
    value = get_key(cfg, *keys)
    if value is None:
        raise CapacityInputError(
            f"config.{keys[0]}",
            "missing from config.json",
            f"add {keys[0]} (the model's value) to the config",
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) <= 0:
        raise CapacityInputError(
            f"config.{keys[0]}", f"must be a positive integer, got {value!r}", "correct the value"
        )
    return int(value)


def optional_int(cfg: Config, *keys: str) -> int | None:
    value = get_key(cfg, *keys)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if int(value) > 0 else None
