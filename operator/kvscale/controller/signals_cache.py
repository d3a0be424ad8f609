"""`SignalsCache`: one background task that every scaling interval reads the signals of every
tracked LLMDeployment in one batched `MetricsSource.fetch`; the per-object timers read the
result. PromQL queries per cycle depend on the engine releases in the fleet, not on the number
of objects. Failures come back as readings with `signals=None`; nothing raises into kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from kvscale.controller.autoscaler_metrics import AutoscalerMetrics
from kvscale.metrics import DeploymentKey, DeploymentTarget, MetricsSource
from kvscale.metrics.source import SignalsReading

Clock = Callable[[], float]
logger = logging.getLogger(__name__)


class SignalsCache:
    """One batched read of every tracked deployment per interval; timers read the result.

    A target is tracked while its timer keeps calling `track` and dropped after
    `forget_after_cycles` cycles without it (a deleted object stops being queried).
    """

    def __init__(
        self,
        source: MetricsSource,
        *,
        interval_s: float,
        metrics: AutoscalerMetrics | None = None,
        clock: Clock = time.time,
        forget_after_cycles: int = 4,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.metrics = metrics
        self.clock = clock
        self.forget_after_cycles = forget_after_cycles
        self.cycles = 0
        self.last_cycle_s: float | None = None  # when the last fetch finished
        self.last_queries: int | None = None
        self._targets: dict[DeploymentKey, tuple[DeploymentTarget, int]] = {}
        self._readings: dict[DeploymentKey, SignalsReading] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, target: DeploymentTarget) -> None:
        self._targets[target.key] = (target, self.cycles)

    def forget(self, key: DeploymentKey) -> None:
        self._targets.pop(key, None)
        self._readings.pop(key, None)

    def reading(self, key: DeploymentKey) -> SignalsReading | None:
        """The latest reading; None before the first cycle that included `key`.

        A cache that has not refreshed for three intervals (a stuck Prometheus call) reads
        as a failed read, so the policy holds instead of acting on old numbers.
        """
        found = self._readings.get(key)
        if found is None or self.last_cycle_s is None:
            return None
        age_s = self.clock() - self.last_cycle_s
        if age_s > 3 * self.interval_s:
            return SignalsReading(None, {}, f"signal cache last refreshed {age_s:.0f}s ago")
        return found

    async def refresh(self) -> None:
        """One cycle: a batched fetch in a worker thread (the client is synchronous)."""
        self.cycles += 1
        horizon = self.cycles - self.forget_after_cycles
        for key in [k for k, (_, seen) in self._targets.items() if seen < horizon]:
            self.forget(key)
        targets = [target for target, _ in self._targets.values()]
        started = time.perf_counter()
        try:
            readings = await asyncio.to_thread(self.source.fetch, targets) if targets else {}
        except Exception as error:  # a source must not raise; if one does, it is still data
            logger.exception("metrics source raised")
            message = f"metrics source failed: {type(error).__name__}: {error}"[:300]
            readings = {t.key: SignalsReading(None, {}, message) for t in targets}
        self._readings = dict(readings)
        self.last_cycle_s = self.clock()
        queries = getattr(self.source, "queries_sent", None)
        self.last_queries = queries if isinstance(queries, int) else None
        if self.metrics is not None:
            self.metrics.cycle_seconds.set(time.perf_counter() - started)
            self.metrics.tracked.set(len(targets))
            if self.last_queries is not None:
                self.metrics.queries.set(self.last_queries)

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="kvscale-signals-cache")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
