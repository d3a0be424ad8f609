"""Leader election state machine (kvscale.controller.leader) on a fake clock and a fake Lease API.

The fake API keeps one Lease with a resourceVersion that every write bumps and that a write's
`metadata.resourceVersion` must match (409 otherwise), as the API server does.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from kvscale.controller.kube import LEASES, ConflictError, NotFoundError, ResourceRef
from kvscale.controller.leader import (
    LeaderElector,
    LeaderGuardKube,
    LeaseStore,
    NotLeaderError,
    Role,
)
from kvscale.controller.settings import (
    LeaderElectionSettings,
    SettingsError,
    load_leader_election,
)

SETTINGS = LeaderElectionSettings(lease_namespace="ops")


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.now_s += seconds
        await asyncio.sleep(0)


class FakeLeaseApi:
    """get / create / merge-patch of Leases with resourceVersion preconditions."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.failing = False
        self.writes: list[str] = []  # holderIdentity of every successful write

    def _check(self) -> None:
        if self.failing:
            from kvscale.controller.kube import UnavailableError

            raise UnavailableError("HTTP 503: apiserver down", 503)

    def _bump(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(lease["spec"]["holderIdentity"])
        return copy.deepcopy(lease)

    async def get(self, ref: ResourceRef, namespace: str | None, name: str) -> dict[str, Any]:
        self._check()
        await asyncio.sleep(0)  # let a competing replica read the same version
        if name not in self.leases:
            raise NotFoundError("HTTP 404", 404)
        return copy.deepcopy(self.leases[name])

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._check()
        name = obj["metadata"]["name"]
        if name in self.leases:
            raise ConflictError("HTTP 409: already exists", 409)
        self.leases[name] = copy.deepcopy(obj)
        return self._bump(self.leases[name])

    async def patch_merge(
        self,
        ref: ResourceRef,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self._check()
        lease = self.leases[name]
        expected = patch.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != lease["metadata"]["resourceVersion"]:
            raise ConflictError("HTTP 409: the object has been modified", 409)
        lease["spec"].update(patch["spec"])
        return self._bump(lease)

    async def apply(self, obj: dict[str, Any], *, field_manager: str = "kvscale") -> Any:
        return obj

    async def delete(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        return None

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        return True


def elector(
    api: FakeLeaseApi,
    identity: str,
    clock: FakeClock,
    settings: LeaderElectionSettings = SETTINGS,
) -> LeaderElector:
    store = LeaseStore(api, settings.lease_namespace, settings.lease_name)  # type: ignore[arg-type]
    return LeaderElector(store, settings, identity, clock, sleep=clock.sleep)


def test_first_replica_creates_the_lease_and_the_other_stands_by() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)

    async def scenario() -> None:
        assert await a.try_acquire_or_renew()
        for _ in range(20):  # a renews every retry period; b never gets it
            clock.now_s += SETTINGS.retry_period_s
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()

    asyncio.run(scenario())
    assert (a.role, b.role) == (Role.LEADER, Role.STANDBY)
    spec = api.leases["kvscale"]["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert set(api.writes) == {"pod-a"}


def test_a_standby_takes_an_expired_lease_only_a_full_duration_after_it_saw_it_change() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)

    async def scenario() -> tuple[bool, bool]:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()  # b first sees a's lease now
        clock.now_s += SETTINGS.lease_duration_s - 0.1  # a has died: no more renews
        early = await b.try_acquire_or_renew()
        clock.now_s += 0.1
        return early, await b.try_acquire_or_renew()

    early, on_time = asyncio.run(scenario())
    assert (early, on_time) == (False, True)
    spec = api.leases["kvscale"]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("pod-b", 1)
    assert spec["acquireTime"] == spec["renewTime"]


def test_a_renew_time_in_the_past_does_not_shorten_the_lease() -> None:
    """Expiry is timed on the standby's own clock, not by comparing another host's renewTime."""
    api, clock = FakeLeaseApi(), FakeClock()
    skewed = LeaderElector(
        LeaseStore(api, "ops", "kvscale"),  # type: ignore[arg-type]
        SETTINGS,
        "pod-a",
        clock,
        wall_clock=lambda: datetime(2001, 1, 1, tzinfo=UTC),  # a badly skewed host clock
    )
    b = elector(api, "pod-b", clock)

    async def scenario() -> bool:
        assert await skewed.try_acquire_or_renew()
        return await b.try_acquire_or_renew()

    assert asyncio.run(scenario()) is False


def test_two_standbys_racing_for_an_expired_lease_produce_one_leader() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a, b, c = (elector(api, name, clock) for name in ("pod-a", "pod-b", "pod-c"))

    async def scenario() -> list[bool]:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        assert not await c.try_acquire_or_renew()
        clock.now_s += SETTINGS.lease_duration_s + 1
        # Both read the same version before either writes (the fake yields between them).
        return list(await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew()))

    results = asyncio.run(scenario())
    assert sorted(results) == [False, True]
    winner = "pod-b" if results[0] else "pod-c"
    assert api.leases["kvscale"]["spec"]["holderIdentity"] == winner


def test_a_leader_that_cannot_renew_stops_before_a_standby_may_take_over() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)

    async def scenario() -> tuple[float, float]:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        last_renew_s = clock.now_s
        api.failing = True  # the leader is cut off from the API server
        await a.hold()  # returns when the renew deadline has passed
        stepped_down_s = clock.now_s
        api.failing = False
        while not await b.try_acquire_or_renew():
            clock.now_s += 0.5
        return stepped_down_s - last_renew_s, clock.now_s - last_renew_s

    stepped_down_after_s, taken_over_after_s = asyncio.run(scenario())
    assert not a.is_leading()
    assert SETTINGS.renew_deadline_s <= stepped_down_after_s < SETTINGS.lease_duration_s
    assert taken_over_after_s >= SETTINGS.lease_duration_s > stepped_down_after_s


