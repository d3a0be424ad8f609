"""kvscale.metrics: read serving signals for many LLMDeployments as domain types.

`MetricsSource.fetch(targets) -> {DeploymentKey: SignalsReading}` is the contract; the
Prometheus implementation batches one query per signal per engine metric family.
"""

from kvscale.metrics.prometheus import PrometheusSource
from kvscale.metrics.source import (
    SIGNAL_NAMES,
    DeploymentKey,
    DeploymentTarget,
    MetricsSource,
    Quality,
    SignalsReading,
)

__all__ = [
    "SIGNAL_NAMES",
    "DeploymentKey",
    "DeploymentTarget",
    "MetricsSource",
    "PrometheusSource",
    "Quality",
    "SignalsReading",
]
