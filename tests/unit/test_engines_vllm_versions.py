"""Every vLLM release 0.9 → 0.33 × every flag: a flag is emitted exactly where it exists.

The expected ranges below are written from engines.md §1.1/§1.2, independently of the tables
in `kvscale.engines.vllm`, and the plan asks for *everything* so every flag is a candidate.
"""

from __future__ import annotations

import pytest

from kvscale.capacity.types import GIB
from kvscale.engines import EngineVersion, render, supported_versions

try:  # the plan builder lives beside the render tests (rootdir import or package import)
    from test_engines_render import make_plan, pairs
except ImportError:  # pragma: no cover - tests/unit made a package
    from .test_engines_render import make_plan, pairs

# every minor release plus the odd ones people actually run
VERSIONS: tuple[str, ...] = (
    *(f"0.{minor}.0" for minor in range(9, 34)),
    "0.9.2",
    "0.10.1.1",
    "0.10.2",
    "0.17.1",
    "0.33.1",
)

# flag -> (first release that has it, first release without it); None = unbounded
EXPECTED_RANGE: dict[str, tuple[str | None, str | None]] = {
    "--max-model-len": (None, None),
    "--max-num-seqs": (None, None),
    "--max-num-batched-tokens": (None, None),
    "--block-size": (None, None),
    "--kv-cache-dtype": (None, None),
    "--tensor-parallel-size": (None, None),
    "--no-enable-prefix-caching": (None, None),
    "--served-model-name": (None, None),
    "--port": (None, None),
    "--kv-cache-memory-bytes": ("0.10.2", None),  # verified present 0.10.2, absent 0.9.2
    "--swap-space": (None, "0.18.0"),  # PR #36216, gone in 0.18.0
    "--disable-hybrid-kv-cache-manager": ("0.9.2", None),  # assumed (not in engines.md)
    # fallback for the bytes flag: present exactly where the bytes flag is not
    "--gpu-memory-utilization": (None, "0.10.2"),
}
NEVER = ("--calculate-kv-scales", "--enable-chunked-prefill", "--kv-offloading-size")


def _expected(flag: str, version: str) -> bool:
    first, gone = EXPECTED_RANGE[flag]
    v = EngineVersion.parse(version)
    return (first is None or v >= EngineVersion.parse(first)) and (
        gone is None or v < EngineVersion.parse(gone)
    )


def _render_everything(version: str) -> dict[str, str | None]:
    plan = make_plan(
        version=version,
        kv_cache_memory_bytes=30 * GIB,
        block_size_tokens=16,
        kv_cache_dtype="fp8",
        enable_prefix_caching=False,
        disable_hybrid_kv_cache_manager=True,
    )
    return pairs(render(plan, model_ref="m", served_model_name="s", swap_space_gib=4).argv)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("flag", sorted(EXPECTED_RANGE))
def test_flag_emitted_exactly_inside_its_range(version: str, flag: str) -> None:
    assert (flag in _render_everything(version)) is _expected(flag, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_no_unknown_or_removed_flag_is_ever_emitted(version: str) -> None:
    emitted = set(_render_everything(version))
    assert emitted <= set(EXPECTED_RANGE)
    assert not emitted & set(NEVER)


def test_sweep_covers_the_whole_supported_range() -> None:
    support = supported_versions("vllm")
    parsed = [EngineVersion.parse(v) for v in VERSIONS]
    assert min(parsed) == support.minimum
    assert all(support.contains(v) for v in parsed)
    assert not support.contains(EngineVersion.parse("0.34.0"))
