"""Operator settings: small grouped frozen dataclasses read from `KVSCALE_*` environment variables.

Every field says its unit, default and why. `load_settings(environ)` is pure (it takes the
mapping), so tests build settings without touching the process environment. The kopf-specific
knobs (posting level, watch timeouts) are applied by `apply_to_kopf`, the only place
that translates our settings into kopf's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kvscale.api.vocabulary import API_GROUP


class SettingsError(ValueError):
    """A `KVSCALE_*` variable has a value the operator cannot use (names the variable)."""


class ScrapeMode(StrEnum):
    """How the engine pods are made visible to Prometheus."""

    AUTO = "auto"  # PodMonitor when the Prometheus Operator CRD is served, else annotations
    POD_MONITOR = "podmonitor"  # always a PodMonitor (fails loudly if the CRD is absent)
    ANNOTATIONS = "annotations"  # prometheus.io/* pod annotations only


class ApplyMode(StrEnum):
    """How the operator writes the objects it owns."""

    SERVER_SIDE = "server-side"  # server-side apply with field manager `kvscale` (production)
    CLIENT_SIDE = "client-side"  # get, then create or merge-patch (API servers without SSA)


@dataclass(frozen=True)
class WatchSettings:
    """What the operator watches."""

    # Namespaces to watch; empty = all namespaces (cluster-wide mode). Comma-separated in
    # KVSCALE_NAMESPACES. Single-namespace installs set it so RBAC can stay namespaced.
    namespaces: tuple[str, ...] = ()
    # Seconds the API server may keep one watch open (KVSCALE_WATCH_SERVER_TIMEOUT_S, default
    # 600). Bounded so a silently dropped connection is noticed and the watch re-established.
    server_timeout_s: float = 600.0
    # Seconds the client waits on a watch before giving up (KVSCALE_WATCH_CLIENT_TIMEOUT_S,
    # default 660: a little above the server's so the server closes first in the normal case).
    client_timeout_s: float = 660.0


@dataclass(frozen=True)
class ReconcileSettings:
    """How often and how patiently the operator converges the workload."""

    # Seconds between level-based reconciles of each LLMDeployment (KVSCALE_RECONCILE_INTERVAL_S,
    # default 30). Drift (someone edits the Deployment) is repaired within this bound.
    interval_s: float = 30.0
    # Seconds between autoscaling decisions (KVSCALE_SCALING_INTERVAL_S, default 15): about one
    # Prometheus scrape interval, so every decision sees a fresh sample.
    scaling_interval_s: float = 15.0
    # Seconds before retrying after a transient API error (KVSCALE_RETRY_DELAY_S, default 10).
    retry_delay_s: float = 10.0
    # How objects are written (KVSCALE_APPLY_MODE, default server-side). Client-side exists for
    # API servers (and fakes) without server-side apply; see docs/adr/0004.
    apply_mode: ApplyMode = ApplyMode.SERVER_SIDE
    # Field manager name for server-side apply; GitOps tools see this owner on kvscale's fields.
    field_manager: str = "kvscale"
    # Engine container image when the LLMDeployment gives none (KVSCALE_DEFAULT_ENGINE_IMAGE).
    default_engine_image: str = ""


@dataclass(frozen=True)
class PrometheusSettings:
    """Where the serving metrics come from and how they are scraped."""

    # Base URL of the Prometheus HTTP API (KVSCALE_PROMETHEUS_URL). Empty: autoscaling is off and
    # the operator only plans and runs workloads.
    url: str = ""
    # Seconds one Prometheus (or other HTTP) call may take (KVSCALE_HTTP_TIMEOUT_S, default 10):
    # a slow query must not stall the reconcile loop of every deployment.
    http_timeout_s: float = 10.0
    # File with a bearer token for Prometheus (KVSCALE_PROMETHEUS_BEARER_TOKEN_FILE); re-read
    # on each use so projected, rotating tokens keep working.
    bearer_token_file: str = ""
    # CA bundle for a TLS Prometheus (KVSCALE_PROMETHEUS_CA_FILE); empty = system trust store.
    ca_file: str = ""
    # Scrape wiring (KVSCALE_SCRAPE_MODE: auto | podmonitor | annotations; default auto).
    scrape_mode: ScrapeMode = ScrapeMode.AUTO


@dataclass(frozen=True)
class ServerSettings:
    """The operator's own HTTP endpoints."""

    # Port of the operator's /metrics (KVSCALE_METRICS_PORT, default 8080; 0 disables).
    metrics_port: int = 8080
    # Port of /healthz (liveness) and /readyz (readiness, with the replica's election role)
    # (KVSCALE_HEALTH_PORT, default 8081; 0 disables).
    health_port: int = 8081


