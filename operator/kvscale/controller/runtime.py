"""Run the kvscale operator in-process: leader election, kopf settings, registry, login, probes.

`kvscale run` and the integration tests both start the operator through `run_operator`, so the
tests exercise the same wiring a cluster install runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import kopf

from kvscale.controller.autoscaler import register as register_autoscaler
from kvscale.controller.handlers import register_handlers
from kvscale.controller.health import ReadinessProbe, serving_probes
from kvscale.controller.kube import ApiClientKube, KubeClient, connect
from kvscale.controller.leader import (
    LeaderElector,
    LeaderGuardKube,
    LeaseStore,
    Role,
    default_identity,
)
from kvscale.controller.reconcile import Controller
from kvscale.controller.settings import Settings, apply_to_kopf
from kvscale.controller.telemetry import OperatorMetrics
from kvscale.metrics import MetricsSource

logger = logging.getLogger(__name__)
# A leader that loses its lease gives kopf this long to stop its handlers, then cancels them
# (the write fence already refuses their writes; ADR 0007).
KOPF_STOP_TIMEOUT_S = 3.0


def build_kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    """kopf's settings from ours (posting level, watch timeouts, annotation storage)."""
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


@dataclass(frozen=True)
class _Wiring:
    """What every kopf start of this process shares."""

    settings: Settings
    metrics: OperatorMetrics
    server_url: str | None
    ready_flag: asyncio.Event | None
    metrics_source: MetricsSource | None


class LeadershipLostError(RuntimeError):
    """The lease could not be renewed in time: this replica stopped acting (exit, restart)."""


async def run_operator(
    settings: Settings,
    *,
    server_url: str | None = None,
    kube: KubeClient | None = None,
    metrics: OperatorMetrics | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    metrics_source: MetricsSource | None = None,
) -> None:
    """Run until `stop_flag` is set (or the process is signalled).

    `metrics_source` replaces the Prometheus source built from the settings (tests).

    With leader election on, wait as a standby until this replica holds the Lease, then run
    kopf; raise `LeadershipLostError` (after stopping kopf) if the lease is lost.
    """
    if kube is None:
        kube = connect_kube(settings, server_url)
    metrics = metrics or OperatorMetrics()
    stop_flag = stop_flag or asyncio.Event()
    wiring = _Wiring(settings, metrics, server_url, ready_flag, metrics_source)
    election = settings.leader_election
    if not election.enabled:
        metrics.leader.set(1)
        readiness = _standalone_readiness
        async with serving_probes(settings.server.health_port, readiness):
            await _run_kopf(wiring, kube, stop_flag)
        return
    # Renews get their own worker thread (never queued behind reconciles) and a request timeout
    # well inside the renew deadline, so a hung request is retried before the deadline.
    request_timeout_s = min(election.renew_deadline_s / 2, 2 * election.retry_period_s)
    lease_kube = (
        kube.with_own_thread(request_timeout_s) if isinstance(kube, ApiClientKube) else kube
    )
    store = LeaseStore(lease_kube, election.lease_namespace, election.lease_name)
    elector = LeaderElector(store, election, default_identity(election), time.monotonic)
    async with serving_probes(settings.server.health_port, _election_readiness(elector)):
        _stop_on_signals(stop_flag)
        if not await _first_done(elector.acquire(), stop_flag):
            return  # stopped while standing by
        metrics.leader.set(1)
        try:
            await _lead(wiring, elector, kube, stop_flag)
        finally:
            metrics.leader.set(0)


async def _lead(
    wiring: _Wiring, elector: LeaderElector, kube: KubeClient, stop_flag: asyncio.Event
) -> None:
    """Run kopf while the lease is held; stop it first, then release or report the loss."""
    kopf_stop = asyncio.Event()
    fenced = LeaderGuardKube(kube, elector)
    operator = asyncio.create_task(_run_kopf(wiring, fenced, kopf_stop))
    holding = asyncio.ensure_future(elector.hold_in_thread())
    stopping = asyncio.create_task(stop_flag.wait())
    await asyncio.wait({operator, holding, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    elector.stopping.set()  # a clean stop ends the renew loop within one retry period
    kopf_stop.set()
    try:
        await asyncio.wait_for(operator, KOPF_STOP_TIMEOUT_S)
    except TimeoutError:
        logger.warning("kopf did not stop within %s s; cancelled", KOPF_STOP_TIMEOUT_S)
    if await holding:
        raise LeadershipLostError(f"lease {elector.store.name} lost; this replica stopped acting")
    await elector.release()


async def _run_kopf(wiring: _Wiring, kube: KubeClient, stop_flag: asyncio.Event) -> None:
    settings = wiring.settings
    ctl = Controller(settings=settings, kube=kube, metrics=wiring.metrics)
    registry = build_registry(ctl, wiring.server_url)
    # Autoscaling and rollback guardrails: registers nothing without KVSCALE_PROMETHEUS_URL.
    register_autoscaler(registry, settings, controller=ctl, source=wiring.metrics_source)
    namespaces = list(settings.watch.namespaces)
    await kopf.operator(
        registry=registry,
        settings=build_kopf_settings(settings),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # kopf peering pauses equal peers; our Lease elects (ADR 0007)
        stop_flag=stop_flag,
        ready_flag=wiring.ready_flag,
    )


def _standalone_readiness() -> tuple[bool, dict[str, Any]]:
    return True, {"role": Role.LEADER.value, "leaderElection": False}


def _election_readiness(elector: LeaderElector) -> ReadinessProbe:
    def probe() -> tuple[bool, dict[str, Any]]:
        contact = elector.api_ok_at_s
        recent = (
            contact is not None and time.monotonic() - contact < elector.settings.lease_duration_s
        )
        details = {
            "role": elector.role.value,
            "identity": elector.identity,
            "lease": f"{elector.store.namespace}/{elector.store.name}",
            "holder": elector.observed.holder if elector.observed else "",
        }
        return recent or elector.is_leading(), details

    return probe


def _stop_on_signals(stop_flag: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop a standby too (kopf installs its own handlers once it runs)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_flag.set)


async def _first_done(work: Awaitable[None], stop_flag: asyncio.Event) -> bool:
    """Await `work` unless `stop_flag` is set first; True when the work completed."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop_flag.wait())
    await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not working.done():
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
        return False
    working.result()
    return True
