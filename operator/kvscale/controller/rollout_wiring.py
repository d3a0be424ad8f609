"""Rollback wiring: the pure rollout state machine (`kvscale.scaling.rollback`) meets the cluster.

What is hashed: the `kvscale.dev/plan-hash` annotation the builders put on the pod template —
image, command, rendered engine args, GPUs and GPU placement. A change of max context, KV dtype,
max-num-seqs, engine version or GPU type changes it; a replica change never does.

Where the last-known-good template lives: in an annotation of the LLMDeployment itself
(`kvscale.dev/last-known-good`, compact JSON `{"planHash", "template"}`). It is written in the
same kopf patch as the status that names it, needs no extra object or RBAC, survives an operator
restart and is deleted with its owner. A pod template is a few KB; the annotation budget is
256 KB.

How a refused hash stays refused: the reconcile renders the pod template from the spec on every
pass and hands every object to `Controller.template_guard` before applying it; when the
guardrails run, that is `RolloutGuard.guard`: for a Deployment whose template hash the rollout
refused, it swaps in the stored last-known-good template (and logs it). So the spec can keep
the refused change while the pods run the good revision, until the spec changes to something
else.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from kvscale.api.status import RolloutStatus
from kvscale.api.vocabulary import ConditionType, Reason
from kvscale.controller.autoscaler_status import PodFacts, selected_plan_figure
from kvscale.controller.conditions import FALSE, TRUE, ConditionUpdate
from kvscale.controller.events import EventNote
from kvscale.controller.kube import DEPLOYMENTS, LLM_DEPLOYMENTS, KubeClient, NotFoundError
from kvscale.controller.workload import ANNOTATION_PLAN_HASH, LABEL_DEPLOYMENT, MANAGED_BY
from kvscale.scaling import reasons
from kvscale.scaling.rollback import (
    Guardrails,
    GuardrailSnapshot,
    RolloutAction,
    RolloutHealth,
    RolloutPhase,
    RolloutState,
    RolloutVerdict,
    evaluate_rollout,
    on_spec_change,
)
from kvscale.scaling.types import Signals

JsonDict = dict[str, Any]
ANNOTATION_LAST_KNOWN_GOOD = "kvscale.dev/last-known-good"
ROLLED_BACK = ConditionType.ROLLED_BACK
ROLLOUT_STARTED = Reason.ROLLOUT_STARTED
logger = logging.getLogger(__name__)


def template_hash(deployment: Mapping[str, Any] | None) -> str | None:
    """The plan hash of the pod template a Deployment runs (None: not a kvscale template)."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_PLAN_HASH)
    return str(value) if value else None


def load_rollout_state(raw: Mapping[str, Any] | None) -> RolloutState:
    """`RolloutState` from status.rollout (a status that does not read: start idle)."""
    try:
        return RolloutStatus.model_validate(raw or {}).to_state()
    except ValidationError:
        return RolloutState()


def dump_rollout_state(state: RolloutState, verdict: RolloutVerdict | None) -> JsonDict:
    """status.rollout (camelCase; None written as null so a merge patch clears it)."""
    out: JsonDict = RolloutStatus.from_state(state).model_dump(
        by_alias=True, mode="json", exclude={"reason", "message"}
    )
    if verdict is not None and verdict.action is not RolloutAction.NONE:
        out["reason"] = verdict.reason
        out["message"] = verdict.message[:4096]
    elif verdict is not None and verdict.reason == reasons.ROLLOUT_BAKING:
        out["reason"], out["message"] = verdict.reason, verdict.message[:4096]
    return out


def candidate_health(
    pods: Sequence[PodFacts],
    candidate_hash: str | None,
    signals: Signals | None,
    planned_blocks: int | None,
) -> RolloutHealth:
    """What the guardrails judge: the candidate's pods (by template hash) and the signals."""
    mine = [p for p in pods if candidate_hash is not None and p.plan_hash == candidate_hash]
    return RolloutHealth(
        signals=signals,
        restarts=sum(p.restarts for p in mine),
        oom_killed=sum(p.oom_killed for p in mine),
        crash_looping=sum(p.crash_looping for p in mine),
        live_num_gpu_blocks=None if signals is None else signals.num_gpu_blocks,
        planned_num_gpu_blocks=planned_blocks,
    )


def planned_blocks_of(status: Mapping[str, Any]) -> int | None:
    """numBlocks of the selected GPU type's plan in status (None when not planned)."""
    blocks = selected_plan_figure(status, "numBlocks")
    return None if blocks is None else int(blocks)


