"""PromQL the autoscaler sends, built from an `EngineMetrics` table (pure string building).

Every query aggregates *all* deployments at once, grouped by the labels the operator puts on
its pods and Prometheus keeps through relabelling (default `namespace` and `llmd`); one query
per signal per engine release serves the whole fleet. A builder returns None when the release
has no such series, so callers can tell "no signal" from "zero".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kvscale.engines.metrics import EngineMetrics

DEFAULT_GROUP_BY: tuple[str, ...] = ("namespace", "llmd")
DEFAULT_WINDOW_S = 60
DEFAULT_QUANTILE = 0.95

_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AGGREGATIONS = frozenset({"avg", "max", "min", "sum"})


class PromQLError(ValueError):
    """A builder argument that would produce invalid or ambiguous PromQL."""


def _labels(group_by: Sequence[str]) -> str:
    if isinstance(group_by, str):  # a bare string would be split into characters
        raise PromQLError(f"group_by must be a sequence of label names, got {group_by!r}")
    for label in group_by:
        if not _LABEL_RE.match(label) or label == "le":
            raise PromQLError(f"group_by: {label!r} is not a usable Prometheus label name")
    return ", ".join(group_by)


def _aggregate(op: str, group_by: Sequence[str], expr: str) -> str:
    if op not in _AGGREGATIONS:
        raise PromQLError(f"aggregation {op!r} not one of {sorted(_AGGREGATIONS)}")
    labels = _labels(group_by)
    return f"{op} by ({labels}) ({expr})" if labels else f"{op}({expr})"


def _range(window_s: int) -> str:
    if isinstance(window_s, bool) or not isinstance(window_s, int) or window_s <= 0:
        raise PromQLError(f"window_s must be a positive whole number of seconds, got {window_s}")
    return f"{window_s}s"


def promql_kv_usage(
    m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY, *, agg: str = "avg"
) -> str | None:
    """KV pool usage 0..1 across each deployment's replicas (a ratio of gauges for TGI)."""
    if m.kv_usage:
        return _aggregate(agg, group_by, m.kv_usage)
    if m.kv_used_tokens and m.kv_capacity_tokens:
        return _aggregate(agg, group_by, f"{m.kv_used_tokens} / {m.kv_capacity_tokens}")
    return None


