"""Prometheus implementation of `MetricsSource` (prometheus-api-client over HTTP).

Batching: every query aggregates all deployments at once (`… by (namespace, llmd)`), and a
query string is sent once per cycle however many deployments share it, so the number of
queries grows with the number of distinct engine metric families, never with deployments.

Edge cases are handled here and nowhere else: an empty result is "missing", NaN/Inf is "nan",
a series whose newest sample is older than `stale_after_s` does not count as reporting, k of n
pods reporting is "partial", and an unreachable server is a reading with `signals=None`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from kvscale.engines import (
    EngineMetrics,
    UnsupportedEngineError,
    build_deployment_queries,
    metric_queries,
    promql_kv_usage,
)
from kvscale.metrics.source import (
    SIGNAL_NAMES,
    DeploymentKey,
    DeploymentTarget,
    Quality,
    SignalsReading,
)
from kvscale.metrics.vectors import (
    VectorResult,
    block_config_by_deployment,
    key_of,
    parse_sample_value,
    values_by_deployment,
)
from kvscale.scaling.observe import LATENCY_WINDOW_S, SIGNAL_WINDOW_S
from kvscale.scaling.signals import SIGNAL_FIELDS
from kvscale.scaling.types import Signals

logger = logging.getLogger(__name__)

# Signals field -> DeploymentQueries attribute, from the signal table (the KV pool, read from
# two series, is assembled separately).
_QUERY_OF_SIGNAL: Mapping[str, str] = {
    f.attribute: f.query for f in SIGNAL_FIELDS if f.query is not None
}


class QueryClient(Protocol):
    """The one call we need from PrometheusConnect (a fake in unit tests)."""

    def custom_query(self, query: str, params: dict[Any, Any] = ..., timeout: int = ...) -> Any: ...


@runtime_checkable
class RangeQueryClient(Protocol):
    """The range query that seeds the forecast's profile (PrometheusConnect has it)."""

    def custom_query_range(
        self, query: str, start_time: datetime, end_time: datetime, step: str
    ) -> Any: ...


@dataclass(frozen=True)
class _RangeRows:
    """A range query's points by deployment, from one read that ended at `end_s`."""

    end_s: float
    step_s: float
    read_at: float  # time.monotonic() of the read
    rows: dict[DeploymentKey, dict[float, float]]


@dataclass(frozen=True)
class FamilyQueries:
    """The PromQL for one engine metric family; None where the family lacks the signal."""

    signals: Mapping[str, str | None]  # keyed like _QUERY_OF_SIGNAL
    present: str | None  # series per deployment (stale ones included)
    fresh: str | None  # series per deployment with a sample newer than stale_after_s
    block_config: str | None  # info gauge with block count / size labels (vLLM)
    blocks_label: str | None
    block_size_label: str | None
    capacity_tokens: str | None  # pool size in tokens per pod (SGLang, TGI)


@dataclass(frozen=True)
class _Outcome:
    result: VectorResult
    error: str | None = None


class _Results:
    """One cycle's query outcomes, each parsed at most once into per-deployment values.

    Every deployment reads the same few result vectors; parsing a vector per deployment would
    make a cycle quadratic in the number of LLMDeployments (seconds at 1000 of them).
    """

    def __init__(self, outcomes: Mapping[str, _Outcome], group_labels: tuple[str, str]) -> None:
        self._outcomes = outcomes
        self._group_labels = group_labels
        self._values: dict[str, dict[DeploymentKey, float]] = {}
        self._block_configs: dict[str, dict[DeploymentKey, tuple[int, int]]] = {}

    def error(self, query: str) -> str | None:
        return self._outcomes[query].error

    def values(self, query: str) -> dict[DeploymentKey, float]:
        if query not in self._values:
            result = self._outcomes[query].result
            self._values[query] = values_by_deployment(result, self._group_labels)
        return self._values[query]

    def block_config(
        self, query: str, blocks_label: str, block_size_label: str
    ) -> dict[DeploymentKey, tuple[int, int]]:
        if query not in self._block_configs:
            self._block_configs[query] = block_config_by_deployment(
                self._outcomes[query].result, self._group_labels, blocks_label, block_size_label
            )
        return self._block_configs[query]