def encode_last_known_good(plan_hash: str, template: Mapping[str, Any]) -> str:
    return json.dumps({"planHash": plan_hash, "template": template}, separators=(",", ":"))


def decode_last_known_good(annotations: Mapping[str, Any] | None) -> tuple[str, JsonDict] | None:
    """(hash, pod template) from the annotation, or None when absent or unreadable."""
    raw = (annotations or {}).get(ANNOTATION_LAST_KNOWN_GOOD)
    if not isinstance(raw, str):
        return None
    try:
        data = json.loads(raw)
        return str(data["planHash"]), dict(data["template"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class RolloutStep:
    """One rollout tick's outcome: status, annotation, conditions, Events and any restore."""

    status: JsonDict
    annotation: str | None = None  # new last-known-good annotation value to write
    condition: ConditionUpdate | None = None
    event: EventNote | None = None
    restore_template: JsonDict | None = None  # patch the Deployment back to this template
    rolled_back: bool = False


def step_rollout(
    state: RolloutState,
    *,
    deployment: Mapping[str, Any],
    stored: tuple[str, JsonDict] | None,
    signals: Signals | None,
    pods: Sequence[PodFacts],
    planned_blocks: int | None,
    guardrails: Guardrails,
    now_s: float,
) -> tuple[RolloutStep, RolloutState]:
    """Decide this tick's rollout action from what the Deployment runs now (pure)."""
    running = template_hash(deployment)
    if running is None:
        return RolloutStep(dump_rollout_state(state, None)), state
    template = copy.deepcopy(((deployment.get("spec") or {}).get("template")) or {})
    good = state.last_known_good_hash
    if good is None or (stored is None and running == good):
        verdict, state = on_spec_change(state, running, None, GuardrailSnapshot(), now_s)
        state = replace(state, baseline=GuardrailSnapshot.from_signals(signals))
        annotation = encode_last_known_good(running, template)
        return RolloutStep(dump_rollout_state(state, verdict), annotation), state
    if running not in (good, state.candidate_hash):
        return _start_or_refuse(state, running, good, stored, now_s)
    if state.phase is RolloutPhase.BAKING and running == good:
        # The spec went back to the last-known-good revision mid-bake: nothing left to judge.
        state = replace(state, phase=RolloutPhase.IDLE, candidate_hash=None, bake_started_s=None)
        return RolloutStep(dump_rollout_state(state, None)), state
    if state.phase is RolloutPhase.BAKING:
        health = candidate_health(pods, state.candidate_hash, signals, planned_blocks)
        verdict, state = evaluate_rollout(state, guardrails, health, now_s)
        return _after_evaluation(state, verdict, stored, running, template), state
    if signals is not None:  # idle on the good revision: keep the pre-change baseline fresh
        state = replace(state, baseline=GuardrailSnapshot.from_signals(signals))
    return RolloutStep(dump_rollout_state(state, None)), state


def _start_or_refuse(
    state: RolloutState,
    running: str,
    good: str,
    stored: tuple[str, JsonDict] | None,
    now_s: float,
) -> tuple[RolloutStep, RolloutState]:
    verdict, state = on_spec_change(state, running, good, state.baseline, now_s)
    if verdict.action is RolloutAction.REFUSE:
        restore = stored[1] if stored is not None and stored[0] == good else None
        event = EventNote("Warning", verdict.reason, verdict.message[:1024])
        condition = ConditionUpdate(ROLLED_BACK, TRUE, verdict.reason, verdict.message[:4096])
        status = dump_rollout_state(state, verdict)
        return RolloutStep(status, None, condition, event, restore), state
    event = EventNote("Normal", ROLLOUT_STARTED, verdict.message[:1024])
    condition = ConditionUpdate(ROLLED_BACK, FALSE, reasons.ROLLOUT_BAKING, verdict.message[:4096])
    return RolloutStep(dump_rollout_state(state, verdict), None, condition, event), state


def _after_evaluation(
    state: RolloutState,
    verdict: RolloutVerdict,
    stored: tuple[str, JsonDict] | None,
    running: str,
    template: JsonDict,
) -> RolloutStep:
    status = dump_rollout_state(state, verdict)
    if verdict.action is RolloutAction.ROLLBACK:
        restore = None
        if stored is not None and stored[0] == verdict.restore_hash:
            restore = stored[1]
        message = verdict.message
        if restore is None:
            message += "; the last-known-good template is not stored: restore it by hand"
        event = EventNote("Warning", verdict.reason, message[:1024])
        condition = ConditionUpdate(ROLLED_BACK, TRUE, verdict.reason, message[:4096])
        return RolloutStep(status, None, condition, event, restore, rolled_back=True)
    if verdict.action is RolloutAction.PROMOTE:
        event = EventNote("Normal", verdict.reason, verdict.message[:1024])
        condition = ConditionUpdate(ROLLED_BACK, FALSE, verdict.reason, verdict.message[:4096])
        annotation = encode_last_known_good(running, template)
        return RolloutStep(status, annotation, condition, event)
    return RolloutStep(status)


# --- keeping a refused template out of the cluster -----------------------------------------


@dataclass(frozen=True)
class RolloutMemo:
    """What the guard needs to know about one LLMDeployment."""

    enabled: bool
    refused: frozenset[str]
    last_known_good: tuple[str, JsonDict] | None


@dataclass
class RolloutMemory:
    """Per-process memo of refused hashes, filled by the timer and on demand from the API."""

    memos: dict[tuple[str, str], RolloutMemo] = field(default_factory=dict)

    def remember(self, namespace: str, name: str, body: Mapping[str, Any]) -> RolloutMemo:
        rollout = (body.get("spec") or {}).get("rollout") or {}
        status = (body.get("status") or {}).get("rollout") or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        memo = RolloutMemo(
            enabled=bool(rollout.get("enabled", True)),
            refused=frozenset(str(h) for h in status.get("refusedHashes") or ()),
            last_known_good=decode_last_known_good(annotations),
        )
        self.memos[(namespace, name)] = memo
        return memo

    def update(
        self,
        namespace: str,
        name: str,
        *,
        enabled: bool,
        state: RolloutState,
        stored: tuple[str, JsonDict] | None,
    ) -> None:
        self.memos[(namespace, name)] = RolloutMemo(
            enabled=enabled,
            refused=frozenset(state.refused_hashes),
            last_known_good=stored,
        )

    def forget(self, namespace: str, name: str) -> None:
        self.memos.pop((namespace, name), None)


def guard_template(obj: JsonDict, memo: RolloutMemo | None) -> tuple[JsonDict, str | None]:
    """The Deployment to apply: `obj`, or `obj` with the last-known-good template when the
    rendered template's hash was refused. Returns (object, the refused hash or None)."""
    rendered = template_hash(obj)
    if memo is None or not memo.enabled or rendered is None or rendered not in memo.refused:
        return obj, None
    if memo.last_known_good is None:
        return obj, None  # nothing to restore: applying is the only way to keep running
    guarded = copy.deepcopy(obj)
    guarded["spec"]["template"] = copy.deepcopy(memo.last_known_good[1])
    return guarded, rendered


class RolloutGuard:
    """Keeps refused pod templates out of managed Deployments: the reconcile passes every
    object it is about to apply through `guard` (`Controller.template_guard`)."""

    def __init__(self, kube: KubeClient, memory: RolloutMemory) -> None:
        self.kube = kube
        self.memory = memory

    async def guard(self, obj: JsonDict) -> JsonDict:
        """`obj`, or a managed Deployment with the last-known-good template in place of a
        template the rollout refused."""
        if obj.get("kind") != "Deployment" or _managed_name(obj) is None:
            return obj
        meta = obj["metadata"]
        namespace, name = str(meta.get("namespace")), str(_managed_name(obj))
        memo = self.memory.memos.get((namespace, name))
        if memo is None:
            try:
                body = await self.kube.get(LLM_DEPLOYMENTS, namespace, name)
            except NotFoundError:
                return obj
            memo = self.memory.remember(namespace, name, body)
        guarded, refused = guard_template(obj, memo)
        if refused is not None:
            logger.warning(
                "%s/%s: template %s was rolled back; keeping the last-known-good %s",
                namespace,
                name,
                refused,
                memo.last_known_good[0] if memo.last_known_good else None,
            )
        return guarded


async def restore_template(
    kube: KubeClient, namespace: str, name: str, template: Mapping[str, Any]
) -> None:
    """Put the last-known-good pod template back on the Deployment (a rolling update)."""
    await kube.patch_merge(DEPLOYMENTS, namespace, name, {"spec": {"template": dict(template)}})


def _managed_name(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
        return None
    value = labels.get(LABEL_DEPLOYMENT)
    return str(value) if value else None
