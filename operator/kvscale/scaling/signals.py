"""The signal table: every serving signal declared once, the rest derived from it.

One row per `Signals` attribute says how the signal is shown in status
(`status.autoscaler.signals.<status_key>`, with its description), which engine query the
Prometheus adapter reads it with (a `kvscale.engines.DeploymentQueries` attribute), under which
name its quality is reported (`metricsQuality`), and whether a known value makes a reading
usable for the policy. From it come:

* `SignalsStatus` (`kvscale.api.status`) — the status model, hence the CRD's schema;
* `SIGNAL_NAMES` (`kvscale.metrics.source`) — the quality keys, in this order;
* the Prometheus adapter's query map (`kvscale.metrics.prometheus`);
* `status.autoscaler.signals` (`kvscale.controller.autoscaler_status.signals_status`);
* `is_usable` (the policy's "is there anything to decide on").

Adding a signal: a `Signals` field (`kvscale.scaling.types`), a row here, and its query in
`kvscale.engines.promql` (`DeploymentQueries` and the builder); then `make generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.scaling.types import Signals


@dataclass(frozen=True)
class SignalField:
    """How one `Signals` attribute travels from the engine to status and to the policy."""

    attribute: str  # the Signals attribute
    status_key: str  # its key in status.autoscaler.signals (camelCase)
    description: str  # of the status field, with the unit
    integer: bool = False  # an integer count (else a float)
    query: str | None = None  # DeploymentQueries attribute it is read with (None: not queried
    #                           alone, e.g. the pod counts, or the pool assembled from two series)
    quality: str | None = None  # its name in metricsQuality (None: a count, always known)
    pressure: bool = False  # a known value makes a reading usable for the policy


SIGNAL_FIELDS: tuple[SignalField, ...] = (
    SignalField("pods_expected", "podsExpected", "Pods that should report.", integer=True),
    SignalField("pods_reporting", "podsReporting", "Pods with a fresh sample.", integer=True),
    SignalField(
        "kv_usage_frac",
        "kvUsage",
        "Mean KV-cache usage, fraction 0-1.",
        query="kv_usage",
        quality="kv_usage_frac",
        pressure=True,
    ),
    SignalField(
        "num_requests_running",
        "requestsRunning",
        "Requests being served, all pods.",
        query="requests_running",
        quality="num_requests_running",
    ),
    SignalField(
        "num_requests_waiting",
        "requestsWaiting",
        "Requests queued, all pods.",
        query="requests_waiting",
        quality="num_requests_waiting",
        pressure=True,
    ),
    SignalField(
        "preemptions_per_s",
        "preemptionsPerSecond",
        "Preemptions per second, all pods.",
        query="preemption_rate",
        quality="preemptions_per_s",
        pressure=True,
    ),
    SignalField(
        "rejections_per_s",
        "rejectionsPerSecond",
        "Requests refused or aborted per second, all pods.",
        query="rejection_rate",
        quality="rejections_per_s",
        pressure=True,
    ),
    SignalField(
        "ttft_p95_s",
        "ttftP95Seconds",
        "TTFT p95 over the SLO's latency window, seconds.",
        query="ttft_quantile",
        quality="ttft_p95_s",
        pressure=True,
    ),
    SignalField(
        "ttft_p95_recent_s",
        "ttftP95RecentSeconds",
        "TTFT p95 over the last signal window (the scale-in guard), seconds.",
        query="ttft_quantile_recent",
        quality="ttft_p95_recent_s",
    ),
    SignalField(
        "itl_p95_s",
        "itlP95Seconds",
        "ITL p95 over the SLO's latency window, seconds.",
        query="itl_quantile",
        quality="itl_p95_s",
        pressure=True,
    ),
    SignalField(
        "queue_time_p95_s",
        "queueTimeP95Seconds",
        "Queue time p95, seconds.",
        query="queue_time_quantile",
        quality="queue_time_p95_s",
        pressure=True,
    ),
    SignalField(
        "prompt_tokens_per_s",
        "promptTokensPerSecond",
        "Prompt tokens prefilled per second, all pods.",
        query="prompt_token_rate",
        quality="prompt_tokens_per_s",
        pressure=True,
    ),
    SignalField(
        "num_gpu_blocks",
        "numGpuBlocks",
        "KV blocks per pod the engine reports.",
        integer=True,
        quality="kv_capacity",  # with block_size_tokens: one pool, one quality
    ),
    SignalField(
        "block_size_tokens",
        "blockSizeTokens",
        "Tokens per KV block the engine reports.",
        integer=True,
        quality="kv_capacity",
    ),
)

#: Quality keys of a reading, in table order (a pool read from two series is one key).
SIGNAL_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(f.quality for f in SIGNAL_FIELDS if f.quality is not None)
)


def is_usable(signals: Signals) -> bool:
    """A read is usable when some pod reported and the KV usage or a pressure signal is known."""
    if signals.pods_reporting <= 0:
        return False
    return any(getattr(signals, f.attribute) is not None for f in SIGNAL_FIELDS if f.pressure)
