"""Live calibration in the operator: one tick's judgement, the record, and plans that read it."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from kvscale.api.calibration import key_of
from kvscale.api.convert import plan_deployment
from kvscale.api.models import LLMDeploymentSpec
from kvscale.capacity.calibration import LivePool
from kvscale.controller import kube
from kvscale.controller.autoscaler import Autoscaler
from kvscale.controller.calibration import (
    KV_CALIBRATED,
    KV_DRIFT,
    LIVE_POOL_MATCHES_PLAN,
    CalibrationRecord,
    RecordEntry,
    parse_record,
    step_calibration,
    unsettled_reason,
)
from kvscale.controller.conditions import ConditionUpdate
from kvscale.controller.desired import compute_desired
from kvscale.controller.settings import CalibrationSettings, Settings
from samples import llama8b_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = LLMDeploymentSpec.model_validate(llama8b_spec("l4"))
RECORD = CalibrationSettings(namespace="kvscale-system", configmap="kvscale-calibration")


def planned_half(spec: LLMDeploymentSpec = SPEC, lookup: Any = None) -> dict[str, Any]:
    """status.calibration as the reconcile writes it for `spec`."""
    result = plan_deployment(spec, None, lookup)
    assert result.calibration is not None
    return result.calibration.model_dump(by_alias=True, exclude_none=True, mode="json")


def short_pool(calibration: dict[str, Any], fraction: float) -> LivePool:
    blocks = int(calibration["plannedNumBlocks"] * fraction)
    return LivePool(blocks, calibration["plannedBlockSizeTokens"])


def step(calibration: dict[str, Any], live: LivePool, **kw: Any) -> Any:
    args: dict[str, Any] = {"unsettled": None, "recorded": None, "source": "ns/chat", "now": NOW}
    return step_calibration(SPEC, calibration, live, **(args | kw))


def test_a_pool_within_tolerance_matches_and_records_nothing() -> None:
    calibration = planned_half()
    result = step(calibration, short_pool(calibration, 0.99))
    assert result.condition.type == KV_CALIBRATED
    assert (result.condition.status, result.condition.reason) == ("True", LIVE_POOL_MATCHES_PLAN)
    assert result.entry is None and result.event is None
    one_block = 1 / calibration["plannedNumBlocks"]
    assert result.status["driftFraction"] == pytest.approx(-0.01, abs=one_block)


def test_a_pool_ten_percent_short_names_the_drift_and_records_the_overhead() -> None:
    calibration = planned_half()
    live = short_pool(calibration, 0.9)
    result = step(calibration, live)
    assert (result.condition.status, result.condition.reason) == ("False", KV_DRIFT)
    planned = calibration["plannedNumBlocks"]
    assert f"is 10.0% below the plan's {planned:,} blocks" in result.condition.message
    assert result.record_key == calibration["recordKey"]
    entry = result.entry
    assert entry is not None
    # the overhead grew by the blocks the engine lacks, to within one block
    missing = (planned - live.num_blocks) * calibration["kvBytesPerBlock"]
    grown = entry.observed_non_kv_bytes - calibration["plannedNonKvBytes"]
    assert missing <= grown < missing + calibration["kvBytesPerBlock"]
    assert result.status["impliedNonKvBytes"] == entry.observed_non_kv_bytes
    assert result.status["liveKvTokens"] == live.num_blocks * live.block_size_tokens
    assert result.event is not None and result.event.type == "Warning"
    assert result.status["recordedTime"] == NOW.isoformat()


def test_a_pool_above_the_plan_is_recorded_with_a_normal_event() -> None:
    calibration = planned_half()
    result = step(calibration, short_pool(calibration, 1.2))
    assert "above the plan's" in result.condition.message
    assert result.entry is not None
    assert result.event is not None and result.event.type == "Normal"


def test_an_overhead_already_recorded_is_not_written_again() -> None:
    calibration = planned_half()
    live = short_pool(calibration, 0.9)
    first = step(calibration, live)
    again = step(calibration, live, recorded=first.entry.observed_non_kv_bytes)
    assert again.condition == first.condition
    assert again.entry is None and again.event is None


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"unsettled": "a rollout is in progress"}, "a rollout is in progress"),
        ({"pinned": True}, "the pool is pinned"),
        ({"no_key": True}, "status.calibration names no tuple"),
        ({"garbage_key": True}, "status.calibration names no tuple"),
    ],
)
def test_drift_that_cannot_stand_for_the_plan_is_shown_not_recorded(
    edit: dict[str, Any], why: str
) -> None:
    calibration = planned_half()
    if edit.pop("pinned", False):
        del calibration["requestedBytes"]
    if edit.pop("no_key", False):
        del calibration["key"]
    if edit.pop("garbage_key", False):
        calibration["key"] = "l4"
    result = step(calibration, short_pool(calibration, 0.8), **edit)
    assert result.condition.reason == KV_DRIFT
    assert f"not recorded: {why}" in result.condition.message
    assert result.entry is None and result.event is None


@pytest.mark.parametrize(
    "live", [LivePool(0, 16), LivePool(100, 0)], ids=["no blocks", "no block size"]
)
def test_an_empty_report_changes_nothing(live: LivePool) -> None:
    assert step(planned_half(), live) is None


def test_a_status_without_the_planned_half_changes_nothing() -> None:
    calibration = planned_half()
    del calibration["plannedNumBlocks"]
    assert step(calibration, LivePool(100, 16)) is None


def deployment(args: list[str], **status: int) -> dict[str, Any]:
    counts = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2} | status
    return {
        "metadata": {"generation": 4},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"args": args}]}}},
        "status": {"observedGeneration": 4, **counts},
    }


def test_only_a_settled_workload_on_the_current_plan_stands_for_it() -> None:
    args = ["--max-model-len", "8192"]
    status = {"engineArgs": args}
    assert unsettled_reason(SPEC, deployment(args), status) is None
    rolling = deployment(args, updatedReplicas=1)
    assert unsettled_reason(SPEC, rolling, status) == "a rollout is in progress"
    lagging = deployment(args)
    lagging["status"]["observedGeneration"] = 3
    assert unsettled_reason(SPEC, lagging, status) == "a rollout is in progress"
    other = unsettled_reason(SPEC, deployment(["--max-model-len", "4096"]), status)
    assert other is not None and "engine args" in other
    adopt = SPEC.model_copy(update={"mode": "adopt"})
    reason = unsettled_reason(adopt, deployment(args), status)
    assert reason is not None and reason.startswith("adopt mode")


# --- the record ---------------------------------------------------------------------------------


class ConfigMapKube:
    """Just enough of a KubeClient for one ConfigMap: get, merge patch, create; errors on demand."""

    def __init__(self) -> None:
        self.configmap: dict[str, Any] | None = None
        self.fail: kube.KubeError | None = None
        self.calls: list[str] = []

    async def get(self, ref: kube.ResourceRef, namespace: str | None, name: str) -> dict[str, Any]:
        self.calls.append("get")
        if self.fail is not None:
            raise self.fail
        if self.configmap is None:
            raise kube.NotFoundError("not found", 404)
        return copy.deepcopy(self.configmap)

    async def patch_merge(
        self,
        ref: kube.ResourceRef,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("patch")
        if self.fail is not None:
            raise self.fail
        if self.configmap is None:
            raise kube.NotFoundError("not found", 404)
        self.configmap["data"].update(patch["data"])
        return self.configmap

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        self.configmap = copy.deepcopy(obj)
        return obj


def entry_for(calibration: dict[str, Any], fraction: float) -> tuple[str, RecordEntry]:
    result = step(calibration, short_pool(calibration, fraction))
    assert result.entry is not None and result.record_key is not None
    return result.record_key, result.entry


async def test_the_record_is_created_then_merged_and_read_back() -> None:
    client = ConfigMapKube()
    record = CalibrationRecord(client, RECORD, clock=lambda: 0.0)  # type: ignore[arg-type]
    await record.refresh()
    assert record.entries == {}
    calibration = planned_half()
    key, entry = entry_for(calibration, 0.9)
    assert await record.write(key, entry) is None
    assert client.calls[-2:] == ["patch", "create"]  # absent: created on first use
    assert client.configmap is not None
    assert client.configmap["metadata"]["namespace"] == "kvscale-system"
    stored = json.loads(client.configmap["data"][key])
    assert stored["observedNonKvBytes"] == entry.observed_non_kv_bytes
    other = planned_half(SPEC.model_copy(update={"max_context_length": 4096}))
    other_key, other_entry = entry_for(other, 0.95)
    if other_key != key:
        assert await record.write(other_key, other_entry) is None
        assert client.calls[-1] == "patch"
    fresh = CalibrationRecord(client, RECORD)  # type: ignore[arg-type]
    await fresh.refresh()
    assert fresh.entries[key] == entry


async def test_an_unreadable_record_keeps_the_last_good_read() -> None:
    client = ConfigMapKube()
    now = [0.0]
    record = CalibrationRecord(client, RECORD, clock=lambda: now[0])  # type: ignore[arg-type]
    key, entry = entry_for(planned_half(), 0.9)
    await record.write(key, entry)
    await record.refresh()
    assert key in record.entries
    now[0] = 1000.0
    client.fail = kube.ForbiddenError("configmaps is forbidden", 403)
    await record.refresh()
    assert key in record.entries  # plans do not flip back to the model on an API error
    failure = await record.write(key, entry)
    assert failure is not None and "forbidden" in failure


def test_bad_entries_are_skipped_and_a_lookup_needs_the_whole_tuple() -> None:
    calibration = planned_half()
    key, entry = entry_for(calibration, 0.9)
    data = {
        key: json.dumps(entry.model_dump(by_alias=True, mode="json")),
        "broken": "{not json",
        "negative": json.dumps(
            {**entry.model_dump(by_alias=True, mode="json"), "observedNonKvBytes": -5}
        ),
    }
    entries = parse_record(data)
    assert set(entries) == {key}
    record = CalibrationRecord(ConfigMapKube(), RECORD)  # type: ignore[arg-type]
    record.entries = entries
    plan = plan_deployment(SPEC).selected_capacity_plan()
    assert plan is not None
    tuple_key = key_of(SPEC, plan, "meta-llama/Llama-3.1-8B-Instruct")
    assert tuple_key is not None
    assert record.lookup(tuple_key) == entry.observed_non_kv_bytes
    # an entry stored under this key but for another tuple (a hash or naming collision): unused
    record.entries[key] = entry.model_copy(
        update={"key": entry.key.model_copy(update={"tensor_parallel": 2})}
    )
    assert record.lookup(tuple_key) is None


# --- plans that read the record -------------------------------------------------------------------


def test_a_recorded_tuple_is_planned_from_the_observed_overhead() -> None:
    calibration = planned_half()
    live = short_pool(calibration, 0.9)
    key, entry = entry_for(calibration, 0.9)
    observed = {key: entry.observed_non_kv_bytes}
    result = plan_deployment(SPEC, None, lambda k: observed.get(k.record_key()))
    (plan,) = result.plans
    assert plan.observed_non_kv_bytes == entry.observed_non_kv_bytes
    assert plan.num_blocks == live.num_blocks
    assert plan.modelled_kv_cache_tokens == calibration["plannedKvTokens"]
    assert plan.safe_concurrency <= plan_deployment(SPEC).plans[0].safe_concurrency
    assert result.calibration is not None
    assert result.calibration.non_kv_source == "observed"
    assert result.calibration.modelled_non_kv_bytes == calibration["modelledNonKvBytes"]
    # the flags do not depend on the pool: nothing to roll out for this change
    assert result.engine_args == plan_deployment(SPEC).engine_args
    # another batch shape is another tuple: planned from the model
    other = SPEC.model_copy(update={"engine": SPEC.engine.model_copy(update={"max_num_seqs": 64})})
    assert (
        plan_deployment(other, None, lambda k: observed.get(k.record_key()))
        .plans[0]
        .observed_non_kv_bytes
        is None
    )


def test_the_reconcile_writes_the_planned_half() -> None:
    meta = {"name": "chat", "namespace": "ns", "uid": "u"}
    desired = compute_desired(meta, llama8b_spec("l4"), Settings(), None, lambda k: None)
    calibration = desired.status["calibration"]
    assert calibration["nonKvSource"] == "model"
    assert calibration["plannedNumBlocks"] == desired.status["plans"][0]["numBlocks"]
    assert "liveNumBlocks" not in calibration  # the live half is the autoscaler's


def test_conditions_written_twice_in_one_tick_keep_both() -> None:
    """The calibration condition and a scaling condition of the same tick both reach status."""
    autoscaler = Autoscaler.__new__(Autoscaler)  # only the clock is used
    autoscaler.clock = NOW.timestamp
    body: dict[str, Any] = {"metadata": {"generation": 1}, "status": {"conditions": []}}
    patch = kopf.Patch()
    autoscaler._write_conditions(body, patch, [ConditionUpdate("ScalingActive", "True", "Acting")])
    drift = ConditionUpdate(KV_CALIBRATED, "False", KV_DRIFT, "live 9 vs planned 10")
    autoscaler._write_conditions(body, patch, [drift])
    written = {c["type"]: c["reason"] for c in patch["status"]["conditions"]}
    assert written["ScalingActive"] == "Acting"
    assert written[KV_CALIBRATED] == KV_DRIFT
