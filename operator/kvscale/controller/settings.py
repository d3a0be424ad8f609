"""Operator settings: small grouped frozen dataclasses read from `KVSCALE_*` environment variables.

Every field says its unit, default and why. `load_settings(environ)` is pure (it takes the
mapping), so tests build settings without touching the process environment. The kopf-specific
knobs (peering, posting level, watch timeouts) are applied by `apply_to_kopf`, the only place
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
    # Port of kopf's liveness endpoint /healthz (KVSCALE_HEALTH_PORT, default 8081; 0 disables).
    health_port: int = 8081


@dataclass(frozen=True)
class PeeringSettings:
    """kopf peering: several operator replicas, one active (HA)."""

    # Peering object name (KVSCALE_PEERING_NAME, default "kvscale"); replicas with the same name
    # elect one active instance, the others wait paused.
    name: str = "kvscale"
    # Run without peering (KVSCALE_STANDALONE=true): only for a single replica or for tests.
    standalone: bool = False
    # Seconds a peer's keep-alive is valid (KVSCALE_PEERING_LIFETIME_S, default 60): a crashed
    # leader is replaced after at most this long.
    lifetime_s: int = 60


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
    peering: PeeringSettings = field(default_factory=PeeringSettings)
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
        peering=PeeringSettings(
            name=env.get("KVSCALE_PEERING_NAME", "").strip() or "kvscale",
            standalone=_bool(env, "KVSCALE_STANDALONE", False),
            lifetime_s=_int(env, "KVSCALE_PEERING_LIFETIME_S", 60),
        ),
        calibration=CalibrationSettings(
            namespace=env.get("KVSCALE_CALIBRATION_NAMESPACE", "").strip() or "kvscale-system",
            configmap=env.get("KVSCALE_CALIBRATION_CONFIGMAP", "").strip() or "kvscale-calibration",
            refresh_s=_float(env, "KVSCALE_CALIBRATION_REFRESH_S", 30.0, 0.0),
        ),
        event_level=_level(env, "KVSCALE_EVENT_LEVEL", logging.WARNING),
    )


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
    kopf_settings.peering.name = settings.peering.name
    kopf_settings.peering.lifetime = settings.peering.lifetime_s
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-applied-spec"
    )
    kopf_settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # A timer caught mid-reconcile at shutdown gets this long to finish instead of being orphaned.
    kopf_settings.background.instant_exit_timeout = 2.0
    kopf_settings.networking.request_timeout = max(60.0, settings.watch.client_timeout_s)
