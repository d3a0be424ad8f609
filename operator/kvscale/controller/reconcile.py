"""Level-based reconcile of one LLMDeployment: observed body in, status patch + Events out.

`reconcile` recomputes the whole desired state from the object as it is now (never from a
diff), applies what kvscale owns and reports. It imports no kopf: the kopf handlers in
`kvscale.controller.handlers` call it and translate its `Outcome` (status patch, Events) and its
transient errors. A spec that cannot work never raises: it becomes `Planned=False` with reason
`InvalidSpec` plus a Warning Event, and the last good workload keeps running untouched. A
planning failure nothing anticipated is reported the same way (reason `PlanningFailed`) and
marked permanent, so kopf does not retry the same failure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kvscale.api.calibration import CalibrationLookup
from kvscale.api.convert import ConfigMapLoader, SpecError
from kvscale.api.models import ConfigMapRef
from kvscale.api.status import Condition
from kvscale.controller import builders, conditions
from kvscale.controller.calibration import CalibrationRecord
from kvscale.controller.conditions import FALSE, TRUE, UNKNOWN, ConditionUpdate, Reason
from kvscale.controller.desired import (
    Desired,
    PlanningFailedError,
    SpecInvalidError,
    compute_desired,
)
from kvscale.controller.events import EventNote
from kvscale.controller.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ForbiddenError,
    InvalidError,
    KubeClient,
    NotFoundError,
)
from kvscale.controller.settings import ScrapeMode, Settings
from kvscale.controller.telemetry import OperatorMetrics
from kvscale.engines.argdiff import describe_arg_changes

JsonDict = dict[str, Any]
#: A step between rendering an object and applying it (the rollout guard: a pod template the
#: rollout refused is replaced by the last-known-good one).
TemplateGuard = Callable[[JsonDict], Awaitable[JsonDict]]
SCRAPE_CACHE_S = 300.0  # how long "is the PodMonitor CRD served?" is remembered


@dataclass(frozen=True)
class Outcome:
    """What one reconcile decided: a merge patch for `.status` and the Events to post."""

    status: JsonDict
    events: tuple[EventNote, ...] = ()
    permanent_error: str | None = None  # set: the handler reports it and kopf does not retry


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Controller:
    """Long-lived collaborators of the reconcile loop (one per operator process)."""

    settings: Settings
    kube: KubeClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = _now
    # Set by the autoscaler's registration when the rollback guardrails run (Prometheus URL).
    template_guard: TemplateGuard | None = None
    _pod_monitor_served: tuple[float, bool] | None = None
    _last_events: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _record: CalibrationRecord | None = None

    def calibration_record(self) -> CalibrationRecord:
        """The cluster-wide calibration record (one per process, shared with the autoscaler)."""
        if self._record is None:
            self._record = CalibrationRecord(self.kube, self.settings.calibration)
        return self._record

    async def calibration_lookup(self) -> CalibrationLookup:
        """The record's lookup after a refresh (a failed read keeps the last good one)."""
        record = self.calibration_record()
        await record.refresh()
        return record.lookup

    def first_time(self, namespace: str, name: str, note: EventNote) -> bool:
        """True once per (object, reason, message): concurrent triggers post one Event.

        No await happens between the check and the record, so two reconciles of one object
        racing in the event loop cannot both pass.
        """
        key = (namespace, name, note.reason)
        if self._last_events.get(key) == note.message:
            return False
        self._last_events[key] = note.message
        return True

    def forget_event(self, namespace: str, name: str, reason: str) -> None:
        self._last_events.pop((namespace, name, reason), None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered about a deleted LLMDeployment (Events, metric series)."""
        for key in [k for k in self._last_events if k[:2] == (namespace, name)]:
            del self._last_events[key]
        self.metrics.forget(namespace, name)

    async def use_pod_monitor(self) -> bool:
        """Whether to scrape through a PodMonitor (auto mode asks the API, cached)."""
        mode = self.settings.prometheus.scrape_mode
        if mode is not ScrapeMode.AUTO:
            return mode is ScrapeMode.POD_MONITOR
        cached = self._pod_monitor_served
        if cached is not None and time.monotonic() - cached[0] < SCRAPE_CACHE_S:
            return cached[1]
        served = await self.kube.has_resource("monitoring.coreos.com", "v1", "podmonitors")
        self._pod_monitor_served = (time.monotonic(), served)
        return served


def _workload_condition(deployment: Mapping[str, Any] | None, want: int) -> ConditionUpdate:
    """WorkloadReady from the Deployment's observed status."""
    if deployment is None:
        return ConditionUpdate(
            conditions.WORKLOAD_READY, FALSE, Reason.NOT_PLANNED, "no workload yet"
        )
    status = deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if available >= want and updated >= want:
        return ConditionUpdate(
            conditions.WORKLOAD_READY, TRUE, Reason.AVAILABLE, f"{available}/{want} available"
        )
    return ConditionUpdate(
        conditions.WORKLOAD_READY,
        FALSE,
        Reason.ROLLING_OUT,
        f"{available}/{want} available, {updated}/{want} on the current plan",
    )


def _replica_status(name: str, deployment: Mapping[str, Any] | None) -> JsonDict:
    """Scale-subresource fields; the selector is the workload's own (an adopted one's differs)."""
    status = (deployment or {}).get("status") or {}
    match = ((deployment or {}).get("spec") or {}).get("selector", {}).get("matchLabels")
    selector = (
        ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        if match
        else builders.selector_string(name)
    )
    return {
        "replicas": int(status.get("replicas") or 0),
        "readyReplicas": int(status.get("readyReplicas") or 0),
        "selector": selector,
    }


def _invalid_outcome(
    error: SpecInvalidError, previous: list[Condition]
) -> tuple[ConditionUpdate, tuple[EventNote, ...]]:
    """Planned=False with the error's reason; a Warning Event unless status already says it."""
    update = ConditionUpdate(conditions.PLANNED, FALSE, error.reason, str(error))
    old = conditions.find_condition(previous, conditions.PLANNED)
    repeated = old is not None and old.reason == error.reason and old.message == str(error)
    events = () if repeated else (EventNote("Warning", error.reason, str(error)),)
    return update, events


def _plan_change_event(status: Mapping[str, Any], desired: Desired) -> tuple[EventNote, ...]:
    """A Normal Event when the rendered plan differs from the one in status (not on first plan)."""
    old_gpu = status.get("selectedGpuType")
    old_args = list(status.get("engineArgs") or [])
    new_gpu = desired.status.get("selectedGpuType")
    new_args = list(desired.status.get("engineArgs") or [])
    if not old_args or (old_gpu == new_gpu and old_args == new_args):
        return ()
    changed = "; ".join(describe_arg_changes(old_args, new_args)) or "none"
    message = f"gpu {old_gpu} -> {new_gpu}; changed args: {changed[:900]}"
    return (EventNote("Normal", Reason.PLAN_CHANGED, message),)


def _warnings_event(warned: ConditionUpdate, previous: list[Condition]) -> tuple[EventNote, ...]:
    """A Warning Event when the planner's warnings appear or change (not on every reconcile)."""
    old = conditions.find_condition(previous, conditions.PLAN_WARNINGS)
    if warned.status != TRUE or (old is not None and old.message == warned.message):
        return ()
    return (EventNote("Warning", warned.reason, warned.message),)


async def _configmap_loader(
    ctl: Controller, namespace: str, raw_spec: Mapping[str, Any]
) -> ConfigMapLoader | None:
    """Fetch the config.json ConfigMap a spec points at (the planner's loader is synchronous)."""
    ref = ((raw_spec.get("model") or {}) if isinstance(raw_spec, Mapping) else {}).get(
        "configMapRef"
    )
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return None
    name = str(ref["name"])
    try:
        configmap = await ctl.kube.get(CONFIGMAPS, namespace, name)
    except NotFoundError:
        raise SpecInvalidError(
            f"spec.model.configMapRef.name: ConfigMap {namespace}/{name} not found; "
            "fix: create it or correct the name"
        ) from None
    data: Mapping[str, Any] = configmap.get("data") or {}

    def load(config_ref: ConfigMapRef) -> str:
        if config_ref.key not in data:
            raise SpecError(
                "spec.model.configMapRef.key",
                f"ConfigMap {name} has no key {config_ref.key!r}",
                f"use one of: {', '.join(sorted(data)) or 'none (it is empty)'}",
            )
        return str(data[config_ref.key])

    return load


async def _observe(ctl: Controller, namespace: str, name: str) -> JsonDict | None:
    try:
        return await ctl.kube.get(DEPLOYMENTS, namespace, name)
    except NotFoundError:
        return None


async def _apply_managed(
    ctl: Controller, desired: Desired
) -> tuple[JsonDict | None, ConditionUpdate | None, tuple[EventNote, ...]]:
    """Apply every owned object; an object the API server rejects is a condition, not a crash."""
    workload = desired.workload
    assert workload is not None
    pod_monitor = await ctl.use_pod_monitor()
    objects = builders.build_objects(
        workload,
        pod_monitor=pod_monitor,
        scrape_interval_s=ctl.settings.reconcile.scaling_interval_s,
    )
    deployment: JsonDict | None = None
    manager = ctl.settings.reconcile.field_manager
    for rendered in objects:
        # The rollout guard, when it runs, keeps a refused pod template out of the Deployment.
        guard = ctl.template_guard
        obj = rendered if guard is None else await guard(rendered)
        try:
            applied = await ctl.kube.apply(obj, field_manager=manager)
        except (InvalidError, ForbiddenError) as exc:
            message = f"{obj['kind']} {workload.name}: {exc}"
            failed = ConditionUpdate(conditions.WORKLOAD_READY, FALSE, Reason.APPLY_FAILED, message)
            return None, failed, (EventNote("Warning", Reason.APPLY_FAILED, message),)
        if obj["kind"] == "Deployment":
            deployment = applied
    ctl.metrics.desired_replicas.labels(workload.namespace, workload.name).set(workload.replicas)
    return deployment, None, ()


async def _reconcile_adopted(
    ctl: Controller, desired: Desired, namespace: str
) -> tuple[JsonDict | None, list[ConditionUpdate], tuple[EventNote, ...]]:
    """Adopt mode: observe the target; set only its replicas (scale subresource)."""
    target = desired.spec.target_ref
    assert target is not None
    deployment = await _observe(ctl, namespace, target.name)
    if deployment is None:
        message = f"Deployment {namespace}/{target.name} not found"
        missing = ConditionUpdate(
            conditions.WORKLOAD_READY, FALSE, Reason.ADOPT_TARGET_MISSING, message
        )
        return None, [missing], (EventNote("Warning", Reason.ADOPT_TARGET_MISSING, message),)
    want = desired.spec.desired_replicas() if desired.spec.replicas is not None else None
    current = (deployment.get("spec") or {}).get("replicas")
    if want is not None and want != current:
        await ctl.kube.patch_merge(
            DEPLOYMENTS, namespace, target.name, {"spec": {"replicas": want}}, subresource="scale"
        )
    adopted = ConditionUpdate(conditions.ADOPTED, TRUE, Reason.ADOPTED, f"adopted {target.name}")
    return deployment, [adopted], ()


async def reconcile(ctl: Controller, body: Mapping[str, Any]) -> Outcome:
    """Converge one LLMDeployment; returns its status patch and the Events to post."""
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    status: Mapping[str, Any] = body.get("status") or {}
    previous = conditions.parse_conditions(status.get("conditions"))
    updates: list[ConditionUpdate] = []
    events: tuple[EventNote, ...] = ()
    patch: JsonDict = {}
    deployment: JsonDict | None
    permanent_error: str | None = None
    try:
        raw_spec = body.get("spec") or {}
        loader = await _configmap_loader(ctl, namespace, raw_spec)
        lookup = await ctl.calibration_lookup()
        desired = compute_desired(meta, raw_spec, ctl.settings, loader, lookup)
    except SpecInvalidError as error:
        if isinstance(error, PlanningFailedError):
            permanent_error = str(error)
        ctl.metrics.invalid_specs.labels(namespace, name).set(1)
        update, events = _invalid_outcome(error, previous)
        updates.append(update)
        deployment = await _observe(ctl, namespace, name)
        if deployment is not None:
            want = int((deployment.get("spec") or {}).get("replicas") or 0)
            updates.append(_workload_condition(deployment, want))
    else:
        ctl.metrics.invalid_specs.labels(namespace, name).set(0)
        ctl.forget_event(namespace, name, Reason.INVALID_SPEC)
        ctl.forget_event(namespace, name, Reason.PLANNING_FAILED)
        patch.update(desired.status)
        updates.extend([desired.planned, desired.capacity])
        events = _plan_change_event(status, desired)
        if desired.warned is not None:
            updates.append(desired.warned)
            events += _warnings_event(desired.warned, previous)
        if desired.spec.mode == "adopt":
            deployment, extra, adopt_events = await _reconcile_adopted(ctl, desired, namespace)
            updates.extend(extra)
            events += adopt_events
            if deployment is not None:
                want = int((deployment.get("spec") or {}).get("replicas") or 0)
                updates.append(_workload_condition(deployment, want))
        elif desired.workload is None:  # planned, but nothing fits: keep the last good workload
            deployment = await _observe(ctl, namespace, name)
            updates.append(
                ConditionUpdate(
                    conditions.WORKLOAD_READY, UNKNOWN, Reason.NOT_PLANNED, desired.capacity.message
                )
            )
        else:
            deployment, failed, apply_events = await _apply_managed(ctl, desired)
            events += apply_events
            updates.append(failed or _workload_condition(deployment, desired.workload.replicas))
    merged = conditions.apply_updates(previous, updates, now=ctl.clock(), generation=generation)
    patch["conditions"] = conditions.dump_conditions(merged)
    if generation is not None:
        patch["observedGeneration"] = generation
    patch.update(_replica_status(name, deployment))
    fresh = tuple(e for e in events if ctl.first_time(namespace, name, e))
    return Outcome(status=patch, events=fresh, permanent_error=permanent_error)
