"""The autoscaler's series on the operator's /metrics (same registry as `OperatorMetrics`).

They expose kvscale's recommendation so a user can point an HPA (through an external-metrics
adapter) or KEDA's Prometheus scaler at it instead of letting kvscale act, and they feed the
chart's PrometheusRule (plan drift, rollbacks, metrics outages).

Labels `llmdeployment_namespace`/`llmdeployment` (telemetry.DEPLOYMENT_LABELS, not
`namespace`/`name`): a scrape of the operator adds its own `namespace`, and `name` is too
generic to join on in PromQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from kvscale.controller.telemetry import DEPLOYMENT_LABELS
from kvscale.metrics.source import SIGNAL_NAMES, Quality, SignalsReading
from kvscale.scaling.types import Decision, ReplicaCounts

_KEY = DEPLOYMENT_LABELS


@dataclass
class AutoscalerMetrics:
    """Per-LLMDeployment decision series plus the signal cache's own health."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        reg = self.registry
        self.recommended = Gauge(
            "kvscale_recommended_replicas",
            "Replicas the last autoscaling decision asks for (also in recommend mode).",
            _KEY,
            registry=reg,
        )
        self.current = Gauge(
            "kvscale_current_replicas",
            "Replicas of the workload when the last decision was made (spec.replicas).",
            _KEY,
            registry=reg,
        )
        self.decisions = Counter(
            "kvscale_decision",
            "Autoscaling decisions, by reason constant.",
            [*_KEY, "reason"],
            registry=reg,
        )
        self.kv_usage = Gauge(
            "kvscale_kv_usage_ratio",
            "Mean KV-cache usage 0..1 the last decision saw (absent when unknown).",
            _KEY,
            registry=reg,
        )
        self.quality = Gauge(
            "kvscale_metrics_quality",
            "1 for the quality of each signal at the last read (ok, partial, stale, …).",
            [*_KEY, "signal", "quality"],
            registry=reg,
        )
        self.available = Gauge(
            "kvscale_metrics_available",
            "1 when the last read gave the policy usable signals, else 0.",
            _KEY,
            registry=reg,
        )
        self.planned_blocks = Gauge(
            "kvscale_planned_kv_blocks",
            "KV blocks per replica in the capacity plan (compare with the engine's live pool).",
            _KEY,
            registry=reg,
        )
        self.planned_tokens = Gauge(
            "kvscale_planned_kv_tokens",
            "KV-cache tokens per replica in the capacity plan.",
            _KEY,
            registry=reg,
        )
        self.live_tokens = Gauge(
            "kvscale_live_kv_tokens",
            "KV-cache tokens per replica the engines report (smallest pod; blocks x block size).",
            _KEY,
            registry=reg,
        )
        self.rollbacks = Counter(
            "kvscale_rollbacks",
            "Rollbacks of a flag/capacity change to the last-known-good pod template.",
            [*_KEY, "reason"],
            registry=reg,
        )
        self.queries = Gauge(
            "kvscale_signals_queries_per_cycle",
            "PromQL queries the last signal cycle sent (constant in the number of deployments).",
            registry=reg,
        )
        self.cycle_seconds = Gauge(
            "kvscale_signals_cycle_seconds",
            "Wall time of the last batched signal read, seconds.",
            registry=reg,
        )
        self.tracked = Gauge(
            "kvscale_signals_tracked_deployments",
            "LLMDeployments the signal cache reads each cycle.",
            registry=reg,
        )

    def record_decision(
        self,
        namespace: str,
        name: str,
        decision: Decision,
        counts: ReplicaCounts,
        reading: SignalsReading | None,
    ) -> None:
        self.recommended.labels(namespace, name).set(decision.replicas)
        self.current.labels(namespace, name).set(counts.desired)
        self.decisions.labels(namespace, name, decision.reason).inc()
        self.record_reading(namespace, name, reading)

    def record_reading(self, namespace: str, name: str, reading: SignalsReading | None) -> None:
        signals = None if reading is None else reading.signals
        usable = signals is not None and signals.pods_reporting > 0
        self.available.labels(namespace, name).set(1 if usable else 0)
        if signals is not None and signals.kv_usage_frac is not None:
            self.kv_usage.labels(namespace, name).set(signals.kv_usage_frac)
        else:
            _drop(self.kv_usage, namespace, name)
        if signals is not None and signals.num_gpu_blocks and signals.block_size_tokens:
            live_tokens = signals.num_gpu_blocks * signals.block_size_tokens
            self.live_tokens.labels(namespace, name).set(live_tokens)
        else:
            _drop(self.live_tokens, namespace, name)
        for signal in SIGNAL_NAMES:
            now = Quality.MISSING if reading is None else reading.quality_of(signal)
            for quality in Quality:
                value = 1.0 if quality is now else 0.0
                self.quality.labels(namespace, name, signal, str(quality)).set(value)

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted LLMDeployment."""
        for gauge in (
            self.recommended,
            self.current,
            self.kv_usage,
            self.available,
            self.planned_blocks,
            self.planned_tokens,
            self.live_tokens,
        ):
            _drop(gauge, namespace, name)
        for signal in SIGNAL_NAMES:
            for quality in Quality:
                _drop(self.quality, namespace, name, signal, str(quality))


def _drop(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        return
