"""Leader election on a coordination.k8s.io/v1 Lease: of several replicas, exactly one acts.

The protocol is client-go's `leaderelection` (the one kube-controller-manager uses):

- every `retry_period_s` a replica reads the Lease. It takes the Lease only when it is free
  (no holder) or expired: unchanged for `lease_duration_s` *as measured on this replica's own
  monotonic clock since it first saw that version* (the `renewTime` written by another host is
  never compared with the local wall clock, so clock skew cannot shorten a lease);
- writes carry the `resourceVersion` they were based on, so of two standbys racing for an
  expired Lease the API server lets exactly one win (the other gets 409 Conflict);
- the leader renews every `retry_period_s`; if no renew has succeeded for `renew_deadline_s`
  (counted from when the last successful renew was *sent*) it stops leading. Because
  renew_deadline_s < lease_duration_s, it stops before any standby may take over;
- a leader that stops cleanly releases the Lease (empty holder, 1 s duration) so a standby
  takes over within one retry period instead of a whole lease duration.

`LeaderElector` is the state machine (clock injected: the unit tests drive it with a fake
clock); `LeaseStore` is its only I/O. `LeaderGuardKube` fences the operator's own writes:
once the elector no longer holds a valid lease every write is refused locally, so a handler
still running at step-down cannot scale or apply. docs/adr/0007-leader-election.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from kvscale.controller.kube import (
    LEASES,
    ConflictError,
    JsonDict,
    KubeClient,
    KubeError,
    NotFoundError,
    ResourceRef,
)
from kvscale.controller.settings import LeaderElectionSettings

logger = logging.getLogger(__name__)
Clock = Callable[[], float]
WallClock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
JITTER = 1.2  # retries wait retry_period_s × U(1, 1.2), as client-go's wait.JitterUntil
RELEASED_DURATION_S = 1  # a released Lease: any replica may take it after one second


class Role(StrEnum):
    """What this replica is doing (served on /readyz and as the `kvscale_leader` gauge)."""

    STANDBY = "standby"
    LEADER = "leader"


class NotLeaderError(KubeError):
    """A write attempted after this replica stopped holding the lease (fenced locally)."""


def default_identity(settings: LeaderElectionSettings) -> str:
    """The pod name when the chart set POD_NAME, else host name plus a random suffix."""
    return settings.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def format_micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec, and the version they were read at."""

    holder: str = ""
    lease_duration_s: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str = ""

    @classmethod
    def from_lease(cls, lease: JsonDict) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_s=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def spec(self) -> JsonDict:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }

    def same_term(self, other: LeaseRecord | None) -> bool:
        """Same holder and renew: nothing happened since `other` was read."""
        if other is None:
            return False
        return (self.holder, self.renew_time, self.resource_version) == (
            other.holder,
            other.renew_time,
            other.resource_version,
        )


