"""The metric names the autoscaler queries, per engine and version, as data.

Each engine module lists `MetricRow(field, name, available)` rows; `resolve_metrics` picks for
every `EngineMetrics` field the row whose version range holds the deployed release. A field no
row covers stays None, which the autoscaler must treat as "signal unavailable" (never as 0).
Names are exactly what a scrape returns (`prometheus_client` appends `_total` to counters;
histograms are given by their base name, the PromQL helpers add `_bucket`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from kvscale.capacity.release import ALL_VERSIONS, EngineVersion, VersionRange


@dataclass(frozen=True)
class EngineMetrics:
    """Series names of one engine release. None = the release does not expose that signal."""

    engine: str
    version: str
    kv_usage: str | None = None  # gauge, fraction 0..1 of the KV pool in use
    kv_used_tokens: str | None = None  # gauge; with kv_capacity_tokens when no 0..1 gauge exists
    kv_capacity_tokens: str | None = None  # gauge: KV pool size in tokens
    num_requests_running: str | None = None  # gauge
    num_requests_waiting: str | None = None  # gauge
    preemptions: str | None = None  # counter: requests evicted for KV (preempted / retracted)
    ttft_seconds: str | None = None  # histogram base name: time to first token
    itl_seconds: str | None = None  # histogram base name: inter-token latency (TPOT)
    queue_time_seconds: str | None = None  # histogram base name: time spent waiting
    e2e_latency_seconds: str | None = None  # histogram base name: whole request
    cache_config_info: str | None = None  # info gauge (=1) carrying the pool size as labels
    cache_info_blocks_label: str | None = None  # label of cache_config_info: number of blocks
    cache_info_block_size_label: str | None = None  # label of cache_config_info: block size
    cache_info_tokens_label: str | None = None  # label: the "KV cache size: N tokens" figure
    cache_info_concurrency_label: str | None = None  # label: max concurrency at max_model_len
    request_success: str | None = None  # counter: finished requests
    request_rejections: str | None = None  # counter (may carry a label matcher): refused
    prompt_tokens: str | None = None  # counter
    generation_tokens: str | None = None  # counter


# Fields that carry series names (everything except the identity fields).
METRIC_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(EngineMetrics) if f.name not in ("engine", "version")
)


@dataclass(frozen=True)
class MetricRow:
    """`field` of EngineMetrics is `name` for releases in `available`."""

    field: str
    name: str
    available: VersionRange = ALL_VERSIONS
    note: str = ""  # provenance / caveat, surfaced in docs


def resolve_metrics(
    engine: str, version: EngineVersion, rows: tuple[MetricRow, ...]
) -> EngineMetrics:
    """Pick, for each field, the row whose range holds `version` (the tables never overlap)."""
    chosen: dict[str, str] = {}
    for row in rows:
        if row.available.contains(version):
            chosen.setdefault(row.field, row.name)
    return EngineMetrics(engine=engine, version=str(version), **chosen)
