"""`Workload`: everything the object builders need, as one frozen value.

The builders never read the LLMDeployment body or the planner's result directly; the handler
derives a `Workload` once (in `kvscale.controller.desired`) and the builders turn it into
Deployment / Service / PodDisruptionBudget / PodMonitor dicts. That keeps the builders pure and
testable with a literal, and keeps the planner's shape out of the Kubernetes object code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kvscale.api.owned import (  # re-exported: the controller's names for them
    ANNOTATION_PLAN_HASH,
    ANNOTATION_SPEC_HASH,
    ENGINE_CONTAINER,
    GPU_RESOURCE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_LLMD,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PORT_NAME,
)
from kvscale.api.podtemplate import DEFAULT_STARTUP_TIMEOUT_S
from kvscale.api.vocabulary import API_VERSION_FULL, KIND
from kvscale.controller.enginepod import PRE_STOP_SLEEP_S, PodSettings

__all__ = [
    "ANNOTATION_PLAN_HASH",
    "ANNOTATION_SPEC_HASH",
    "ENGINE_CONTAINER",
    "GPU_RESOURCE",
    "LABEL_COMPONENT",
    "LABEL_DEPLOYMENT",
    "LABEL_INSTANCE",
    "LABEL_LLMD",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "MANAGED_BY",
    "OWNER_API_VERSION",
    "OWNER_KIND",
    "PORT_NAME",
    "Drain",
    "Owner",
    "Probes",
    "Workload",
    "stable_hash",
]

OWNER_API_VERSION = API_VERSION_FULL
OWNER_KIND = KIND


@dataclass(frozen=True)
class Owner:
    """The LLMDeployment that owns the generated objects (ownerReference target)."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Probes:
    """Probe timing (seconds). Startup is long: loading weights can take many minutes."""

    startup_timeout_s: int = DEFAULT_STARTUP_TIMEOUT_S  # spec.runtime.startupTimeoutSeconds
    startup_period_s: int = 10
    readiness_period_s: int = 5
    readiness_failures: int = 3
    liveness_period_s: int = 15
    liveness_failures: int = 4  # one minute of failed health checks restarts the engine


@dataclass(frozen=True)
class Drain:
    """Graceful termination: stop receiving traffic, let in-flight requests finish."""

    pre_stop_sleep_s: int = PRE_STOP_SLEEP_S  # endpoints controller removes the pod meanwhile
    grace_period_s: int = 120  # SIGTERM → SIGKILL; from the workload's p95 request (enginepod)


@dataclass(frozen=True)
class Workload:
    """The desired serving workload of one LLMDeployment (managed mode)."""

    owner: Owner
    engine: str
    engine_version: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    port: int
    health_path: str
    metrics_path: str
    gpus_per_replica: int
    gpu_label_key: str
    gpu_label_values: tuple[str, ...]
    replicas: int
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[tuple[str, Any], ...], ...] = ()  # each a sorted item tuple
    spec_hash: str = ""
    probes: Probes = field(default_factory=Probes)
    drain: Drain = field(default_factory=Drain)
    pod: PodSettings = field(default_factory=PodSettings)

    @property
    def name(self) -> str:
        return self.owner.name

    @property
    def namespace(self) -> str:
        return self.owner.namespace

    @property
    def plan_hash(self) -> str:
        """Hash of what the pods run: a change here is a rollout, and an Event."""
        return stable_hash(
            {
                "image": self.image,
                "command": list(self.command),
                "args": list(self.args),
                "gpus": self.gpus_per_replica,
                "gpuLabel": [self.gpu_label_key, *self.gpu_label_values],
            }
        )


def stable_hash(value: Any) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of `value`."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
