"""Live KV calibration inside the operator: the engines' pool beside the plan, and the
cluster-wide record new plans read first (docs/adr/0013).

- The reconcile plans through `CalibrationRecord.lookup` (a tuple the cluster has seen live is
  planned from the observed non-KV overhead) and writes the planned half of
  `status.calibration`.
- Each autoscaler tick hands the engines' pool (`vllm:cache_config_info{num_gpu_blocks,
  block_size}`, smallest pod) to `step_calibration`, which fills the live half, names the
  drift in the `KvCalibrated` condition and, past `spec.kvCache.calibrationTolerance` and only
  while every pod runs the current plan, returns the record entry to write. The next reconcile
  then plans from it: safe concurrency, the KV capacity the autoscaler scales against and any
  flag that depends on them follow the live pool; a pod-template change bakes under the
  rollback guardrails like any other.

A missing or NaN pool leaves status and record as they are; a record that cannot be read keeps
the last good read (so plans do not flip back to the model on an API hiccup); one that cannot
be written is reported in the condition, never raised.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError

from kvscale.api.base import StatusModel
from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.status_calibration import CalibrationKeyStatus
from kvscale.api.vocabulary import CalibrationReason, ConditionType
from kvscale.capacity import GIB
from kvscale.capacity.calibration import CalibrationKey, LivePool, PoolBasis
from kvscale.controller.conditions import FALSE, TRUE, ConditionUpdate
from kvscale.controller.events import EventNote
from kvscale.controller.kube import CONFIGMAPS, KubeClient, KubeError, NotFoundError
from kvscale.controller.settings import CalibrationSettings

JsonDict = dict[str, Any]
KV_CALIBRATED = ConditionType.KV_CALIBRATED
LIVE_POOL_MATCHES_PLAN = CalibrationReason.LIVE_POOL_MATCHES_PLAN
KV_DRIFT = CalibrationReason.KV_DRIFT
logger = logging.getLogger(__name__)


class RecordEntry(StatusModel):
    """One tuple's observation in the calibration ConfigMap (a JSON value per data key)."""

    key: CalibrationKeyStatus
    observed_non_kv_bytes: int = Field(gt=0)
    live_num_blocks: int = Field(ge=0)
    live_block_size_tokens: int = Field(ge=1)
    modelled_non_kv_bytes: int = Field(ge=0)
    observed_time: datetime
    source: str = Field(default="", max_length=512)  # namespace/name that observed it

    def matches(self, key: CalibrationKey) -> bool:
        k = self.key
        return (
            k.engine,
            k.engine_version,
            k.model,
            k.gpu_type,
            k.tensor_parallel,
            k.sampler_path,
            k.max_num_batched_tokens,
            k.max_num_seqs,
        ) == (
            key.engine,
            key.engine_version,
            key.model,
            key.gpu_type,
            key.tensor_parallel,
            key.sampler_path,
            key.max_num_batched_tokens,
            key.max_num_seqs,
        )


def parse_record(data: Mapping[str, Any] | None) -> dict[str, RecordEntry]:
    """The ConfigMap's entries; a value that is not a valid entry is skipped (and logged)."""
    entries: dict[str, RecordEntry] = {}
    for name, raw in (data or {}).items():
        try:
            entries[str(name)] = RecordEntry.model_validate(json.loads(str(raw)))
        except (ValueError, ValidationError) as error:
            logger.warning("calibration record: entry %s ignored: %s", name, str(error)[:200])
    return entries