@dataclass(frozen=True)
class LeaderElectionSettings:
    """Leader election on a coordination.k8s.io/v1 Lease: several replicas, exactly one acts.

    The timings are client-go's defaults (kube-controller-manager's `--leader-elect-*` flags)
    and must satisfy lease_duration_s > renew_deadline_s > retry_period_s: a leader that could
    not renew for `renew_deadline_s` stops acting before any standby may take the lease, which
    it does only `lease_duration_s` after it last saw the lease change. docs/adr/0007.
    """

    # Elect a leader (KVSCALE_LEADER_ELECTION, default true). Off (`kvscale run --standalone`)
    # only for a single replica or local runs: two unelected replicas would both scale.
    enabled: bool = True
    # Lease object name (KVSCALE_LEASE_NAME, default "kvscale"); replicas sharing it elect one.
    lease_name: str = "kvscale"
    # Namespace of the Lease (KVSCALE_LEASE_NAMESPACE; default the pod's POD_NAMESPACE, else
    # "default"). The chart sets it to the release namespace.
    lease_namespace: str = "default"
    # This replica's holderIdentity (POD_NAME, set by the chart from metadata.name; else the
    # host name plus a random suffix, as client-go does).
    identity: str = ""
    # Seconds a standby waits after it last saw the lease renewed before taking it
    # (KVSCALE_LEASE_DURATION_S, default 15): the failover time after a leader dies.
    lease_duration_s: float = 15.0
    # Seconds the leader keeps acting without a successful renew (KVSCALE_RENEW_DEADLINE_S,
    # default 10); then it stops every handler and exits.
    renew_deadline_s: float = 10.0
    # Seconds between tries to acquire or renew (KVSCALE_RETRY_PERIOD_S, default 2).
    retry_period_s: float = 2.0


@dataclass(frozen=True)
class CalibrationSettings:
    """Where the cluster-wide KV calibration record lives (docs/adr/0013)."""

    # Namespace of the record (KVSCALE_CALIBRATION_NAMESPACE, default "kvscale-system"): the
    # operator's own, so one namespaced Role grants it and no tenant namespace holds it.
    namespace: str = "kvscale-system"
    # ConfigMap name (KVSCALE_CALIBRATION_CONFIGMAP, default "kvscale-calibration").
    configmap: str = "kvscale-calibration"
    # Seconds a read of the record is reused by the reconciles (KVSCALE_CALIBRATION_REFRESH_S,
    # default 30): one GET per interval however many LLMDeployments plan from it.
    refresh_s: float = 30.0


@dataclass(frozen=True)
class Settings:
    """All operator settings, grouped."""

    watch: WatchSettings = field(default_factory=WatchSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    # kopf posts k8s Events for its own log records at or above this level (KVSCALE_EVENT_LEVEL,
    # default WARNING): handler chatter stays in logs, problems reach `kubectl describe`.
    event_level: int = logging.WARNING


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {raw!r} is not a number of seconds; fix: e.g. 30") from exc
    if value < minimum:
        raise SettingsError(f"{name}: {value} is below {minimum}; fix: use a value >= {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {raw!r} is not an integer; fix: e.g. {default}") from exc
    if value < 0:
        raise SettingsError(f"{name}: {value} is negative; fix: use 0 to disable")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}: {raw!r} is not a boolean; fix: true or false")


def _enum(env: Mapping[str, str], name: str, kind: type[Any], default: Any) -> Any:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in kind)
        raise SettingsError(f"{name}: {raw!r} is not one of {allowed}") from exc


