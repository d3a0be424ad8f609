"""The autoscaler and rollback guardrails inside the running operator.

Shape (one operator process):

- `SignalsCache` (signals_cache.py): one batched read of every tracked LLMDeployment's
  signals per scaling interval; failures come back as readings with `signals=None`.
- a kopf timer per LLMDeployment (`autoscale`) that reads the workload, counts replicas,
  takes the cached reading, runs `kvscale.scaling.decide`, writes `spec.replicas` through the
  LLMDeployment's scale subresource (the single source of truth for replicas; the reconcile
  copies it onto the Deployment, and in adopt mode the target's scale is patched at once too),
  records status/conditions/Events/metrics, then runs one rollout-guardrail step.
- a kopf index of engine pods (label `llmd`, the same label Prometheus groups by) for the
  warm-up count and the candidate pods' restarts / OOMKills / CrashLoopBackOff.

`register(registry, settings, controller=…)` wires all of it onto the registry the operator's
other handlers use. `plan_tick` is the pure core of one tick (the benchmark times it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.policy_config import to_guardrails, to_scaling_config
from kvscale.api.status import Condition
from kvscale.capacity.calibration import LivePool
from kvscale.controller import conditions
from kvscale.controller.autoscaler_metrics import AutoscalerMetrics
from kvscale.controller.autoscaler_status import (
    PodFacts,
    build_autoscaler_status,
    count_replicas,
    load_scaler_state,
    metrics_condition,
    parse_time_s,
    planned_kv_tokens_of,
    planned_prefill_tokens_per_s_of,
    pod_facts,
    scale_event,
    scaling_condition,
    seed_demand_profile,
)
from kvscale.controller.calibration import CalibrationRecord, step_calibration, unsettled_reason
from kvscale.controller.conditions import ConditionUpdate
from kvscale.controller.desired import SpecInvalidError, parse_spec
from kvscale.controller.events import EventNote, post_event
from kvscale.controller.kube import (
    DEPLOYMENTS,
    LLM_DEPLOYMENTS,
    KubeClient,
    KubeError,
    NotFoundError,
)
from kvscale.controller.reconcile import Controller
from kvscale.controller.rollout_wiring import (
    ANNOTATION_LAST_KNOWN_GOOD,
    RolloutGuard,
    RolloutMemory,
    decode_last_known_good,
    load_rollout_state,
    planned_blocks_of,
    restore_template,
    step_rollout,
)
from kvscale.controller.settings import Settings
from kvscale.controller.signals_cache import SignalsCache
from kvscale.controller.workload import LABEL_LLMD
from kvscale.metrics import DeploymentKey, DeploymentTarget, MetricsSource, PrometheusSource
from kvscale.metrics.source import SignalsReading
from kvscale.scaling import Decision, Mode, Observation, ReplicaCounts, ScalerState, decide
from kvscale.scaling.forecast import SEASON_BIN_S, SEASON_S
from kvscale.scaling.rollback import RolloutState

JsonDict = dict[str, Any]
Clock = Callable[[], float]
PROFILE_HISTORY_S = 7 * SEASON_S  # the history that seeds the forecast's daily profile
PODS_INDEX = "kvscale_engine_pods"  # kopf passes the index to handlers under this name
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickPlan:
    """Everything one tick decided, before any I/O."""

    decision: Decision
    state: ScalerState
    counts: ReplicaCounts
    autoscaler_status: JsonDict
    conditions: tuple[ConditionUpdate, ...]
    event: EventNote | None
    scale_to: int | None  # replicas to write (auto mode and a change), else None


def plan_tick(
    spec: LLMDeploymentSpec,
    status: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any],
    pods: Sequence[PodFacts],
    reading: SignalsReading,
    now_s: float,
) -> TickPlan:
    """One tick of the policy from observed objects (pure: no clock, no I/O)."""
    config = to_scaling_config(
        spec,
        _float_or_none(status.get("safeConcurrency")),
        planned_kv_tokens_of(status),
        planned_prefill_tokens_per_s_of(status),
    )
    counts = count_replicas(deployment, pods, now_s=now_s, warmup_s=config.warmup_s)
    previous = status.get("autoscaler") or {}
    state = load_scaler_state(previous)
    decision, state = decide(config, state, Observation(counts, reading.signals), now_s)
    auto = config.mode is Mode.AUTO
    autoscaler_status = build_autoscaler_status(
        previous, decision, state=state, counts=counts, reading=reading, now_s=now_s
    )
    scale_to = decision.replicas if auto and decision.replicas != counts.desired else None
    return TickPlan(
        decision=decision,
        state=state,
        counts=counts,
        autoscaler_status=autoscaler_status,
        conditions=(metrics_condition(reading), scaling_condition(decision, auto)),
        event=scale_event(decision, counts.desired, auto),
        scale_to=scale_to,
    )


class Autoscaler:
    """The per-object tick (I/O shell around `plan_tick` and `step_rollout`)."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeClient,
        *,
        cache: SignalsCache,
        metrics: AutoscalerMetrics,
        memory: RolloutMemory,
        record: CalibrationRecord | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.cache = cache
        self.metrics = metrics
        self.memory = memory
        self.record = record or CalibrationRecord(kube, settings.calibration)
        self.clock = clock
        self._seeded: set[DeploymentKey] = set()  # objects whose profile history was read

    def is_due(self, raw_spec: Mapping[str, Any], status: Mapping[str, Any], now_s: float) -> bool:
        """Honour spec.scaling.intervalSeconds when set; the timer ticks at the operator's
        scaling interval (KVSCALE_SCALING_INTERVAL_S) otherwise."""
        scaling = raw_spec.get("scaling") or {}
        interval_s = float(scaling.get("intervalSeconds") or 0.0)
        if interval_s <= self.settings.reconcile.scaling_interval_s:
            return True
        last_s = parse_time_s((status.get("autoscaler") or {}).get("lastDecisionTime"))
        slack_s = 0.25 * self.settings.reconcile.scaling_interval_s
        return last_s is None or now_s - last_s >= interval_s - slack_s

    async def tick(self, body: Mapping[str, Any], patch: Any, pods_index: Any) -> None:
        meta = body.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
        raw_spec = body.get("spec") or {}
        status = body.get("status") or {}
        now_s = self.clock()
        if not self.is_due(raw_spec, status, now_s):
            return
        try:
            spec = parse_spec(raw_spec)
        except SpecInvalidError:
            return  # the reconcile reports it (Planned=False); nothing to scale safely
        workload = spec.target_ref.name if spec.mode == "adopt" and spec.target_ref else name
        deployment = await self._read_deployment(namespace, workload)
        if deployment is None:
            return
        pods = _pods_of(pods_index, namespace, name)
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        key = DeploymentKey(namespace, name)
        target = DeploymentTarget(namespace, name, spec.engine.name, spec.engine.release, ready)
        self.cache.track(target)
        self._record_plan(namespace, name, status)
        reading = self.cache.reading(key)
        if reading is None:
            self._write_conditions(body, patch, [metrics_condition(None)])
            return
        if spec.scaling.forecast_horizon_seconds > 0:
            status = await self._seed_profile(target, status, now_s)
        plan = plan_tick(
            spec, status, deployment=deployment, pods=pods, reading=reading, now_s=now_s
        )
        if plan.scale_to is not None and not (
            await self._record_intent(namespace, name, plan)
            and await self._scale(spec, namespace, name, plan)
        ):
            return
        self._write_tick(body, patch, plan, reading)
        self.metrics.record_decision(namespace, name, plan.decision, plan.counts, reading)
        await self._calibrate(body, patch, spec, deployment, reading)
        if spec.mode != "managed" or not spec.rollout.enabled:
            # Rollback off (or adopt mode): the apply guard must not hold anything back.
            self.memory.update(namespace, name, enabled=False, state=RolloutState(), stored=None)
        else:
            await self._rollout(
                body, patch, spec, deployment=deployment, pods=pods, reading=reading, now_s=now_s
            )

    async def _seed_profile(
        self, target: DeploymentTarget, status: Mapping[str, Any], now_s: float
    ) -> Mapping[str, Any]:
        """On the first tick without a daily profile in status, learn one from the last week
        of Prometheus history (once per object and operator process; ADR 0009). Later ticks
        add to it, and status keeps it across restarts."""
        autoscaler = status.get("autoscaler") or {}
        history = getattr(self.cache.source, "demand_history", None)
        if autoscaler.get("demandProfile") or target.key in self._seeded or history is None:
            return status
        self._seeded.add(target.key)
        start_s = now_s - PROFILE_HISTORY_S
        try:
            samples = await asyncio.to_thread(history, target, start_s, now_s, SEASON_BIN_S)
        except Exception:  # a source must not raise; if one does, the ticks learn alone
            logger.exception("%s: demand history read failed", target.key)
            return status
        return seed_demand_profile(status, samples)

    def _record_plan(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """The plan's pool per replica on /metrics (the plan-drift alert compares it)."""
        blocks, tokens = planned_blocks_of(status), planned_kv_tokens_of(status)
        if blocks is not None:
            self.metrics.planned_blocks.labels(namespace, name).set(blocks)
        if tokens is not None:
            self.metrics.planned_tokens.labels(namespace, name).set(tokens)

    async def _read_deployment(self, namespace: str, name: str) -> JsonDict | None:
        try:
            return await self.kube.get(DEPLOYMENTS, namespace, name)
        except NotFoundError:
            return None
        except KubeError as error:
            logger.warning("%s/%s: cannot read the workload: %s", namespace, name, error)
            return None

    async def _record_intent(self, namespace: str, name: str, plan: TickPlan) -> bool:
        """Store the decision (and the window of recommendations) before acting on it.

        An operator killed between the scale and kopf's status patch at the end of the handler
        would restart without the recommendation it acted on, and the stabilisation window
        would let it undo its own scale-up at once. Written first, the restart finds it.
        """
        body = {"status": {"autoscaler": plan.autoscaler_status}}
        try:
            await self.kube.patch_merge(LLM_DEPLOYMENTS, namespace, name, body, "status")
        except KubeError as error:
            logger.warning("%s/%s: decision not recorded, not scaling: %s", namespace, name, error)
            return False
        return True

    async def _scale(
        self, spec: LLMDeploymentSpec, namespace: str, name: str, plan: TickPlan
    ) -> bool:
        """spec.replicas through the scale subresource; adopt mode also scales the target."""
        replicas = {"spec": {"replicas": plan.scale_to}}
        try:
            await self.kube.patch_merge(LLM_DEPLOYMENTS, namespace, name, replicas, "scale")
            if spec.mode == "adopt" and spec.target_ref is not None:
                target = spec.target_ref.name
                await self.kube.patch_merge(DEPLOYMENTS, namespace, target, replicas, "scale")
        except KubeError as error:
            logger.warning("%s/%s: scaling to %s failed: %s", namespace, name, plan.scale_to, error)
            return False  # state not stored: the next tick decides again
        return True

    def _write_tick(
        self, body: Mapping[str, Any], patch: Any, plan: TickPlan, reading: SignalsReading
    ) -> None:
        if plan.scale_to is None:  # a scale already stored it (`_record_intent`)
            patch.status["autoscaler"] = plan.autoscaler_status
        signals = reading.signals
        if signals is not None and signals.kv_usage_frac is not None:
            patch.status["kvUtilization"] = round(min(1.0, max(0.0, signals.kv_usage_frac)), 4)
        if signals is not None and signals.num_gpu_blocks is not None:
            patch.status["liveNumBlocks"] = signals.num_gpu_blocks
        self._write_conditions(body, patch, plan.conditions)
        if plan.event is not None:
            post_event(body, plan.event)

    async def _calibrate(
        self,
        body: Mapping[str, Any],
        patch: Any,
        spec: LLMDeploymentSpec,
        deployment: Mapping[str, Any],
        reading: SignalsReading,
    ) -> None:
        """Compare the engines' pool with the plan; record the overhead past the tolerance.
        No pool in this reading (missing, NaN, stale): status and record stay as they are."""
        signals = reading.signals
        status = body.get("status") or {}
        calibration = status.get("calibration")
        if not calibration or signals is None:
            return
        if signals.num_gpu_blocks is None or signals.block_size_tokens is None:
            return
        meta = body.get("metadata") or {}
        step = step_calibration(
            spec,
            calibration,
            LivePool(signals.num_gpu_blocks, signals.block_size_tokens),
            unsettled=unsettled_reason(spec, deployment, status),
            recorded=self.record.recorded_bytes(str(calibration.get("recordKey") or "")),
            source=f"{meta.get('namespace')}/{meta.get('name')}",
            now=_utc(self.clock()),
        )
        if step is None:
            return
        if step.entry is not None and step.record_key:
            failure = await self.record.write(step.record_key, step.entry)
            if failure is not None:
                step = step.not_recorded(failure)
        patch.status["calibration"] = step.status
        self._write_conditions(body, patch, [step.condition])
        if step.event is not None:
            post_event(body, step.event)

    def _write_conditions(
        self, body: Mapping[str, Any], patch: Any, updates: Iterable[ConditionUpdate]
    ) -> None:
        """Merge into the conditions list only when something but the time changed (the
        reconcile writes the same list; fewer writes, fewer lost updates). Updates made earlier
        in the same tick are kept: they are the base when the patch already holds a list."""
        status = body.get("status") or {}
        meta = body.get("metadata") or {}
        previous = conditions.parse_conditions(status.get("conditions"))
        pending = patch.status.get("conditions")
        base = previous if pending is None else conditions.parse_conditions(pending)
        merged = conditions.apply_updates(
            base,
            list(updates),
            now=_utc(self.clock()),
            generation=meta.get("generation"),
        )
        if _condition_keys(merged) != _condition_keys(previous):
            patch.status["conditions"] = conditions.dump_conditions(merged)

    async def _rollout(
        self,
        body: Mapping[str, Any],
        patch: Any,
        spec: LLMDeploymentSpec,
        *,
        deployment: Mapping[str, Any],
        pods: Sequence[PodFacts],
        reading: SignalsReading,
        now_s: float,
    ) -> None:
        meta = body.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
        status = body.get("status") or {}
        stored = decode_last_known_good(meta.get("annotations"))
        step, state = step_rollout(
            load_rollout_state(status.get("rollout")),
            deployment=deployment,
            stored=stored,
            signals=reading.signals,
            pods=pods,
            planned_blocks=planned_blocks_of(status),
            guardrails=to_guardrails(spec),
            now_s=now_s,
        )
        if step.annotation is not None:
            patch.metadata.annotations[ANNOTATION_LAST_KNOWN_GOOD] = step.annotation
            stored = decode_last_known_good({ANNOTATION_LAST_KNOWN_GOOD: step.annotation})
        self.memory.update(namespace, name, enabled=True, state=state, stored=stored)
        if step.restore_template is not None:
            try:
                await restore_template(self.kube, namespace, name, step.restore_template)
            except KubeError as error:
                logger.warning("%s/%s: restoring the template failed: %s", namespace, name, error)
                return  # keep the old state: the next tick tries again
        patch.status["rollout"] = step.status
        if step.condition is not None:
            self._write_conditions(body, patch, [step.condition])
        if step.event is not None:
            post_event(body, step.event)
        if step.rolled_back and step.condition is not None:
            self.metrics.rollbacks.labels(namespace, name, step.condition.reason).inc()

    def forget(self, namespace: str, name: str) -> None:
        self.cache.forget(DeploymentKey(namespace, name))
        self.metrics.forget(namespace, name)
        self.memory.forget(namespace, name)


def build_source(settings: Settings) -> MetricsSource | None:
    """The Prometheus source from settings (None when no URL: autoscaling is off)."""
    prometheus = settings.prometheus
    if not prometheus.url:
        return None
    return PrometheusSource(
        prometheus.url,
        bearer_token_file=prometheus.bearer_token_file or None,
        ca_file=prometheus.ca_file or None,
        timeout_s=prometheus.http_timeout_s,
    )


def register(
    registry: kopf.OperatorRegistry,
    settings: Settings,
    *,
    controller: Controller,
    source: MetricsSource | None = None,
    clock: Clock = time.time,
) -> Autoscaler | None:
    """Register the signal cache, the pod index, the autoscaling timer and cleanup handlers.

    Also sets `controller.template_guard` to the rollout guard, so the reconcile never
    re-applies a pod template the rollout refused. Returns None (and registers nothing) when
    there is no metrics source: without Prometheus the operator only plans and runs workloads.
    """
    source = source if source is not None else build_source(settings)
    if source is None:
        logger.info("no Prometheus URL: autoscaling and rollback guardrails are off")
        return None
    memory = RolloutMemory()
    inner = controller.kube
    controller.template_guard = RolloutGuard(inner, memory).guard
    metrics = AutoscalerMetrics(controller.metrics.registry)
    interval_s = settings.reconcile.scaling_interval_s
    cache = SignalsCache(source, interval_s=interval_s, metrics=metrics, clock=clock)
    autoscaler = Autoscaler(
        settings,
        inner,
        cache=cache,
        metrics=metrics,
        memory=memory,
        record=controller.calibration_record(),
        clock=clock,
    )
    group, version, plural = LLM_DEPLOYMENTS.group, LLM_DEPLOYMENTS.version, LLM_DEPLOYMENTS.plural

    @kopf.index("", "v1", "pods", labels={LABEL_LLMD: kopf.PRESENT}, registry=registry)
    def kvscale_engine_pods(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], PodFacts]:
        return {(namespace or "", labels[LABEL_LLMD]): pod_facts(body)}

    @kopf.on.startup(registry=registry)
    async def start_signals_cache(**_: Any) -> None:
        cache.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_signals_cache(**_: Any) -> None:
        await cache.stop()
        close = getattr(source, "close", None)
        if callable(close):
            close()

    @kopf.timer(group, version, plural, interval=interval_s, registry=registry)
    async def autoscale(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        await autoscaler.tick(body, patch, kwargs.get(PODS_INDEX))

    @kopf.on.delete(group, version, plural, optional=True, registry=registry)
    async def forget_autoscaler_state(name: str, namespace: str | None, **_: Any) -> None:
        autoscaler.forget(namespace or "default", name)

    return autoscaler


def _pods_of(index: Any, namespace: str, name: str) -> list[PodFacts]:
    if index is None:
        return []
    try:
        store = index.get((namespace, name))
    except (AttributeError, TypeError):
        return []
    return [pod for pod in store or () if isinstance(pod, PodFacts)]


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _condition_keys(items: Iterable[Condition]) -> list[tuple[str, str, str, str]]:
    return sorted((c.type, c.status, c.reason, c.message) for c in items)


def _utc(now_s: float) -> datetime:
    return datetime.fromtimestamp(now_s, UTC)