class PrometheusSource:
    """Reads `Signals` for many LLMDeployments from one Prometheus server."""

    def __init__(
        self,
        url: str,
        *,
        bearer_token: str | None = None,
        bearer_token_file: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 5.0,
        group_labels: tuple[str, str] = ("namespace", "llmd"),
        window_s: int = int(SIGNAL_WINDOW_S),
        latency_window_s: int = int(LATENCY_WINDOW_S),
        stale_after_s: float = 60.0,
        quantile: float = 0.95,
        client: QueryClient | None = None,
    ) -> None:
        """`window_s` is the rate/quantile window (≥ 4 scrape intervals) and `latency_window_s`
        the SLO quantiles' (TTFT, ITL p95); `stale_after_s` the
        sample age past which a pod no longer counts as reporting. `client` replaces the HTTP
        client (tests); otherwise auth is a bearer token (string, or a file re-read every cycle
        because projected service-account tokens rotate) and `ca_file` verifies TLS."""
        if len(group_labels) != 2:
            raise ValueError("group_labels: need (namespace label, deployment label)")
        self.url = url
        self.timeout_s = timeout_s
        self.group_labels = group_labels
        self.window_s = window_s
        self.latency_window_s = latency_window_s
        self.stale_after_s = stale_after_s
        self.quantile = quantile
        self.queries_sent = 0  # in the last fetch (exposed for the operator's own metrics)
        self._bearer_token = bearer_token
        self._bearer_token_file = bearer_token_file
        self._ca_file = ca_file
        self._client = client
        self._families: dict[tuple[str, str], FamilyQueries | str] = {}
        self._history: dict[str, _RangeRows] = {}  # range query -> its last read, split

    def fetch(self, targets: Sequence[DeploymentTarget]) -> dict[DeploymentKey, SignalsReading]:
        """One reading per target; backend failures come back as readings, never raised."""
        now = time.monotonic()  # range reads older than one step serve no profile seed now
        self._history = {q: r for q, r in self._history.items() if now - r.read_at < r.step_s}
        families = {target.key: self._family_of(target) for target in targets}
        wanted = sorted(
            {
                query
                for family in families.values()
                if isinstance(family, FamilyQueries)
                for query in _queries_of(family)
            }
        )
        results = _Results(self._run_all(wanted), self.group_labels)
        readings: dict[DeploymentKey, SignalsReading] = {}
        for target in targets:
            family = families[target.key]
            if isinstance(family, str):
                readings[target.key] = SignalsReading(None, {}, family)
            else:
                readings[target.key] = self._assemble(target, family, results)
        return readings

    def demand_history(
        self, target: DeploymentTarget, start_s: float, end_s: float, step_s: float
    ) -> list[tuple[float, float | None, float | None]]:
        """(time_s, KV demand in replicas' worth, prompt tokens/s) of one deployment over a past
        range (`query_range`), oldest first: what seeds the forecast's daily profile.

        KV demand is the sum of the pods' usage (each pod's share of its pool), the prompt rate
        the same `rate()` the autoscaler reads. Unknown points are None; an engine release
        without the metrics or a failed query gives an empty history (the profile is then
        learned from the ticks alone).
        """
        family = self._family_of(target)
        if isinstance(family, str):
            return []
        metrics = metric_queries(target.engine, target.engine_version)
        queries = (
            promql_kv_usage(metrics, self.group_labels, agg="sum"),
            family.signals.get("prompt_tokens_per_s"),
        )
        columns: list[dict[float, float]] = []
        for query in queries:
            columns.append(
                {} if query is None else self._range(query, target, start_s, end_s, step_s)
            )
        times = sorted(set(columns[0]) | set(columns[1]))
        return [(t, columns[0].get(t), columns[1].get(t)) for t in times]

    def _range(
        self, query: str, target: DeploymentTarget, start_s: float, end_s: float, step_s: float
    ) -> dict[float, float]:
        """One deployment's points of a range query. The query's result holds every
        deployment's series, so it is read once and split by deployment; a call whose window
        ends within one step of the read's is answered from it (the objects of a fleet seed
        their profiles on their first ticks, seconds apart: one read, not one per object)."""
        cached = self._history.get(query)
        if cached is None or cached.step_s != step_s or abs(end_s - cached.end_s) >= step_s:
            rows = self._read_range(query, target, start_s, end_s, step_s)
            if rows is None:
                return {}
            cached = _RangeRows(end_s, step_s, time.monotonic(), rows)
            self._history[query] = cached
        return dict(cached.rows.get(target.key, {}))

    def _read_range(
        self, query: str, target: DeploymentTarget, start_s: float, end_s: float, step_s: float
    ) -> dict[DeploymentKey, dict[float, float]] | None:
        """Every deployment's points of one range query; None when it cannot be read."""
        client = self._connect()
        if not isinstance(client, RangeQueryClient):
            return None
        try:
            result = client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start_s, UTC),
                end_time=datetime.fromtimestamp(end_s, UTC),
                step=f"{step_s:g}s",
            )
        except (PrometheusApiClientException, requests.RequestException, ValueError) as error:
            logger.warning("%s: history query failed: %s", target.key, _first_line(error))
            return None
        rows: dict[DeploymentKey, dict[float, float]] = {}
        for series in result if isinstance(result, list) else []:
            key = key_of(series.get("metric", {}), self.group_labels)
            if key is None:
                continue
            points = rows.setdefault(key, {})
            for point in series.get("values") or []:
                value = parse_sample_value(point)
                if not math.isnan(value):
                    points[float(point[0])] = value
        return rows

    def close(self) -> None:
        """Release the HTTP connection pool (the operator calls it on shutdown)."""
        if isinstance(self._client, PrometheusConnect):  # only the client we made ourselves
            self._client.close()
            self._client = None

    # --- queries -------------------------------------------------------------------------------

    def _family_of(self, target: DeploymentTarget) -> FamilyQueries | str:
        """The family's queries, or an error string for an engine release we cannot read."""
        cache_key = (target.engine, target.engine_version)
        if cache_key not in self._families:
            try:
                metrics = metric_queries(target.engine, target.engine_version)
            except UnsupportedEngineError as error:
                self._families[cache_key] = f"cannot read metrics: {error}"
            else:
                self._families[cache_key] = self.build_family(metrics)
        return self._families[cache_key]

    def build_family(self, metrics: EngineMetrics) -> FamilyQueries:
        """All PromQL for one engine release (the engines package owns the metric names)."""
        built = build_deployment_queries(
            metrics,
            self.group_labels,
            window_s=self.window_s,
            quantile=self.quantile,
            latency_window_s=self.latency_window_s,
        )
        labels = ", ".join(self.group_labels)
        liveness = metrics.num_requests_running or metrics.kv_usage
        fresh = (
            None
            if liveness is None
            else f"count by ({labels}) ((time() - timestamp({liveness})) < {self.stale_after_s:g})"
        )
        capacity_tokens = metrics.kv_capacity_tokens
        return FamilyQueries(
            signals={name: getattr(built, attr) for name, attr in _QUERY_OF_SIGNAL.items()},
            present=built.replicas_reporting,
            fresh=fresh,
            block_config=built.cache_config,
            blocks_label=metrics.cache_info_blocks_label,
            block_size_label=metrics.cache_info_block_size_label,
            capacity_tokens=(
                None if capacity_tokens is None else f"min by ({labels}) ({capacity_tokens})"
            ),
        )

    def _run_all(self, queries: Sequence[str]) -> dict[str, _Outcome]:
        """Send each query once. A connection failure or timeout stops the cycle: the server is
        down, and waiting `timeout_s` for every remaining query would stall the operator."""
        self.queries_sent = 0
        outcomes: dict[str, _Outcome] = {}
        try:
            client = self._connect()
        except OSError as error:
            return {
                query: _Outcome((), f"cannot set up Prometheus client: {error}")
                for query in queries
            }
        for index, query in enumerate(queries):
            self.queries_sent += 1
            try:
                result = client.custom_query(query, timeout=math.ceil(self.timeout_s))
            except (requests.ConnectionError, requests.Timeout) as error:
                message = f"Prometheus at {self.url} unreachable: {type(error).__name__}"
                outcomes.update({later: _Outcome((), message) for later in queries[index:]})
                break
            except (PrometheusApiClientException, requests.RequestException, ValueError) as error:
                outcomes[query] = _Outcome((), f"query failed: {_first_line(error)}")
            else:
                outcomes[query] = _Outcome(result if isinstance(result, list) else ())
        return outcomes

    def _connect(self) -> QueryClient:
        """The HTTP client, made once; the token file is re-read on every cycle."""
        if isinstance(self._client, PrometheusConnect):
            self._client.headers = self._auth_headers()
        if self._client is not None:
            return self._client
        session = requests.Session()
        session.verify = self._ca_file if self._ca_file is not None else True
        connection = PrometheusConnect(
            url=self.url,
            headers=self._auth_headers(),
            retry=Retry(total=0),  # the operator's next cycle is the retry
            session=session,
            timeout=math.ceil(self.timeout_s),
        )
        self._client = connection
        return connection

    def _auth_headers(self) -> dict[str, str]:
        token = self._bearer_token
        if self._bearer_token_file is not None:
            token = Path(self._bearer_token_file).read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    # --- assembling readings ---------------------------------------------------------------

    def _assemble(
        self, target: DeploymentTarget, family: FamilyQueries, results: _Results
    ) -> SignalsReading:
        key = target.key
        coverage_errors = [
            error
            for query in (family.present, family.fresh)
            if query is not None
            for error in (results.error(query),)
            if error is not None
        ]
        if coverage_errors:
            return SignalsReading(
                None, dict.fromkeys(SIGNAL_NAMES, Quality.MISSING), coverage_errors[0]
            )
        present = _count(results, family.present, key)
        fresh = _count(results, family.fresh, key)
        expected = target.pods_expected
        # every pod with a fresh sample, draining ones included: the load a draining pod holds
        # moves to the Ready pods as it leaves, so summed over all of them it is the fleet's
        reporting = fresh
        base = _base_quality(present, fresh, expected)
        values: dict[str, float | None] = {}
        quality: dict[str, Quality] = {}
        errors: list[str] = []
        for name, query in family.signals.items():
            values[name], quality[name] = _judge(results, query, key, base=base, errors=errors)
        blocks, block_size, quality["kv_capacity"] = _capacity(family, results, key, base, errors)
        signals = Signals(
            pods_expected=expected,
            pods_reporting=reporting,
            kv_usage_frac=values["kv_usage_frac"],
            num_requests_running=values["num_requests_running"],
            num_requests_waiting=values["num_requests_waiting"],
            preemptions_per_s=values["preemptions_per_s"],
            rejections_per_s=values["rejections_per_s"],
            ttft_p95_s=values["ttft_p95_s"],
            ttft_p95_recent_s=values["ttft_p95_recent_s"],
            itl_p95_s=values["itl_p95_s"],
            queue_time_p95_s=values["queue_time_p95_s"],
            prompt_tokens_per_s=values["prompt_tokens_per_s"],
            num_gpu_blocks=blocks,
            block_size_tokens=block_size,
        )
        error = errors[0] if errors else _coverage_note(present, fresh, expected)
        return SignalsReading(signals, quality, error)