def _level(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip().upper()
    if not raw:
        return default
    level = logging.getLevelName(raw)
    if not isinstance(level, int):
        raise SettingsError(f"{name}: {raw!r} is not a log level; fix: INFO, WARNING or ERROR")
    return level


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping (defaults for absent or empty variables)."""
    namespaces = tuple(n.strip() for n in env.get("KVSCALE_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        watch=WatchSettings(
            namespaces=namespaces,
            server_timeout_s=_float(env, "KVSCALE_WATCH_SERVER_TIMEOUT_S", 600.0, 1.0),
            client_timeout_s=_float(env, "KVSCALE_WATCH_CLIENT_TIMEOUT_S", 660.0, 1.0),
        ),
        reconcile=ReconcileSettings(
            interval_s=_float(env, "KVSCALE_RECONCILE_INTERVAL_S", 30.0, 0.1),
            scaling_interval_s=_float(env, "KVSCALE_SCALING_INTERVAL_S", 15.0, 0.1),
            retry_delay_s=_float(env, "KVSCALE_RETRY_DELAY_S", 10.0, 0.1),
            apply_mode=_enum(env, "KVSCALE_APPLY_MODE", ApplyMode, ApplyMode.SERVER_SIDE),
            default_engine_image=env.get("KVSCALE_DEFAULT_ENGINE_IMAGE", "").strip(),
        ),
        prometheus=PrometheusSettings(
            url=env.get("KVSCALE_PROMETHEUS_URL", "").strip(),
            http_timeout_s=_float(env, "KVSCALE_HTTP_TIMEOUT_S", 10.0, 0.1),
            bearer_token_file=env.get("KVSCALE_PROMETHEUS_BEARER_TOKEN_FILE", "").strip(),
            ca_file=env.get("KVSCALE_PROMETHEUS_CA_FILE", "").strip(),
            scrape_mode=_enum(env, "KVSCALE_SCRAPE_MODE", ScrapeMode, ScrapeMode.AUTO),
        ),
        server=ServerSettings(
            metrics_port=_int(env, "KVSCALE_METRICS_PORT", 8080),
            health_port=_int(env, "KVSCALE_HEALTH_PORT", 8081),
        ),
        leader_election=load_leader_election(env, namespaces),
        calibration=CalibrationSettings(
            namespace=env.get("KVSCALE_CALIBRATION_NAMESPACE", "").strip() or "kvscale-system",
            configmap=env.get("KVSCALE_CALIBRATION_CONFIGMAP", "").strip() or "kvscale-calibration",
            refresh_s=_float(env, "KVSCALE_CALIBRATION_REFRESH_S", 30.0, 0.0),
        ),
        event_level=_level(env, "KVSCALE_EVENT_LEVEL", logging.WARNING),
    )


def load_leader_election(
    env: Mapping[str, str], namespaces: tuple[str, ...] = ()
) -> LeaderElectionSettings:
    """The election settings; refuses timings that would let two leaders overlap."""
    settings = LeaderElectionSettings(
        enabled=_bool(env, "KVSCALE_LEADER_ELECTION", True),
        lease_name=env.get("KVSCALE_LEASE_NAME", "").strip() or "kvscale",
        lease_namespace=(
            env.get("KVSCALE_LEASE_NAMESPACE", "").strip()
            or env.get("POD_NAMESPACE", "").strip()
            or "default"
        ),
        identity=env.get("POD_NAME", "").strip(),
        lease_duration_s=_float(env, "KVSCALE_LEASE_DURATION_S", 15.0, 1.0),
        renew_deadline_s=_float(env, "KVSCALE_RENEW_DEADLINE_S", 10.0, 0.5),
        retry_period_s=_float(env, "KVSCALE_RETRY_PERIOD_S", 2.0, 0.1),
    )
    if settings.lease_duration_s <= settings.renew_deadline_s:
        raise SettingsError(
            "KVSCALE_LEASE_DURATION_S must exceed KVSCALE_RENEW_DEADLINE_S "
            f"({settings.lease_duration_s} <= {settings.renew_deadline_s}); fix: e.g. 15 and 10"
        )
    if settings.renew_deadline_s <= settings.retry_period_s:
        raise SettingsError(
            "KVSCALE_RENEW_DEADLINE_S must exceed KVSCALE_RETRY_PERIOD_S "
            f"({settings.renew_deadline_s} <= {settings.retry_period_s}); fix: e.g. 10 and 2"
        )
    return settings


def apply_to_kopf(settings: Settings, kopf_settings: Any) -> None:
    """Copy our settings onto a `kopf.OperatorSettings` (called from the startup handler).

    Progress and diff-base are stored in `kvscale.dev/*` annotations, not in `status`, so the
    CRD's structural status schema never has to admit kopf's private fields.
    """
    import kopf

    kopf_settings.posting.level = settings.event_level
    kopf_settings.posting.reporting_component = "kvscale"
    # The API server parses ?timeoutSeconds= as an integer and answers 400 to "600.0", which
    # kills every watch: kopf sends whatever it is given, so round here.
    kopf_settings.watching.server_timeout = max(1, round(settings.watch.server_timeout_s))
    kopf_settings.watching.client_timeout = settings.watch.client_timeout_s
    # Leader election is ours (a Lease, kvscale.controller.leader); kopf's peering is off.
    kopf_settings.peering.standalone = True
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-applied-spec"
    )
    kopf_settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # A timer caught mid-reconcile at shutdown gets this long to finish instead of being orphaned.
    kopf_settings.background.instant_exit_timeout = 2.0
    kopf_settings.networking.request_timeout = max(60.0, settings.watch.client_timeout_s)
