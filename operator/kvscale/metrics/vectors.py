"""Turning Prometheus instant-vector JSON into per-deployment numbers (no I/O).

The HTTP API returns `[{"metric": {labels}, "value": [eval_ts, "string"]}, …]`; values are
strings and may be "NaN", "+Inf" or "-Inf". Everything here keeps non-finite values as NaN so
the caller can flag them instead of mistaking them for numbers, and ignores series that lack
a grouping label (they belong to nothing we manage).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kvscale.metrics.source import DeploymentKey

VectorResult = Sequence[Mapping[str, Any]]


def parse_sample_value(value: object) -> float:
    """`[ts, "0.42"]` -> 0.42; anything unparsable or non-finite -> NaN."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return math.nan
    try:
        number = float(value[1])
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def key_of(labels: Mapping[str, str], group_labels: tuple[str, str]) -> DeploymentKey | None:
    namespace, name = labels.get(group_labels[0]), labels.get(group_labels[1])
    if not namespace or not name:
        return None
    return DeploymentKey(namespace, name)


def values_by_deployment(
    result: VectorResult, group_labels: tuple[str, str]
) -> dict[DeploymentKey, float]:
    """One value per deployment. A deployment with several series (should not happen after
    `… by (namespace, llmd)`) keeps NaN if any is NaN, else the largest: never understate."""
    out: dict[DeploymentKey, float] = {}
    for sample in result:
        key = key_of(sample.get("metric", {}), group_labels)
        if key is None:
            continue
        value = parse_sample_value(sample.get("value"))
        previous = out.get(key)
        if previous is None or math.isnan(value):
            out[key] = value
        elif not math.isnan(previous):
            out[key] = max(previous, value)
    return out


def block_config_by_deployment(
    result: VectorResult,
    group_labels: tuple[str, str],
    blocks_label: str,
    block_size_label: str,
) -> dict[DeploymentKey, tuple[int, int]]:
    """(num_gpu_blocks, block_size) per deployment from an info gauge's labels.

    Pods of one deployment may disagree (a rollout in progress); the smallest pool is the one
    that runs out first, so it is the capacity that counts. Labels that are not whole numbers
    (e.g. "None" before the engine profiled memory) are ignored.
    """
    out: dict[DeploymentKey, tuple[int, int]] = {}
    for sample in result:
        labels = sample.get("metric", {})
        key = key_of(labels, group_labels)
        blocks, block_size = (
            _as_int(labels.get(blocks_label)),
            _as_int(labels.get(block_size_label)),
        )
        if key is None or blocks is None or block_size is None or blocks <= 0 or block_size <= 0:
            continue
        previous = out.get(key)
        if previous is None or blocks * block_size < previous[0] * previous[1]:
            out[key] = (blocks, block_size)
    return out


def _as_int(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(text)
    except ValueError:
        return None
