"""The release each engine is planned and rendered for when none is given.

One table for the CLI (`--engine-version` omitted) and the CR (`spec.engine.version` omitted):
the CRD carries no version default, because a vLLM release forced on an SGLang deployment is a
value the user never wrote and the engine tables then refuse. Each release is one the engine's
adapter module supports (its version tables start at or before it).
"""

from __future__ import annotations

from collections.abc import Mapping

from kvscale.capacity.types import DEFAULT_ENGINE_VERSION as PLANNER_DEFAULT_VLLM

DEFAULT_ENGINE_VERSION: Mapping[str, str] = {
    "vllm": str(PLANNER_DEFAULT_VLLM),  # the planner's own default request
    "sglang": "0.5.0",
    "tgi": "3.3.7",
    "trtllm": "1.2.0",
}


def describe_defaults() -> str:
    """'vllm 0.11.0, sglang 0.5.0, …' for docs and field descriptions."""
    return ", ".join(f"{name} {version}" for name, version in DEFAULT_ENGINE_VERSION.items())