def _capacity(
    family: FamilyQueries,
    results: _Results,
    key: DeploymentKey,
    base: Quality,
    errors: list[str],
) -> tuple[int | None, int | None, Quality]:
    """Live KV pool per pod: vLLM's info-gauge labels, else a token gauge (block size 1)."""
    if family.block_config is not None and family.blocks_label and family.block_size_label:
        error = results.error(family.block_config)
        if error is not None:
            errors.append(error)
            return None, None, Quality.MISSING
        config = results.block_config(
            family.block_config, family.blocks_label, family.block_size_label
        )
        if key in config:
            blocks, block_size = config[key]
            return blocks, block_size, _known_quality(base)
        if family.capacity_tokens is None:
            return None, None, Quality.MISSING
    if family.capacity_tokens is None:
        return None, None, Quality.UNSUPPORTED
    tokens, quality = _judge(results, family.capacity_tokens, key, base=base, errors=errors)
    if tokens is None or tokens < 1:
        return None, None, quality if tokens is None else Quality.MISSING
    return int(tokens), 1, quality


def _queries_of(family: FamilyQueries) -> list[str]:
    candidates = [
        *family.signals.values(),
        family.present,
        family.fresh,
        family.block_config,
        family.capacity_tokens,
    ]
    return [query for query in candidates if query is not None]


