"""Request routers in front of the replicas: round-robin and least-KV.

A router only sees replicas that are Ready and not draining (the Service's endpoints). The
least-KV router reads each engine's KV usage as the engine would report it, refreshed at most
`FLEET_STALENESS_S` late by the fleet (a gateway scraping its endpoints behaves the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kvscale.sim.engine import EngineSim

ROUTERS: tuple[str, ...] = ("least-kv", "round-robin")


class Router(Protocol):
    name: str
    needs_fresh_state: bool

    def pick(self, engines: Sequence[EngineSim]) -> int:
        """Index into `engines` (non-empty) of the replica that gets the next request."""
        ...


class RoundRobinRouter:
    name = "round-robin"
    needs_fresh_state = False

    def __init__(self) -> None:
        self._next = 0

    def pick(self, engines: Sequence[EngineSim]) -> int:
        idx = self._next % len(engines)
        self._next = idx + 1
        return idx


class LeastKvRouter:
    """Lowest KV usage wins; ties go to the shorter queue, then the lower index."""

    name = "least-kv"
    needs_fresh_state = True

    def pick(self, engines: Sequence[EngineSim]) -> int:
        best = 0
        best_key = (2.0, 0)
        for i, eng in enumerate(engines):
            key = (eng.pool.usage_frac, len(eng.waiting))
            if key < best_key:
                best, best_key = i, key
        return best


def build_router(name: str) -> Router:
    if name == "round-robin":
        return RoundRobinRouter()
    if name == "least-kv":
        return LeastKvRouter()
    raise ValueError(f"unknown router {name!r}; use one of {', '.join(ROUTERS)}")
