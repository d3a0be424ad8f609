"""The metrics contract: what kvscale queries exists on the real engine and means what kvscale
assumes, read through a real Prometheus (see pressure_run.py for the load).

- every query of `build_deployment_queries(metric_queries("vllm", <release>))` returns a series;
- KV usage is a 0–1 fraction that reaches the top of the pool under this load;
- preemptions are a counter (type, never decreasing) that counted this load's evictions;
- TTFT and ITL are histograms with cumulative `le` buckets, one TTFT observation per request;
- `cache_config_info` carries the plan's block count, block size and token figure as labels,
  and the engine's own log line gives the same token figure;
- the token and success counters count exactly the requests sent.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
from pressure_run import SHAPE, PressureRun
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.engine

LOG_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_query_kvscale_sends_returns_a_series(pressure: PressureRun) -> None:
    empty = [field for field, vector in pressure.results.items() if not vector]
    assert not empty, {field: pressure.queries[field] for field in empty}
    assert len(pressure.results) >= 12
    print(f"\n{len(pressure.results)} of {len(pressure.results)} queries returned a series")


def test_kv_usage_is_a_fraction_that_reaches_the_pool_under_pressure(
    pressure: PressureRun,
) -> None:
    name = pressure.names.kv_usage
    assert name is not None
    usage = pressure.sampler.series(name)
    assert usage and all(0.0 <= u <= 1.0 for u in usage)
    # 60 x 1,000 tokens against a 4,096-token pool: full at some point. The peak is looked for in
    # the samples and in Prometheus's scrapes, since a loaded machine answers /metrics seconds
    # apart and the gauge is read between steps (after finished requests freed their blocks).
    assert max(*usage, pressure.peak_usage_scraped) >= 0.9
    assert usage[-1] == 0.0  # every request finished: nothing holds a block


def test_preemptions_are_a_counter_that_counted_this_load(pressure: PressureRun) -> None:
    name = pressure.names.preemptions
    assert name is not None
    family = families(pressure.metrics_text)[name.removesuffix("_total")]
    assert family.type == "counter"  # type: ignore[attr-defined]
    counts = pressure.sampler.series(name)
    assert all(b >= a for a, b in itertools.pairwise(counts))
    assert counts[-1] > 0
    (rate,) = pressure.results["preemption_rate"]
    assert float(rate["value"][1]) > 0


@pytest.mark.parametrize("field", ["ttft_seconds", "itl_seconds"])
def test_latencies_are_cumulative_histograms(pressure: PressureRun, field: str) -> None:
    name = getattr(pressure.names, field)
    family = families(pressure.metrics_text)[name]
    assert family.type == "histogram"  # type: ignore[attr-defined]
    samples = family.samples  # type: ignore[attr-defined]
    buckets = [s for s in samples if s.name == f"{name}_bucket"]
    counts = [s.value for s in buckets]
    assert buckets and buckets[-1].labels["le"] == "+Inf"
    assert all(b >= a for a, b in itertools.pairwise(counts))
    (count,) = [s.value for s in samples if s.name == f"{name}_count"]
    assert counts[-1] == count
    if field == "ttft_seconds":
        assert count == SHAPE.count  # one first token per request
    quantile = "ttft_quantile" if field == "ttft_seconds" else "itl_quantile"
    (p95,) = pressure.results[quantile]
    assert math.isfinite(float(p95["value"][1])) and float(p95["value"][1]) > 0


def test_cache_config_info_carries_the_plans_pool(pressure: PressureRun) -> None:
    plan, names = pressure.plan, pressure.names
    assert names.cache_config_info and names.cache_info_blocks_label
    family = families(pressure.metrics_text)[names.cache_config_info]
    (sample,) = family.samples  # type: ignore[attr-defined]
    assert sample.value == 1.0
    labels = sample.labels
    assert int(labels[names.cache_info_blocks_label]) == plan.num_blocks == 128
    assert int(labels[str(names.cache_info_block_size_label)]) == plan.block_size_tokens
    assert int(labels["kv_cache_size_tokens"]) == plan.kv_cache_tokens
    assert float(labels["kv_cache_max_concurrency"]) == plan.max_concurrency
    (series,) = pressure.results["cache_config"]  # the label survives kvscale's PromQL
    assert int(series["metric"][names.cache_info_blocks_label]) == plan.num_blocks
    logged = LOG_TOKENS.search(pressure.log_text)
    assert logged and int(logged.group(1).replace(",", "")) == plan.kv_cache_tokens


def test_token_and_success_counters_count_the_requests(pressure: PressureRun) -> None:
    names = pressure.names
    values = {
        s.name: s.value
        for f in text_string_to_metric_families(pressure.metrics_text)
        for s in f.samples
        if s.name in (names.prompt_tokens, names.generation_tokens)
    }
    assert values[str(names.prompt_tokens)] == SHAPE.count * SHAPE.prompt_tokens
    assert values[str(names.generation_tokens)] == SHAPE.count * SHAPE.output_tokens
    assert pressure.batch.choices == SHAPE.count
    assert pressure.batch.completion_tokens == SHAPE.count * SHAPE.output_tokens
    success = sum(
        s.value
        for f in text_string_to_metric_families(pressure.metrics_text)
        for s in f.samples
        if s.name == names.request_success
    )
    assert success == SHAPE.count
