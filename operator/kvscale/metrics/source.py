"""The metrics-source contract: what the operator asks for and what it gets back.

One protocol for every backend (KEDA's habit): `fetch(targets)` returns domain `Signals` per
deployment plus a quality flag per signal. Failures are data, never exceptions: an unreachable
Prometheus yields readings with `signals=None` and an error string, which the policy turns
into a hold (and, after N reads, the declared fallback), never into a scale-down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from kvscale.scaling.signals import SIGNAL_NAMES
from kvscale.scaling.types import Signals

__all__ = ["SIGNAL_NAMES"]  # the quality keys, derived from the signal table


class Quality(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no series for the deployment, or the query failed
    NAN = "nan"  # NaN/Inf (e.g. a latency quantile with no requests in the window)
    STALE = "stale"  # series present but no pod has a fresh sample
    PARTIAL = "partial"  # value from k of n expected pods
    UNSUPPORTED = "unsupported"  # this engine release has no such metric


@dataclass(frozen=True)
class DeploymentKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DeploymentTarget:
    """One LLMDeployment to read: its engine release picks the metric names."""

    namespace: str
    name: str
    engine: str  # "vllm", "sglang", "tgi", "trtllm"
    engine_version: str
    pods_expected: int  # Running engine pods that should report

    @property
    def key(self) -> DeploymentKey:
        return DeploymentKey(self.namespace, self.name)


@dataclass(frozen=True)
class SignalsReading:
    """Signals of one deployment with how much to trust each of them."""

    signals: Signals | None  # None: the read failed entirely (pass as Observation.signals)
    quality: Mapping[str, Quality] = field(default_factory=dict)  # keyed by SIGNAL_NAMES
    error: str | None = None  # what went wrong, for the status condition message

    def quality_of(self, signal: str) -> Quality:
        return self.quality.get(signal, Quality.MISSING)

    def describe(self) -> str:
        """'kv_usage_frac=ok, ttft_p95_s=nan, …' for condition messages."""
        return ", ".join(f"{name}={self.quality_of(name)}" for name in SIGNAL_NAMES)


class MetricsSource(Protocol):
    """Anything that can read serving signals for many deployments in one cycle."""

    def fetch(self, targets: Sequence[DeploymentTarget]) -> dict[DeploymentKey, SignalsReading]:
        """One reading per target key; never raises for backend failures."""
        ...