@dataclass
class CalibrationRecord:
    """The cluster-wide record: read at most once per `refresh_s`, written per entry."""

    kube: KubeClient
    settings: CalibrationSettings
    clock: Callable[[], float] = time.monotonic
    entries: dict[str, RecordEntry] = field(default_factory=dict)
    _read_at: float | None = None

    async def refresh(self) -> None:
        """Re-read when stale; on an API error keep the last good entries."""
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.settings.refresh_s:
            return
        try:
            configmap = await self.kube.get(
                CONFIGMAPS, self.settings.namespace, self.settings.configmap
            )
        except NotFoundError:
            self.entries, self._read_at = {}, now
            return
        except KubeError as error:
            logger.warning("calibration record unreadable, using the last read: %s", error)
            return
        self.entries, self._read_at = parse_record(configmap.get("data")), now

    def lookup(self, key: CalibrationKey) -> int | None:
        """Observed non-KV bytes for exactly this tuple (None: not seen live)."""
        entry = self.entries.get(key.record_key())
        return entry.observed_non_kv_bytes if entry is not None and entry.matches(key) else None

    def recorded_bytes(self, record_key: str) -> int | None:
        """What the last read or write holds under `record_key` (None: nothing)."""
        entry = self.entries.get(record_key)
        return None if entry is None else entry.observed_non_kv_bytes

    async def write(self, record_key: str, entry: RecordEntry) -> str | None:
        """Merge one entry into the ConfigMap (created on first use); an error comes back as
        text for the condition, never raised."""
        value = json.dumps(
            entry.model_dump(by_alias=True, mode="json"), separators=(",", ":"), sort_keys=True
        )
        namespace, name = self.settings.namespace, self.settings.configmap
        try:
            try:
                await self.kube.patch_merge(
                    CONFIGMAPS, namespace, name, {"data": {record_key: value}}
                )
            except NotFoundError:
                await self.kube.create(_configmap(namespace, name, {record_key: value}))
        except KubeError as error:
            return f"ConfigMap {namespace}/{name}: {error}"
        self.entries[record_key] = entry
        return None


def _configmap(namespace: str, name: str, data: dict[str, str]) -> JsonDict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kvscale"},
        },
        "data": data,
    }


# --- one tick ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationStep:
    """What one tick's live pool means: the live half of status, the condition, and the entry
    to record (None: within tolerance, already recorded, or not settled)."""

    status: JsonDict
    condition: ConditionUpdate
    record_key: str | None = None
    entry: RecordEntry | None = None
    event: EventNote | None = None
    drift: str = ""  # the drift, with the numbers (the condition message without its outcome)

    def not_recorded(self, why: str) -> CalibrationStep:
        """This step when the entry is not (or could not be) written: said in the condition,
        no Event, no record time."""
        status = {k: v for k, v in self.status.items() if k != "recordedTime"}
        condition = replace(self.condition, message=f"{self.drift}; not recorded: {why}"[:4096])
        return CalibrationStep(status, condition, drift=self.drift)


def basis_of(calibration: Mapping[str, Any]) -> PoolBasis | None:
    """The planned half of status.calibration as a `PoolBasis` (None: absent or malformed)."""
    try:
        requested = calibration.get("requestedBytes")
        return PoolBasis(
            planned_num_blocks=int(calibration["plannedNumBlocks"]),
            planned_kv_tokens=int(calibration["plannedKvTokens"]),
            block_size_tokens=int(calibration["plannedBlockSizeTokens"]),
            kv_bytes_per_block=int(calibration["kvBytesPerBlock"]),
            requested_bytes=None if requested is None else int(requested),
        )
    except (KeyError, TypeError, ValueError):
        return None


