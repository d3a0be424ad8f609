"""Run the kvscale operator in-process: kopf settings, registry, login, peering and endpoints.

`kvscale run` and the integration tests both start the operator through `run_operator`, so the
tests exercise the same wiring a cluster install runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kvscale.controller.autoscaler import register as register_autoscaler
from kvscale.controller.handlers import register_handlers
from kvscale.controller.kube import KubeClient, connect
from kvscale.controller.reconcile import Controller
from kvscale.controller.settings import Settings, apply_to_kopf
from kvscale.controller.telemetry import OperatorMetrics


def build_kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings from ours (posting level, watch timeouts, peering, annotation storage)."""
    kopf_settings = kopf.OperatorSettings()
    apply_to_kopf(settings, kopf_settings)
    return kopf_settings


def build_registry(ctl: Controller, server_url: str | None = None) -> kopf.OperatorRegistry:
    """kopf's default registry (with its kubeconfig / in-cluster logins) or, for a test API
    server at `server_url`, a fresh registry that logs in there."""
    if server_url is None:
        registry = kopf.get_default_registry()
    else:
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login_to_test_server(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server_url, insecure=True)

    register_handlers(registry, ctl)
    return registry


def connect_kube(settings: Settings, server_url: str | None = None) -> KubeClient:
    """The operator's API client; `ClusterConfigError` when there is no cluster to talk to."""
    return connect(
        server_url=server_url,
        apply_mode=settings.reconcile.apply_mode,
        request_timeout_s=settings.prometheus.http_timeout_s * 3,
    )


async def run_operator(
    settings: Settings,
    *,
    server_url: str | None = None,
    kube: KubeClient | None = None,
    metrics: OperatorMetrics | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run until `stop_flag` is set (or the process is signalled)."""
    if kube is None:
        kube = connect_kube(settings, server_url)
    ctl = Controller(settings=settings, kube=kube, metrics=metrics or OperatorMetrics())
    registry = build_registry(ctl, server_url)
    # Autoscaling and rollback guardrails: registers nothing without KVSCALE_PROMETHEUS_URL.
    register_autoscaler(registry, settings, controller=ctl)
    namespaces = list(settings.watch.namespaces)
    health = settings.server.health_port
    await kopf.operator(
        registry=registry,
        settings=build_kopf_settings(settings),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=settings.peering.standalone,
        peering_name=None if settings.peering.standalone else settings.peering.name,
        liveness_endpoint=f"http://0.0.0.0:{health}/healthz" if health else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
