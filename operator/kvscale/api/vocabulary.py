"""The words of the API, declared once: the CRD's identity, the condition types and the reasons
of the conditions and Events the operator writes.

Everything that names the resource (kopf handlers, the API client, ownerReferences, the CRD
generator, `kvscale validate`) and every condition or Event reason imports it from here. The
autoscaler's and the rollback core's decision reasons live with that core
(`kvscale.scaling.reasons`), which must not import the API layer.
"""

from __future__ import annotations

from typing import Final

API_GROUP: Final = "kvscale.dev"
API_VERSION: Final = "v1alpha1"
API_VERSION_FULL: Final = f"{API_GROUP}/{API_VERSION}"
KIND: Final = "LLMDeployment"
PLURAL: Final = "llmdeployments"
SINGULAR: Final = "llmdeployment"
SHORT_NAMES: Final = ("llmd",)


class ConditionType:
    """Condition types kvscale sets (`Ready` summarises the component ones)."""

    READY = "Ready"
    PLANNED = "Planned"  # the spec is valid and a plan for a GPU type was computed
    CAPACITY_SUFFICIENT = "CapacitySufficient"  # a GPU type holds a max-length request
    WORKLOAD_READY = "WorkloadReady"  # the Deployment exists and its replicas are available
    PLAN_WARNINGS = "PlanWarnings"  # True while the planner warns (status.warnings says what)
    ADOPTED = "Adopted"
    METRICS_AVAILABLE = "MetricsAvailable"  # the last read produced usable signals
    SCALING_ACTIVE = "ScalingActive"  # the autoscaler acts (auto) / recommends
    ROLLED_BACK = "RolledBack"
    KV_CALIBRATED = "KvCalibrated"  # the engines' live KV pool matches the plan


class Reason:
    """Reasons of the reconcile's conditions and Events (CamelCase; they go straight into
    status)."""

    PLAN_COMPUTED = "PlanComputed"
    PLAN_CHANGED = "PlanChanged"
    INVALID_SPEC = "InvalidSpec"
    PLANNING_FAILED = "PlanningFailed"
    PLANNER_WARNINGS = "PlannerWarnings"
    NO_WARNINGS = "NoWarnings"
    KV_CACHE_FITS = "KvCacheFits"
    NO_GPU_FITS = "NoGpuTypeFits"
    NOT_PLANNED = "NotPlanned"
    APPLY_FAILED = "ApplyFailed"
    ROLLING_OUT = "RollingOut"
    AVAILABLE = "ReplicasAvailable"
    ADOPTED = "Adopted"
    ADOPT_TARGET_MISSING = "AdoptTargetMissing"
    ALL_READY = "AllConditionsTrue"
    PENDING = "Pending"
    ROLLOUT_STARTED = "RolloutStarted"  # Event: a new revision is baking


class MetricsReason:
    """Reasons of the MetricsAvailable condition."""

    OK = "SignalsRead"
    PARTIAL = "SignalsPartial"
    NO_SAMPLES = "NoUsableSamples"
    READ_FAILED = "ReadFailed"
    AWAITING = "AwaitingFirstRead"
    NOT_CONFIGURED = "PrometheusNotConfigured"


class ScalingReason:
    """Reasons of the ScalingActive condition."""

    ACTING = "Acting"
    RECOMMENDING = "RecommendOnly"
    HOLDING = "HoldingOnMissingData"


class CalibrationReason:
    """Reasons of the KvCalibrated condition and its Events."""

    LIVE_POOL_MATCHES_PLAN = "LivePoolMatchesPlan"  # within spec.kvCache.calibrationTolerance
    KV_DRIFT = "KvDrift"  # past the tolerance (condition and Event)
