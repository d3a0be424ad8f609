"""The operator's own Prometheus metrics (served on /metrics by `kvscale run`).

A private `CollectorRegistry` per operator instance, so tests can start several operators in
one process without duplicate-registration errors.

Per-deployment series carry `llmdeployment_namespace`, not `namespace`: a scrape of the operator
pod attaches the target's own `namespace` (the operator's), and Prometheus would rename a
clashing series label to `exported_namespace` (honor_labels is off in standard scrape configs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# The labels that name one LLMDeployment on every per-deployment series of the operator.
DEPLOYMENT_LABELS = ("llmdeployment_namespace", "llmdeployment")


@dataclass
class OperatorMetrics:
    """Reconcile counts, failures, durations and the replicas each deployment is set to."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "kvscale_reconcile_total",
            "Reconciles of LLMDeployments, by trigger and result.",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "kvscale_reconcile_errors_total",
            "Reconciles that failed on the API server, by error kind.",
            ["kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kvscale_reconcile_duration_seconds",
            "Wall time of one reconcile, seconds.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.leader = Gauge(
            "kvscale_leader",
            "1 while this replica holds the leader Lease and acts; 0 while it stands by.",
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "kvscale_desired_replicas",
            "Replicas kvscale last applied to each LLMDeployment's workload.",
            DEPLOYMENT_LABELS,
            registry=self.registry,
        )
        self.invalid_specs = Gauge(
            "kvscale_invalid_spec",
            "1 while an LLMDeployment's spec is invalid (the last good workload keeps running).",
            DEPLOYMENT_LABELS,
            registry=self.registry,
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-deployment series of a deleted LLMDeployment."""
        for gauge in (self.desired_replicas, self.invalid_specs):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                continue

    def serve(self, port: int) -> None:
        """Serve /metrics on `port` in a background thread (0 disables)."""
        if port > 0:
            start_http_server(port, registry=self.registry)
