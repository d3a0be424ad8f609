"""The signal table declares each serving signal once; status, queries, quality keys and the
usability check are derived from it, so they cannot drift apart."""

from __future__ import annotations

import dataclasses

from kvscale.api.status import AutoscalerStatus, SignalsStatus
from kvscale.controller.autoscaler_status import signals_status
from kvscale.engines.promql import DeploymentQueries
from kvscale.metrics.prometheus import _QUERY_OF_SIGNAL
from kvscale.metrics.source import SIGNAL_NAMES, SignalsReading
from kvscale.scaling.signals import SIGNAL_FIELDS, is_usable
from kvscale.scaling.types import Signals


def test_every_signals_attribute_has_exactly_one_row() -> None:
    attributes = [f.attribute for f in SIGNAL_FIELDS]
    assert sorted(attributes) == sorted(f.name for f in dataclasses.fields(Signals))
    assert len(set(attributes)) == len(attributes)


def test_every_query_names_a_deployment_query() -> None:
    queries = {f.name for f in dataclasses.fields(DeploymentQueries)}
    assert {f.query for f in SIGNAL_FIELDS if f.query} <= queries
    assert {f.attribute: f.query for f in SIGNAL_FIELDS if f.query} == _QUERY_OF_SIGNAL


def test_the_status_model_and_the_status_writer_use_the_table_keys() -> None:
    keys = [f.status_key for f in SIGNAL_FIELDS]
    schema = AutoscalerStatus.model_json_schema(by_alias=True)
    assert list(SignalsStatus.model_json_schema(by_alias=True)["properties"]) == keys
    assert "signals" in schema["properties"]
    reading = SignalsReading(Signals(pods_expected=2, pods_reporting=2, kv_usage_frac=0.5))
    written = signals_status(reading)
    assert list(written) == keys
    assert SignalsStatus.model_validate(written).model_dump(by_alias=True) == written


def test_quality_keys_follow_the_table_and_the_pool_is_one_key() -> None:
    assert SIGNAL_NAMES[0] == "kv_usage_frac"
    assert SIGNAL_NAMES.count("kv_capacity") == 1
    assert set(SIGNAL_NAMES) == {f.quality for f in SIGNAL_FIELDS if f.quality}


def test_a_reading_is_usable_only_with_a_pressure_signal_from_a_reporting_pod() -> None:
    assert not is_usable(Signals(pods_expected=2, pods_reporting=2, num_requests_running=5))
    assert is_usable(Signals(pods_expected=2, pods_reporting=2, ttft_p95_s=0.2))
    assert not is_usable(Signals(pods_expected=2, pods_reporting=0, ttft_p95_s=0.2))
    for field in SIGNAL_FIELDS:
        if field.pressure:
            assert is_usable(Signals(pods_expected=1, pods_reporting=1, **{field.attribute: 1}))