def test_a_renew_that_hangs_is_abandoned_at_the_deadline() -> None:
    """A request that never answers must not keep the leader acting past its deadline."""
    settings = LeaderElectionSettings(
        lease_duration_s=1.5, renew_deadline_s=0.6, retry_period_s=0.1
    )
    api = FakeLeaseApi()
    hanging = asyncio.Event()

    async def scenario() -> float:
        a = LeaderElector(
            LeaseStore(api, "ops", "kvscale"),  # type: ignore[arg-type]
            settings,
            "pod-a",
            time.monotonic,
        )
        assert await a.try_acquire_or_renew()
        started_s = time.monotonic()

        async def never(*_: Any, **__: Any) -> Any:
            await hanging.wait()

        api.get = never  # type: ignore[method-assign]
        await asyncio.wait_for(a.hold(), timeout=30)
        assert not a.is_leading()
        return time.monotonic() - started_s

    assert asyncio.run(scenario()) >= settings.renew_deadline_s - settings.retry_period_s


def test_release_lets_a_standby_take_over_at_its_next_try() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)

    async def scenario() -> bool:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        await a.release()
        return await b.try_acquire_or_renew()

    assert asyncio.run(scenario()) is True
    assert a.role is Role.STANDBY
    assert api.writes == ["pod-a", "", "pod-b"]


def test_the_write_fence_refuses_writes_once_the_lease_is_not_held() -> None:
    api, clock = FakeLeaseApi(), FakeClock()
    a = elector(api, "pod-a", clock)
    fenced = LeaderGuardKube(api, a)  # type: ignore[arg-type]
    scale = {"spec": {"replicas": 3}}

    async def scenario() -> None:
        with pytest.raises(NotLeaderError, match="does not hold the lease"):
            await fenced.patch_merge(LEASES, "ops", "x", scale, "scale")
        assert await a.try_acquire_or_renew()
        await fenced.apply({"kind": "Deployment"})  # leading: passes through
        clock.now_s += SETTINGS.renew_deadline_s  # no renew for a whole deadline
        with pytest.raises(NotLeaderError):
            await fenced.apply({"kind": "Deployment"})
        with pytest.raises(NotLeaderError):
            await fenced.create({"kind": "Service"})
        assert await fenced.has_resource("apps", "v1", "deployments")  # reads pass

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KVSCALE_LEASE_DURATION_S": "10", "KVSCALE_RENEW_DEADLINE_S": "10"}, "LEASE_DURATION"),
        ({"KVSCALE_RENEW_DEADLINE_S": "2", "KVSCALE_RETRY_PERIOD_S": "2"}, "RENEW_DEADLINE"),
        ({"KVSCALE_LEADER_ELECTION": "maybe"}, "KVSCALE_LEADER_ELECTION"),
    ],
)
def test_timings_that_could_overlap_two_leaders_are_refused(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_leader_election(env)


def test_election_settings_come_from_the_pod() -> None:
    settings = load_leader_election({"POD_NAME": "kvscale-7d9-x2", "POD_NAMESPACE": "ops"})
    assert (settings.identity, settings.lease_namespace, settings.enabled) == (
        "kvscale-7d9-x2",
        "ops",
        True,
    )
