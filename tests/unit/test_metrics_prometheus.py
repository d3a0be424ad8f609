"""Unit tests of `PrometheusSource` against a scripted query client (no server).

The scripted client answers each PromQL string with a canned instant vector, so every edge case
the real server produces (empty, NaN, +Inf, stale, partial, HTTP errors, connection refused) is
exercised deterministically. The real server is exercised in tests/integration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException

from kvscale.engines import metric_queries
from kvscale.metrics import DeploymentKey, DeploymentTarget, PrometheusSource, Quality
from kvscale.metrics.prometheus import FamilyQueries
from kvscale.metrics.vectors import parse_sample_value

CHAT = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", pods_expected=2)
KEY = CHAT.key


def sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": {"namespace": "team-a", "llmd": "chat", **labels}, "value": [1.0, value]}


@dataclass
class ScriptedClient:
    """Answers queries from a table; unknown queries get an empty vector."""

    answers: dict[str, list[dict[str, Any]] | Exception] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    default: list[dict[str, Any]] | Exception = field(default_factory=list)

    def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> Any:
        self.asked.append(query)
        answer = self.answers.get(query, self.default)
        if isinstance(answer, Exception):
            raise answer
        return answer


def family(
    source: PrometheusSource, engine: str = "vllm", version: str = "0.11.0"
) -> FamilyQueries:
    return source.build_family(metric_queries(engine, version))


def healthy_answers(fam: FamilyQueries) -> dict[str, list[dict[str, Any]] | Exception]:
    assert fam.present and fam.fresh and fam.block_config
    values = {
        "kv_usage_frac": "0.6",
        "num_requests_running": "12",
        "num_requests_waiting": "3",
        "preemptions_per_s": "0.25",
        "ttft_p95_s": "0.4",
        "itl_p95_s": "0.03",
        "queue_time_p95_s": "0.2",
        "prompt_tokens_per_s": "1850.5",
    }
    answers: dict[str, list[dict[str, Any]] | Exception] = {
        query: [sample(values[name])]
        for name, query in fam.signals.items()
        if query is not None and name in values
    }
    answers[fam.present] = [sample("2")]
    answers[fam.fresh] = [sample("2")]
    answers[fam.block_config] = [
        {
            "metric": {
                "namespace": "team-a",
                "llmd": "chat",
                "num_gpu_blocks": "3800",
                "block_size": "16",
            }
        },
        {
            "metric": {
                "namespace": "team-a",
                "llmd": "chat",
                "num_gpu_blocks": "3600",
                "block_size": "16",
            }
        },
    ]
    for item in answers[fam.block_config]:  # type: ignore[union-attr]
        item["value"] = [1.0, "1"]
    return answers


Edit = Callable[[FamilyQueries, dict[str, Any]], None]


def set_signal(name: str, answer: list[dict[str, Any]] | Exception) -> Edit:
    def edit(fam: FamilyQueries, answers: dict[str, Any]) -> None:
        query = fam.signals[name]
        assert query is not None
        answers[query] = answer

    return edit


def set_coverage(present: str, fresh: str) -> Edit:
    def edit(fam: FamilyQueries, answers: dict[str, Any]) -> None:
        assert fam.present and fam.fresh
        answers[fam.present] = [sample(present)] if present != "-" else []
        answers[fam.fresh] = [sample(fresh)] if fresh != "-" else []

    return edit


@dataclass(frozen=True)
class Case:
    name: str
    edit: Edit | None
    signal: str
    expect_value: float | None
    expect_quality: Quality
    expect_reporting: int = 2


CASES = [
    Case("healthy kv", None, "kv_usage_frac", 0.6, Quality.OK),
    Case("healthy preemption rate", None, "preemptions_per_s", 0.25, Quality.OK),
    Case("healthy prompt-token rate", None, "prompt_tokens_per_s", 1850.5, Quality.OK),
    Case(
        "ttft NaN (no requests in window)",
        set_signal("ttft_p95_s", [sample("NaN")]),
        "ttft_p95_s",
        None,
        Quality.NAN,
    ),
    Case(
        "itl +Inf (all in top bucket)",
        set_signal("itl_p95_s", [sample("+Inf")]),
        "itl_p95_s",
        None,
        Quality.NAN,
    ),
    Case(
        "empty kv result", set_signal("kv_usage_frac", []), "kv_usage_frac", None, Quality.MISSING
    ),
    Case(
        "other deployment only",
        set_signal("kv_usage_frac", [sample("0.9", llmd="other")]),
        "kv_usage_frac",
        None,
        Quality.MISSING,
    ),
    Case(
        "bad query is missing",
        set_signal("num_requests_waiting", PrometheusApiClientException("HTTP 400")),
        "num_requests_waiting",
        None,
        Quality.MISSING,
    ),
    Case("vllm 0.11 has no rejection metric", None, "rejections_per_s", None, Quality.UNSUPPORTED),
    Case(
        "one of two pods fresh is partial",
        set_coverage("2", "1"),
        "kv_usage_frac",
        0.6,
        Quality.PARTIAL,
        1,
    ),
    Case(
        "no fresh sample is stale", set_coverage("2", "0"), "kv_usage_frac", None, Quality.STALE, 0
    ),
    Case(
        "stale keeps queue unknown",
        set_coverage("2", "-"),
        "num_requests_waiting",
        None,
        Quality.STALE,
        0,
    ),
    Case("no series at all", set_coverage("-", "-"), "kv_usage_frac", None, Quality.MISSING, 0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reading_values_and_quality(case: Case) -> None:
    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    fam = family(source)
    client.answers = healthy_answers(fam)
    if case.edit is not None:
        case.edit(fam, client.answers)
    reading = source.fetch([CHAT])[KEY]
    assert reading.signals is not None
    assert getattr(reading.signals, case.signal) == case.expect_value
    assert reading.quality_of(case.signal) is case.expect_quality
    assert reading.signals.pods_reporting == case.expect_reporting


def test_smallest_block_pool_is_the_live_capacity() -> None:
    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    client.answers = healthy_answers(family(source))
    signals = source.fetch([CHAT])[KEY].signals
    assert signals is not None
    assert (signals.num_gpu_blocks, signals.block_size_tokens) == (3600, 16)


def test_sglang_capacity_comes_from_token_gauge() -> None:
    target = DeploymentTarget("team-a", "chat", "sglang", "0.5.23", pods_expected=1)
    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    fam = family(source, "sglang", "0.5.23")
    assert fam.present and fam.fresh and fam.capacity_tokens
    client.answers = {
        fam.present: [sample("1")],
        fam.fresh: [sample("1")],
        fam.capacity_tokens: [sample("120000")],
    }
    reading = source.fetch([target])[target.key]
    assert reading.signals is not None
    assert (reading.signals.num_gpu_blocks, reading.signals.block_size_tokens) == (120_000, 1)
    assert reading.quality_of("kv_capacity") is Quality.OK


def test_unreachable_server_fails_fast_and_reports_missing() -> None:
    client = ScriptedClient(default=requests.ConnectionError("refused"))
    source = PrometheusSource("http://prometheus.invalid", client=client)
    other = DeploymentTarget("team-b", "code", "vllm", "0.10.2", pods_expected=1)
    readings = source.fetch([CHAT, other])
    assert source.queries_sent == 1  # the first refusal stops the cycle
    for reading in readings.values():
        assert reading.signals is None
        assert reading.error is not None and "unreachable" in reading.error
        assert {reading.quality_of(name) for name in ("kv_usage_frac", "ttft_p95_s")} == {
            Quality.MISSING
        }


def test_unknown_engine_is_an_error_reading_not_an_exception() -> None:
    target = DeploymentTarget("team-a", "odd", "nonesuch", "1.0", pods_expected=1)
    source = PrometheusSource("http://prometheus.invalid", client=ScriptedClient())
    reading = source.fetch([target])[target.key]
    assert reading.signals is None
    assert reading.error is not None and "nonesuch" in reading.error


def test_query_count_does_not_grow_with_deployments() -> None:
    def targets(count: int) -> list[DeploymentTarget]:
        versions = ("0.10.2", "0.11.0")
        return [
            DeploymentTarget(f"ns-{i}", f"llmd-{i}", "vllm", versions[i % 2], pods_expected=2)
            for i in range(count)
        ]

    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    source.fetch(targets(2))
    few = source.queries_sent
    source.fetch(targets(40))
    assert source.queries_sent == few
    assert len(set(client.asked)) == len(client.asked) // 2  # each query sent once per cycle


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([1.0, "0.5"], 0.5),
        ([1.0, "NaN"], math.nan),
        ([1.0, "+Inf"], math.nan),
        ([1.0, "x"], math.nan),
        (None, math.nan),
        ("0.5", math.nan),
    ],
)
def test_parse_sample_value(raw: object, expected: float) -> None:
    value = parse_sample_value(raw)
    assert (math.isnan(value) and math.isnan(expected)) or value == expected


def test_readings_are_keyed_by_deployment() -> None:
    source = PrometheusSource("http://prometheus.invalid", client=ScriptedClient())
    readings = source.fetch([CHAT])
    assert list(readings) == [DeploymentKey("team-a", "chat")]


def test_sglang_0_5_9_capacity_from_info_labels() -> None:
    # 0.5.9-0.5.13 expose the pool as labels of an info gauge (pages x page size)
    target = DeploymentTarget("team-a", "chat", "sglang", "0.5.9", pods_expected=1)
    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    fam = family(source, "sglang", "0.5.9")
    assert fam.present and fam.fresh and fam.block_config
    info = sample("1", num_pages="7500", page_size="16")
    client.answers = {
        fam.present: [sample("1")],
        fam.fresh: [sample("1")],
        fam.block_config: [info],
    }
    signals = source.fetch([target])[target.key].signals
    assert signals is not None
    assert (signals.num_gpu_blocks, signals.block_size_tokens) == (7500, 16)


def test_tgi_kv_usage_is_a_ratio_and_latency_it_lacks_is_unsupported() -> None:
    target = DeploymentTarget("team-a", "chat", "tgi", "3.3.7", pods_expected=1)
    client = ScriptedClient()
    source = PrometheusSource("http://prometheus.invalid", client=client)
    fam = family(source, "tgi", "3.3.7")
    kv_query = fam.signals["kv_usage_frac"]
    assert fam.present and fam.fresh and kv_query
    assert "tgi_batch_current_max_tokens" in kv_query and "tgi_batch_max_total_tokens" in kv_query
    client.answers = {
        fam.present: [sample("1")],
        fam.fresh: [sample("1")],
        kv_query: [sample("0.8")],
    }
    reading = source.fetch([target])[target.key]
    assert reading.signals is not None and reading.signals.kv_usage_frac == 0.8
    assert reading.quality_of("ttft_p95_s") is Quality.UNSUPPORTED  # TGI has no TTFT histogram