def unsettled_reason(
    spec: LLMDeploymentSpec, deployment: Mapping[str, Any], status: Mapping[str, Any]
) -> str | None:
    """Why the engines' pool cannot stand for the current plan yet (None: it can)."""
    if spec.mode != "managed":
        return "adopt mode: the engines' flags are the adopted Deployment's, not the plan's"
    meta, dspec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    dstatus = deployment.get("status") or {}
    want = int(dspec.get("replicas") or 0)
    counts = [int(dstatus.get(k) or 0) for k in ("replicas", "updatedReplicas", "readyReplicas")]
    observed = dstatus.get("observedGeneration")  # absent: nothing says it lags
    generation_seen = observed is None or int(observed) >= int(meta.get("generation") or 0)
    if not generation_seen or any(count != want for count in counts):
        return "a rollout is in progress"
    containers = ((dspec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    if list(containers[0].get("args") or []) != list(status.get("engineArgs") or []):
        return "the pods do not run the current plan's engine args"
    return None


def _gib(n_bytes: int | None) -> str:
    return "unknown" if n_bytes is None else f"{n_bytes / GIB:.2f} GiB"


def _observed_note(calibration: Mapping[str, Any]) -> str:
    if calibration.get("nonKvSource") != "observed":
        return ""
    return (
        f"; planned from the non-KV overhead observed live"
        f" ({_gib(calibration.get('plannedNonKvBytes'))}, the model estimates"
        f" {_gib(calibration.get('modelledNonKvBytes'))}: it alone would plan"
        f" {int(calibration.get('modelledKvTokens') or 0):,} tokens)"
    )


def step_calibration(
    spec: LLMDeploymentSpec,
    calibration: Mapping[str, Any],
    live: LivePool,
    *,
    unsettled: str | None,
    recorded: int | None,
    source: str,
    now: datetime,
) -> CalibrationStep | None:
    """The live half of status.calibration, the condition and any entry to record (pure).

    `recorded` is what the record holds for the tuple now (None: nothing); an entry equal to
    it is not written again. None when status has no planned half to compare with.
    """
    basis = basis_of(calibration)
    if basis is None or live.num_blocks <= 0 or live.block_size_tokens <= 0:
        return None
    drift = basis.drift_fraction(live)
    if drift is None:
        return None
    implied = basis.implied_non_kv_bytes(live)
    live_tokens = basis.live_kv_tokens(live)
    status: JsonDict = {
        "liveNumBlocks": live.num_blocks,
        "liveBlockSizeTokens": live.block_size_tokens,
        "liveKvTokens": live_tokens,
        "impliedNonKvBytes": implied,
        "driftFraction": round(drift, 6),
        "observedTime": now.isoformat(),
    }
    tolerance = spec.kv_cache.calibration_tolerance
    within = f"{tolerance * 100:g}%"
    key = _key_of(calibration)
    figures = (
        f"live {live.num_blocks:,} blocks ({live_tokens:,} tokens) vs planned"
        f" {basis.planned_num_blocks:,} ({basis.planned_kv_tokens:,} tokens)"
    )
    if abs(drift) <= tolerance:
        message = f"{figures}: {drift:+.1%}, within {within}{_observed_note(calibration)}"
        return CalibrationStep(
            status, ConditionUpdate(KV_CALIBRATED, TRUE, LIVE_POOL_MATCHES_PLAN, message)
        )
    side = "below" if drift < 0 else "above"
    message = (
        f"live KV pool {live.num_blocks:,} blocks ({live_tokens:,} tokens) is {abs(drift):.1%}"
        f" {side} the plan's {basis.planned_num_blocks:,} blocks ({basis.planned_kv_tokens:,}"
        f" tokens) on {key.gpu_type if key else '?'} (tolerance {within});"
        f" implied non-KV overhead {_gib(implied)} vs"
        f" {_gib(calibration.get('plannedNonKvBytes'))} planned"
    )
    record_key = str(calibration.get("recordKey") or "")
    text = f"{message}; recorded as {record_key}: this and new deployments of it plan from it"
    drifted = CalibrationStep(
        status, ConditionUpdate(KV_CALIBRATED, FALSE, KV_DRIFT, text[:4096]), drift=message
    )
    if unsettled is not None:
        return drifted.not_recorded(unsettled)
    if implied is None:
        return drifted.not_recorded("the pool is pinned (kvCacheMemoryBytes): it implies nothing")
    if implied <= 0:
        return drifted.not_recorded("the implied overhead is not positive: a report off the plan")
    if not record_key or key is None:
        return drifted.not_recorded("status.calibration names no tuple to share it under")
    if recorded == implied:
        return drifted
    entry = RecordEntry(
        key=key,
        observed_non_kv_bytes=implied,
        live_num_blocks=live.num_blocks,
        live_block_size_tokens=live.block_size_tokens,
        modelled_non_kv_bytes=max(0, int(calibration.get("modelledNonKvBytes") or 0)),
        observed_time=now,
        source=source,
    )
    event = EventNote("Warning" if drift < 0 else "Normal", KV_DRIFT, text[:1024])
    status["recordedTime"] = now.isoformat()
    return replace(drifted, record_key=record_key, entry=entry, event=event)


def _key_of(calibration: Mapping[str, Any]) -> CalibrationKeyStatus | None:
    raw = calibration.get("key")
    try:
        return CalibrationKeyStatus.model_validate(raw) if isinstance(raw, Mapping) else None
    except ValidationError:
        return None
