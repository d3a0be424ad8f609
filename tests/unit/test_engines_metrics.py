"""Metric names by engine and version, and the PromQL the autoscaler sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvscale.engines import (
    PromQLError,
    build_deployment_queries,
    metric_queries,
    promql_cache_config,
    promql_histogram_quantile,
    promql_kv_usage,
    promql_preemption_rate,
    promql_replicas_reporting,
    promql_requests_waiting,
)
from kvscale.engines.render import ADAPTERS


@pytest.mark.parametrize(
    ("version", "kv_usage", "itl"),
    [
        # engines.md: renamed in 0.9 (both up to 0.10.2), old hidden 0.11, gone 0.12; V0
        # (until 0.10.2) only has the old names, so kvscale switches at 0.11.0.
        ("0.9.2", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),
        ("0.10.2", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),
        ("0.11.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
        ("0.12.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
        ("0.33.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
    ],
)
def test_vllm_renamed_metrics_by_version(version: str, kv_usage: str, itl: str) -> None:
    m = metric_queries("vllm", version)
    assert (m.kv_usage, m.itl_seconds) == (kv_usage, itl)
    assert m.preemptions == "vllm:num_preemptions_total"
    assert m.cache_config_info == "vllm:cache_config_info"
    assert (m.cache_info_blocks_label, m.cache_info_block_size_label) == (
        "num_gpu_blocks",
        "block_size",
    )


@pytest.mark.parametrize(
    ("version", "rejections"),
    [("0.27.0", None), ("0.30.0", "vllm:admission_rejections_total")],
)
def test_vllm_admission_rejections_appear_in_0_30(version: str, rejections: str | None) -> None:
    assert metric_queries("vllm", version).request_rejections == rejections


@pytest.mark.parametrize(
    ("version", "preemptions", "cache_info", "capacity"),
    [
        ("0.4.10.post2", None, None, None),
        ("0.5.9", "sglang:num_retracted_requests_total", "sglang:cache_config_info", None),
        ("0.5.14", "sglang:num_retracted_requests_total", None, "sglang:max_total_num_tokens"),
        ("0.5.23", "sglang:num_retracted_requests_total", None, "sglang:max_total_num_tokens"),
    ],
)
def test_sglang_metrics_by_version(
    version: str, preemptions: str | None, cache_info: str | None, capacity: str | None
) -> None:
    m = metric_queries("sglang", version)
    assert m.kv_usage == "sglang:token_usage"
    assert m.num_requests_waiting == "sglang:num_queue_reqs"
    assert (m.preemptions, m.cache_config_info, m.kv_capacity_tokens) == (
        preemptions,
        cache_info,
        capacity,
    )


@pytest.mark.parametrize(
    ("version", "kv_usage", "ttft"),
    [
        ("1.2.1", None, "time_to_first_token_seconds"),
        ("1.3.0rc21", None, "time_to_first_token_seconds"),
        ("1.3.0", "trtllm_kv_cache_utilization", "trtllm_time_to_first_token_seconds"),
    ],
)
def test_trtllm_prefix_arrives_in_1_3(version: str, kv_usage: str | None, ttft: str) -> None:
    m = metric_queries("trtllm", version)
    assert (m.kv_usage, m.ttft_seconds) == (kv_usage, ttft)
    assert m.preemptions is None  # trtllm-serve forces GUARANTEED_NO_EVICT


def test_tgi_has_no_ttft_or_preemption_and_a_ratio_for_kv_usage() -> None:
    m = metric_queries("tgi", "3.3.7")
    assert m.ttft_seconds is None and m.preemptions is None
    assert promql_kv_usage(m) == (
        "avg by (namespace, llmd) (tgi_batch_current_max_tokens / tgi_batch_max_total_tokens)"
    )
    assert promql_kv_usage(metric_queries("tgi", "2.3.0")) is None  # no capacity gauge yet


@pytest.mark.parametrize("adapter", list(ADAPTERS.values()), ids=list(ADAPTERS))
def test_tables_never_give_two_names_for_one_field_and_version(adapter: object) -> None:
    rows = adapter.metrics  # type: ignore[attr-defined]
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a.field == b.field:
                assert not a.available.overlaps(b.available), (a, b)
    names = [spec.name for spec in adapter.flags]  # type: ignore[attr-defined]
    assert len(names) == len(set(names))


# ---- PromQL --------------------------------------------------------------------------------


VLLM_NEW = metric_queries("vllm", "0.11.0")


def test_kv_usage_grouped_by_the_given_labels() -> None:
    assert promql_kv_usage(VLLM_NEW) == "avg by (namespace, llmd) (vllm:kv_cache_usage_perc)"
    assert (
        promql_kv_usage(VLLM_NEW, ("namespace", "kvscale_dev_deployment"), agg="max")
        == "max by (namespace, kvscale_dev_deployment) (vllm:kv_cache_usage_perc)"
    )
    assert promql_kv_usage(VLLM_NEW, ()) == "avg(vllm:kv_cache_usage_perc)"


def test_histogram_quantile_keeps_le_and_groups() -> None:
    assert promql_histogram_quantile(
        VLLM_NEW.ttft_seconds, ("ns", "app"), quantile=0.9, window_s=120
    ) == (
        "histogram_quantile(0.9, sum by (le, ns, app) "
        "(rate(vllm:time_to_first_token_seconds_bucket[120s])))"
    )


def test_slo_quantiles_read_the_latency_window_the_rest_the_rate_window() -> None:
    q = build_deployment_queries(VLLM_NEW, window_s=60, latency_window_s=300)
    assert q.ttft_quantile is not None and "[300s]" in q.ttft_quantile
    assert q.itl_quantile is not None and "[300s]" in q.itl_quantile
    for short in (q.ttft_quantile_recent, q.queue_time_quantile, q.prompt_token_rate):
        assert short is not None and "[60s]" in short
    assert q.ttft_quantile_recent.replace("[60s]", "[300s]") == q.ttft_quantile
    same = build_deployment_queries(VLLM_NEW, window_s=60)  # one window unless told
    assert same.ttft_quantile == same.ttft_quantile_recent


def test_counter_rate_and_gauge_sum() -> None:
    assert (
        promql_preemption_rate(VLLM_NEW, window_s=30)
        == "sum by (namespace, llmd) (rate(vllm:num_preemptions_total[30s]))"
    )
    assert (
        promql_requests_waiting(VLLM_NEW) == "sum by (namespace, llmd) (vllm:num_requests_waiting)"
    )
    assert (
        promql_replicas_reporting(VLLM_NEW)
        == "count by (namespace, llmd) (vllm:num_requests_running)"
    )


def test_label_matchers_inside_a_counter_name_survive() -> None:
    q = build_deployment_queries(metric_queries("tgi", "3.3.7"), ("namespace",), window_s=60)
    assert (
        q.rejection_rate == 'sum by (namespace) (rate(tgi_request_failure{err="overloaded"}[60s]))'
    )
    assert q.ttft_quantile is None  # unavailable, not zero


def test_cache_config_keeps_its_size_labels() -> None:
    assert promql_cache_config(VLLM_NEW) == (
        "max by (namespace, llmd, num_gpu_blocks, block_size) (vllm:cache_config_info)"
    )
    assert promql_cache_config(metric_queries("sglang", "0.5.23")) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: promql_kv_usage(VLLM_NEW, ("bad-label",)),
        lambda: promql_kv_usage(VLLM_NEW, ("le",)),
        lambda: promql_kv_usage(VLLM_NEW, "namespace"),
        lambda: promql_kv_usage(VLLM_NEW, agg="median"),
        lambda: promql_preemption_rate(VLLM_NEW, window_s=0),
        lambda: promql_histogram_quantile("x", quantile=1.5),
    ],
)
def test_bad_builder_arguments_raise(call: object) -> None:
    with pytest.raises(PromQLError):
        call()  # type: ignore[operator]


DOC = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


@pytest.mark.parametrize("adapter", list(ADAPTERS.values()), ids=list(ADAPTERS))
def test_docs_mention_every_flag_and_metric_in_the_tables(adapter: object) -> None:
    text = DOC.read_text(encoding="utf-8")
    names = [spec.name for spec in adapter.flags]  # type: ignore[attr-defined]
    names += [row.name for row in adapter.metrics]  # type: ignore[attr-defined]
    missing = [name for name in names if name not in text]
    assert missing == []