def promql_gauge_sum(metric: str | None, group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str | None:
    return None if metric is None else _aggregate("sum", group_by, metric)


def promql_requests_running(
    m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY
) -> str | None:
    return promql_gauge_sum(m.num_requests_running, group_by)


def promql_requests_waiting(
    m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY
) -> str | None:
    return promql_gauge_sum(m.num_requests_waiting, group_by)


def promql_replicas_reporting(
    m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY
) -> str | None:
    """How many replicas currently export the running gauge (for the missing-data fail-safe)."""
    metric = m.num_requests_running or m.kv_usage
    return None if metric is None else _aggregate_count(group_by, metric)


def _aggregate_count(group_by: Sequence[str], expr: str) -> str:
    labels = _labels(group_by)
    return f"count by ({labels}) ({expr})" if labels else f"count({expr})"


def promql_counter_rate(
    counter: str | None,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    window_s: int = DEFAULT_WINDOW_S,
) -> str | None:
    """Per-second rate of a counter summed per deployment."""
    if counter is None:
        return None
    return _aggregate("sum", group_by, f"rate({counter}[{_range(window_s)}])")


def promql_histogram_quantile(
    histogram: str | None,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    quantile: float = DEFAULT_QUANTILE,
    window_s: int = DEFAULT_WINDOW_S,
) -> str | None:
    """`histogram_quantile(q, sum by (le, …) (rate(X_bucket[w])))` for a histogram base name."""
    if histogram is None:
        return None
    if not 0.0 < quantile < 1.0:
        raise PromQLError(f"quantile must lie in (0, 1), got {quantile}")
    labels = _labels(group_by)
    by = f"le, {labels}" if labels else "le"
    rate = f"rate({histogram}_bucket[{_range(window_s)}])"
    return f"histogram_quantile({quantile:g}, sum by ({by}) ({rate}))"


def promql_preemption_rate(
    m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY, window_s: int = DEFAULT_WINDOW_S
) -> str | None:
    """Requests evicted for KV per second (vLLM preemptions, SGLang retractions)."""
    return promql_counter_rate(m.preemptions, group_by, window_s)


def promql_ttft_quantile(
    m: EngineMetrics,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    quantile: float = DEFAULT_QUANTILE,
    window_s: int = DEFAULT_WINDOW_S,
) -> str | None:
    return promql_histogram_quantile(m.ttft_seconds, group_by, quantile=quantile, window_s=window_s)


def promql_itl_quantile(
    m: EngineMetrics,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    quantile: float = DEFAULT_QUANTILE,
    window_s: int = DEFAULT_WINDOW_S,
) -> str | None:
    return promql_histogram_quantile(m.itl_seconds, group_by, quantile=quantile, window_s=window_s)


def promql_cache_config(m: EngineMetrics, group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str | None:
    """The info gauge keeping its block-count and block-size labels, one series per value."""
    if not (m.cache_config_info and m.cache_info_blocks_label and m.cache_info_block_size_label):
        return None
    keep = [*group_by, m.cache_info_blocks_label, m.cache_info_block_size_label]
    return _aggregate("max", keep, m.cache_config_info)


@dataclass(frozen=True)
class DeploymentQueries:
    """Every query the autoscaler runs for one engine release; None = signal unavailable."""

    kv_usage: str | None
    requests_running: str | None
    requests_waiting: str | None
    replicas_reporting: str | None
    preemption_rate: str | None
    ttft_quantile: str | None  # over the latency window
    ttft_quantile_recent: str | None  # over the rate window (the scale-in guard's)
    itl_quantile: str | None
    queue_time_quantile: str | None
    request_success_rate: str | None
    rejection_rate: str | None
    prompt_token_rate: str | None
    generation_token_rate: str | None
    kv_capacity_tokens: str | None
    cache_config: str | None


def build_deployment_queries(
    m: EngineMetrics,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    window_s: int = DEFAULT_WINDOW_S,
    quantile: float = DEFAULT_QUANTILE,
    latency_window_s: int | None = None,
) -> DeploymentQueries:
    """Every signal's query; rates, the queue-time quantile and the recent TTFT quantile over
    `window_s`, the SLO quantiles (TTFT, ITL) over `latency_window_s` (default: `window_s`)."""
    slo_window_s = window_s if latency_window_s is None else latency_window_s

    def rate(counter: str | None) -> str | None:
        return promql_counter_rate(counter, group_by, window_s)

    def q(histogram: str | None, over_s: int = window_s) -> str | None:
        return promql_histogram_quantile(histogram, group_by, quantile=quantile, window_s=over_s)

    return DeploymentQueries(
        kv_usage=promql_kv_usage(m, group_by),
        requests_running=promql_requests_running(m, group_by),
        requests_waiting=promql_requests_waiting(m, group_by),
        replicas_reporting=promql_replicas_reporting(m, group_by),
        preemption_rate=promql_preemption_rate(m, group_by, window_s),
        ttft_quantile=q(m.ttft_seconds, slo_window_s),
        ttft_quantile_recent=q(m.ttft_seconds),
        itl_quantile=q(m.itl_seconds, slo_window_s),
        queue_time_quantile=q(m.queue_time_seconds),
        request_success_rate=rate(m.request_success),
        rejection_rate=rate(m.request_rejections),
        prompt_token_rate=rate(m.prompt_tokens),
        generation_token_rate=rate(m.generation_tokens),
        kv_capacity_tokens=promql_gauge_sum(m.kv_capacity_tokens, group_by),
        cache_config=promql_cache_config(m, group_by),
    )