class LeaseStore:
    """Reads and writes one Lease; writes are conditional on the version they were based on."""

    def __init__(self, kube: KubeClient, namespace: str, name: str) -> None:
        self._kube, self.namespace, self.name = kube, namespace, name

    async def read(self) -> LeaseRecord | None:
        try:
            return LeaseRecord.from_lease(await self._kube.get(LEASES, self.namespace, self.name))
        except NotFoundError:
            return None

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease; ConflictError when another replica created it first."""
        lease = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.spec(),
        }
        return LeaseRecord.from_lease(await self._kube.create(lease))

    async def write(self, record: LeaseRecord, based_on: LeaseRecord) -> LeaseRecord:
        """Replace the election fields if the Lease is still at `based_on`'s version.

        A merge patch that carries `metadata.resourceVersion` is a precondition for the API
        server: a Lease changed since it was read answers 409 Conflict (patch, not update:
        the RBAC stays at get/create/patch).
        """
        patch = {"metadata": {"resourceVersion": based_on.resource_version}, "spec": record.spec()}
        lease = await self._kube.patch_merge(LEASES, self.namespace, self.name, patch)
        return LeaseRecord.from_lease(lease)


@dataclass
class LeaderElector:
    """The election state machine of one replica (clocks injected for tests)."""

    store: LeaseStore
    settings: LeaderElectionSettings
    identity: str
    clock: Clock  # monotonic seconds
    wall_clock: WallClock = lambda: datetime.now(UTC)
    sleep: Sleep = asyncio.sleep
    observed: LeaseRecord | None = None
    observed_at_s: float = 0.0  # when `observed` was first seen, on `clock`
    renewed_at_s: float | None = None  # when the last successful acquire/renew was sent
    api_ok_at_s: float | None = None  # last time the API answered us (readiness)
    stopping: threading.Event = field(default_factory=threading.Event)  # ends `hold`

    @property
    def role(self) -> Role:
        return Role.LEADER if self.is_leading() else Role.STANDBY

    def is_leading(self) -> bool:
        """Holding a lease that no standby can have taken yet (the write fence)."""
        if self.renewed_at_s is None:
            return False
        return self.clock() - self.renewed_at_s < self.settings.renew_deadline_s

    def _observe(self, record: LeaseRecord | None, now_s: float) -> None:
        if record is None or not record.same_term(self.observed):
            self.observed, self.observed_at_s = record, now_s

    def _held_by_other(self, record: LeaseRecord, now_s: float) -> bool:
        if not record.holder or record.holder == self.identity:
            return False
        return now_s < self.observed_at_s + record.lease_duration_s

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the lease afterwards."""
        sent_s = self.clock()
        now = format_micro_time(self.wall_clock())
        try:
            current = await self.store.read()
            self.api_ok_at_s = self.clock()
            self._observe(current, sent_s)
            if current is None:
                mine = LeaseRecord(self.identity, self.settings.lease_duration_s, now, now)
                written = await self.store.create(mine)
            elif self._held_by_other(current, sent_s):
                return False
            else:
                ours = current.holder == self.identity
                mine = replace(
                    current,
                    holder=self.identity,
                    lease_duration_s=self.settings.lease_duration_s,
                    acquire_time=current.acquire_time if ours else now,
                    renew_time=now,
                    transitions=current.transitions + (0 if ours else 1),
                )
                written = await self.store.write(mine, based_on=current)
        except ConflictError:
            return False  # another replica wrote first; read again next round
        except KubeError as error:
            logger.warning("lease %s: %s", self.store.name, error)
            return False
        self.api_ok_at_s = self.clock()
        self.observed, self.observed_at_s, self.renewed_at_s = written, sent_s, sent_s
        return True

    def _jittered_period_s(self) -> float:
        return self.settings.retry_period_s * random.uniform(1.0, JITTER)

    async def acquire(self) -> None:
        """Return once this replica is the leader (retries forever; cancel to give up)."""
        logger.info("standing by for lease %s/%s", self.store.namespace, self.store.name)
        while not await self.try_acquire_or_renew():
            await self.sleep(self._jittered_period_s())
        logger.info(
            "acquired lease %s/%s as %s", self.store.namespace, self.store.name, self.identity
        )

    async def hold(self) -> bool:
        """Renew until a renew deadline passes without success (True: leadership lost) or
        `stopping` is set (False).

        Runs on its own thread and event loop (`hold_in_thread`) in the operator, so CPU-bound
        work on the main loop (planning) cannot delay a renew past the deadline.
        """
        while not self.stopping.is_set():
            await self.sleep(self.settings.retry_period_s)
            remaining_s = self.settings.renew_deadline_s - (self.clock() - (self.renewed_at_s or 0))
            if remaining_s <= 0:
                break
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), remaining_s)
            except TimeoutError:
                renewed = False
            if not renewed and not self.is_leading():
                break
        else:
            return False
        logger.error(
            "lost lease %s/%s: no renew within %s s",
            self.store.namespace,
            self.store.name,
            self.settings.renew_deadline_s,
        )
        self.renewed_at_s = None
        return True

    async def hold_in_thread(self) -> bool:
        """`hold` on a dedicated thread with its own event loop; True when the lease was lost."""
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kvscale-elect") as pool:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, asyncio.run, self.hold())

    async def release(self) -> None:
        """Give the lease up at a clean stop so a standby takes over at its next retry."""
        if not self.is_leading() or self.observed is None:
            return
        self.renewed_at_s = None
        released = replace(
            self.observed,
            holder="",
            lease_duration_s=RELEASED_DURATION_S,
            renew_time=format_micro_time(self.wall_clock()),
        )
        try:
            await self.store.write(released, based_on=self.observed)
        except KubeError as error:  # the lease then simply expires
            logger.warning("could not release lease %s: %s", self.store.name, error)
            return
        logger.info("released lease %s/%s", self.store.namespace, self.store.name)


class LeaderGuardKube:
    """A `KubeClient` whose writes are refused unless `elector` holds a valid lease.

    Reads pass through. The check is local and immediate, so a reconcile or a scaling tick
    that is still running when the lease is lost fails its next write instead of racing the
    new leader (what remains is a request already on the wire: see ADR 0007).
    """

    def __init__(self, inner: KubeClient, elector: LeaderElector) -> None:
        self._inner, self._elector = inner, elector

    def _check(self, what: str) -> None:
        if not self._elector.is_leading():
            raise NotLeaderError(f"{what} refused: this replica does not hold the lease")

    async def apply(self, obj: JsonDict, *, field_manager: str = "kvscale") -> JsonDict:
        self._check(f"apply of {obj.get('kind')}")
        return await self._inner.apply(obj, field_manager=field_manager)

    async def create(self, obj: JsonDict) -> JsonDict:
        self._check(f"create of {obj.get('kind')}")
        return await self._inner.create(obj)

    async def delete(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        self._check(f"delete of {ref.kind}")
        await self._inner.delete(ref, namespace, name)

    async def patch_merge(
        self,
        ref: ResourceRef,
        namespace: str | None,
        name: str,
        patch: JsonDict,
        subresource: str | None = None,
    ) -> JsonDict:
        self._check(f"patch of {ref.kind}")
        return await self._inner.patch_merge(ref, namespace, name, patch, subresource)

    async def get(self, ref: ResourceRef, namespace: str | None, name: str) -> JsonDict:
        return await self._inner.get(ref, namespace, name)

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        return await self._inner.has_resource(group, version, plural)
