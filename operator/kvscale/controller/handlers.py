"""kopf handlers: thin triggers around the level-based `reconcile`.

Create / update (of `spec`) / resume reconcile at once so a user does not wait for the timer;
the timer re-reconciles every `KVSCALE_RECONCILE_INTERVAL_S` so drift (someone edited the
Deployment, a node label changed, an earlier transient error) is repaired without an event.
All of them run the same `reconcile`, which computes the desired state from the whole object.

There is no delete handler, hence no finalizer: children carry a controller ownerReference and
the garbage collector removes them, and an LLMDeployment can be deleted while the operator is
down. Adopted Deployments have no ownerReference and survive.

Handlers are registered on an explicit registry (`register_handlers`), so tests can run several
operators with their own settings in one process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from kvscale.api import vocabulary
from kvscale.api.vocabulary import API_GROUP, API_VERSION
from kvscale.controller.events import post_event
from kvscale.controller.kube import (
    LLM_DEPLOYMENTS,
    TRANSIENT_ERRORS,
    KubeError,
    TooManyRequestsError,
)
from kvscale.controller.reconcile import Controller, Outcome, reconcile

GROUP, VERSION, PLURAL = API_GROUP, API_VERSION, vocabulary.PLURAL
logger = logging.getLogger(__name__)


def _post_events(body: kopf.Body, outcome: Outcome) -> None:
    for note in outcome.events:
        post_event(body, note)


async def run_reconcile(ctl: Controller, trigger: str, body: kopf.Body) -> None:
    """One reconcile: status written, Events posted, API trouble → TemporaryError.

    Status goes through our client (a merge patch of the status subresource), not kopf's
    `patch`: then a timer that finishes while the operator shuts down leaves kopf nothing
    to write with its already-closed session.
    """
    started = time.perf_counter()
    meta = body.get("metadata") or {}
    try:
        outcome = await reconcile(ctl, body)
        await ctl.kube.patch_merge(
            LLM_DEPLOYMENTS,
            meta.get("namespace"),
            str(meta.get("name")),
            {"status": outcome.status},
            subresource="status",
        )
    except TRANSIENT_ERRORS as exc:
        ctl.metrics.errors.labels(type(exc).__name__).inc()
        ctl.metrics.reconciles.labels(trigger, "retry").inc()
        delay = exc.retry_after_s if isinstance(exc, TooManyRequestsError) else None
        raise kopf.TemporaryError(
            str(exc), delay=delay or ctl.settings.reconcile.retry_delay_s
        ) from exc
    except KubeError as exc:  # RBAC or a rejected request: retry slowly, keep running
        ctl.metrics.errors.labels(type(exc).__name__).inc()
        ctl.metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.TemporaryError(str(exc), delay=ctl.settings.reconcile.interval_s) from exc
    finally:
        ctl.metrics.duration.observe(time.perf_counter() - started)
    _post_events(body, outcome)
    if outcome.permanent_error is not None:  # in status and an Event already; never retried
        ctl.metrics.reconciles.labels(trigger, "error").inc()
        raise kopf.PermanentError(outcome.permanent_error)
    ctl.metrics.reconciles.labels(trigger, "ok").inc()


def register_handlers(registry: kopf.OperatorRegistry, ctl: Controller) -> None:
    """Register every kvscale handler on `registry`, bound to `ctl`."""
    interval_s = ctl.settings.reconcile.interval_s

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def on_create(body: kopf.Body, **_: Any) -> None:
        await run_reconcile(ctl, "create", body)

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def on_update(body: kopf.Body, **_: Any) -> None:
        await run_reconcile(ctl, "update", body)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    async def on_resume(body: kopf.Body, **_: Any) -> None:
        await run_reconcile(ctl, "resume", body)

    @kopf.on.timer(
        GROUP, VERSION, PLURAL, interval=interval_s, initial_delay=interval_s, registry=registry
    )
    async def on_timer(body: kopf.Body, **_: Any) -> None:
        await run_reconcile(ctl, "timer", body)

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    async def on_delete(name: str, namespace: str | None, **_: Any) -> None:
        # optional=True: this adds no finalizer of its own; it only drops in-memory state.
        ctl.forget(namespace or "", name)