def _count(results: _Results, query: str | None, key: DeploymentKey) -> int:
    if query is None:
        return 0
    value = results.values(query).get(key)
    return 0 if value is None or math.isnan(value) else int(value)


def _base_quality(present: int, fresh: int, expected: int) -> Quality:
    """What coverage says about every signal of the deployment."""
    if present == 0:
        return Quality.MISSING
    if fresh == 0:
        return Quality.STALE
    if fresh < expected:
        return Quality.PARTIAL
    return Quality.OK


def _known_quality(base: Quality) -> Quality:
    return Quality.PARTIAL if base is Quality.PARTIAL else Quality.OK


def _judge(
    results: _Results,
    query: str | None,
    key: DeploymentKey,
    *,
    base: Quality,
    errors: list[str],
) -> tuple[float | None, Quality]:
    """One signal's value and quality. Unknown is None, never 0."""
    if query is None:
        return None, Quality.UNSUPPORTED
    if base in (Quality.MISSING, Quality.STALE):
        return None, base
    error = results.error(query)
    if error is not None:
        errors.append(error)
        return None, Quality.MISSING
    value = results.values(query).get(key)
    if value is None:
        return None, Quality.MISSING
    if math.isnan(value):
        return None, Quality.NAN
    return value, _known_quality(base)


def _coverage_note(present: int, fresh: int, expected: int) -> str | None:
    if present == 0:
        return "no series for this deployment"
    if fresh == 0:
        return f"{present} series, none with a sample newer than the staleness limit"
    if fresh < expected:
        return f"{fresh} of {expected} pods reporting"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
