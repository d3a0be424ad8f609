"""N simulated replicas behind a router: cold start, drain on scale-down, GPU-time ledger.

Lifecycle of a replica: *starting* (GPU allocated, weights loading, warm-up; billed but not
routed to) → *ready* → on scale-down *draining* (out of the endpoints, finishes what it holds
for up to the pod's termination grace period, then whatever is left is aborted) → removed.
Scale-down removes starting replicas first (newest first), then ready ones newest first, as a
ReplicaSet does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvscale.scaling.observe import PodPhase
from kvscale.sim.engine import EngineConfig, EngineSim, SimRequest
from kvscale.sim.router import Router
from kvscale.sim.stats import (
    FINE_BOUNDS_S,
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    FloatArray,
)

FLEET_STALENESS_S = 1.0  # least-KV routing sees engine state at most this old

# A `warm` replica (the fleet a replay starts from) has been serving for a day: past any warm-up,
# as the Deployment of a policy taking over a running service would be.
WARM_REPLICA_AGE_S = 86_400.0


@dataclass(frozen=True)
class ColdStart:
    """How long a new replica takes to serve (documented defaults; override per cluster).

    Pod scheduling + container start with a cached image, then weights read at a sustained
    bandwidth (network volume / local NVMe), then the engine's profile run and CUDA-graph
    capture.
    """

    fixed_s: float = 30.0
    weights_load_bytes_per_s: float = 2.0e9
    warmup_s: float = 20.0

    def seconds(self, weights_bytes_per_replica: int) -> float:
        return (
            self.fixed_s + weights_bytes_per_replica / self.weights_load_bytes_per_s + self.warmup_s
        )


class Replica:
    __slots__ = ("created_s", "drain_deadline_s", "engine", "ready_s", "removed_s", "rid", "state")

    def __init__(self, rid: int, engine: EngineSim, created_s: float, ready_s: float) -> None:
        self.rid = rid
        self.engine = engine
        self.created_s = created_s
        self.ready_s = ready_s
        self.state = "starting"  # starting | ready | draining | removed
        self.drain_deadline_s = 0.0
        self.removed_s: float | None = None


@dataclass(frozen=True)
class FleetTotals:
    """Fleet-wide cumulative counters (alive + removed replicas) at one instant."""

    preemptions: int
    ttft_counts: FloatArray
    itl_counts: FloatArray
    itl_fine_counts: FloatArray
    queue_counts: FloatArray
    requests_finished: int
    prompt_tokens: int = 0


class Fleet:
    def __init__(
        self,
        config: EngineConfig,
        router: Router,
        cold_start_s: float,
        on_finish: Callable[[SimRequest], None],
        drain_grace_s: float = 30.0,
    ) -> None:
        self.config = config
        self.router = router
        self.cold_start_s = cold_start_s
        self.on_finish = on_finish
        self.drain_grace_s = drain_grace_s
        self.alive: list[Replica] = []
        self.removed: list[Replica] = []
        self._next_rid = 0
        self._removed_totals = _zero_totals()

    # -- scaling -------------------------------------------------------------------------------
    @property
    def desired(self) -> int:
        return sum(1 for r in self.alive if r.state in ("starting", "ready"))

    @property
    def ready(self) -> int:
        """Ready replicas not draining (a Deployment's readyReplicas)."""
        return sum(1 for r in self.alive if r.state == "ready")

    def pod_phases(self, now_s: float) -> list[PodPhase]:
        """The pods a Deployment of this fleet would show at `now_s` (draining = terminating)."""
        self._promote(now_s)
        return [
            PodPhase(
                created_s=r.created_s,
                ready=r.state != "starting",
                terminating=r.state == "draining",
            )
            for r in self.alive
        ]

    def scale_to(self, replicas: int, now_s: float, *, warm: bool = False) -> None:
        """Create or drain replicas so that `replicas` are starting or ready (`warm`: ready now
        and created WARM_REPLICA_AGE_S ago)."""
        self._promote(now_s)
        current = self.desired
        for _ in range(replicas - current):
            engine = EngineSim(self.config, self.on_finish)
            engine.clock_s = now_s
            ready_s = now_s if warm else now_s + self.cold_start_s
            created_s = now_s - WARM_REPLICA_AGE_S if warm else now_s
            rep = Replica(self._next_rid, engine, created_s, ready_s)
            self._next_rid += 1
            self.alive.append(rep)
        for _ in range(current - replicas):
            self._remove_one(now_s)
        self._promote(now_s)

    def _remove_one(self, now_s: float) -> None:
        starting = [r for r in self.alive if r.state == "starting"]
        if starting:
            victim = max(starting, key=lambda r: r.created_s)
            self._retire(victim, now_s)
            return
        ready = [r for r in self.alive if r.state == "ready"]
        victim = max(ready, key=lambda r: (r.created_s, r.rid))
        victim.state = "draining"
        victim.drain_deadline_s = now_s + self.drain_grace_s

    def _retire(self, rep: Replica, at_s: float) -> None:
        rep.state = "removed"
        rep.removed_s = at_s
        self.alive.remove(rep)
        self.removed.append(rep)
        self._removed_totals = _add_totals(self._removed_totals, rep.engine)

    def _promote(self, now_s: float) -> None:
        for rep in self.alive:
            if rep.state == "starting" and rep.ready_s <= now_s:
                rep.state = "ready"
                rep.engine.clock_s = max(rep.engine.clock_s, rep.ready_s)

    # -- time ----------------------------------------------------------------------------------
    def advance_to(self, t_s: float, *, lagging_only: bool = False) -> None:
        """Run every engine up to `t_s` (or only those more than the staleness bound behind)."""
        self._promote(t_s)
        for rep in list(self.alive):
            if rep.state == "starting":
                continue
            if lagging_only and rep.engine.clock_s >= t_s - FLEET_STALENESS_S:
                continue
            if rep.state == "draining":
                self._advance_draining(rep, t_s)
            else:
                rep.engine.run_until(t_s)

    def _advance_draining(self, rep: Replica, t_s: float) -> None:
        eng = rep.engine
        eng.run_until(min(t_s, rep.drain_deadline_s))
        if not eng.has_work:
            self._retire(rep, max(rep.drain_deadline_s - self.drain_grace_s, eng.last_step_end_s))
        elif t_s >= rep.drain_deadline_s:
            for req in eng.abort_all():
                self.on_finish(req)
            self._retire(rep, rep.drain_deadline_s)

    def route(self, req: SimRequest, now_s: float) -> bool:
        """Hand `req` to a ready replica; False when none is ready (the gateway answers 503)."""
        self._promote(now_s)
        if self.router.needs_fresh_state:
            self.advance_to(now_s, lagging_only=True)
        ready = [r for r in self.alive if r.state == "ready"]
        if not ready:
            req.status = "rejected"
            return False
        rep = ready[self.router.pick([r.engine for r in ready])]
        rep.engine.run_until(now_s)
        return rep.engine.add_request(req)

    # -- accounting ----------------------------------------------------------------------------
    def totals(self) -> FleetTotals:
        out = self._removed_totals
        for rep in self.alive:
            out = _add_totals(out, rep.engine)
        return out

    def gpu_seconds(self, start_s: float, end_s: float) -> float:
        """Replica-seconds billed in [start, end] (per replica; multiply by GPUs per replica)."""
        total = 0.0
        for rep in self.alive + self.removed:
            lo = max(start_s, rep.created_s)
            hi = min(end_s, rep.removed_s if rep.removed_s is not None else end_s)
            total += max(0.0, hi - lo)
        return total

    def snapshot_engines(self) -> list[EngineSim]:
        """Engines that serve /metrics now (ready or draining)."""
        return [r.engine for r in self.alive if r.state in ("ready", "draining")]


def _zero_totals() -> FleetTotals:
    return FleetTotals(
        preemptions=0,
        ttft_counts=np.zeros(len(TTFT_BUCKETS_S) + 1),
        itl_counts=np.zeros(len(ITL_BUCKETS_S) + 1),
        itl_fine_counts=np.zeros(FINE_BOUNDS_S.size + 1),
        queue_counts=np.zeros(len(REQUEST_LATENCY_BUCKETS_S) + 1),
        requests_finished=0,
    )


def _add_totals(base: FleetTotals, eng: EngineSim) -> FleetTotals:
    return FleetTotals(
        preemptions=base.preemptions + eng.preemptions_total,
        ttft_counts=base.ttft_counts + eng.ttft.counts,
        itl_counts=base.itl_counts + eng.itl.counts,
        itl_fine_counts=base.itl_fine_counts + eng.itl_fine.counts,
        queue_counts=base.queue_counts + eng.queue_time.counts,
        requests_finished=base.requests_finished + eng.success_total,
        prompt_tokens=base.prompt_tokens + eng.prompt_tokens_total,
    )
