"""The e2e load driver's trace clock (e2e/harness/load.py): arrivals follow the trace's gaps
scaled by a rate that can change at any moment; a pause holds, a stop ends it at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

TraceClock = Callable[..., object]


@pytest.fixture(scope="module")
def trace_clock(e2e_importable: Path) -> TraceClock:
    from harness.load import trace_clock

    return trace_clock


class FakeWall:
    """A wall clock that only moves when the code under test sleeps; `script` sets the rate
    (or stops) when the clock passes the given times."""

    def __init__(self, script: list[tuple[float, float | None]]) -> None:
        self.t_s = 0.0
        self.rate = 0.0
        self.stop = threading.Event()
        self.script = sorted(script, key=lambda step: step[0])
        self._apply()

    def now(self) -> float:
        return self.t_s

    async def sleep(self, seconds: float) -> None:
        self.t_s += seconds
        self._apply()

    def _apply(self) -> None:
        while self.script and self.script[0][0] <= self.t_s + 1e-9:
            _, rate = self.script.pop(0)
            if rate is None:
                self.stop.set()
            else:
                self.rate = rate


def run(trace_clock: TraceClock, arrival_s: list[float], wall: FakeWall) -> list[tuple[int, float]]:
    async def collect() -> list[tuple[int, float]]:
        clock = trace_clock(arrival_s, lambda: wall.rate, wall.stop, wall.now, wall.sleep)
        return [(i, wall.t_s) async for i in clock]  # type: ignore[attr-defined]

    return asyncio.run(collect())


def test_arrivals_keep_the_traces_gaps_divided_by_the_rate(trace_clock: TraceClock) -> None:
    wall = FakeWall([(0.0, 2.0), (2.9, None)])
    sent = run(trace_clock, [10.0, 11.0, 13.0, 14.0], wall)
    # trace gaps 1, 2, 1 s at rate 2 -> 0.5, 1.0, 0.5 s; the cycle repeats after one mean gap
    assert [i for i, _ in sent] == [0, 1, 2, 3, 0]
    assert [t for _, t in sent] == pytest.approx([0.0, 0.5, 1.5, 2.0, 2.667], abs=0.03)


def test_a_pause_in_the_middle_of_a_gap_holds_the_next_arrival(trace_clock: TraceClock) -> None:
    wall = FakeWall([(0.0, 1.0), (0.5, 0.0), (5.0, 1.0), (6.0, None)])
    sent = run(trace_clock, [0.0, 1.0, 100.0], wall)
    # 0.5 s of the 1 s gap went by before the pause; the rest after the load resumes at 5 s
    assert [i for i, _ in sent] == [0, 1]
    assert sent[1][1] == pytest.approx(5.5, abs=0.03)


def test_nothing_is_sent_after_stop_even_while_paused(trace_clock: TraceClock) -> None:
    wall = FakeWall([(0.0, 1.0), (0.3, 0.0), (2.0, None)])
    sent = run(trace_clock, [0.0, 0.1, 0.2, 0.3, 0.4], wall)
    assert [i for i, _ in sent] == [0, 1, 2]
    assert wall.t_s == pytest.approx(2.0, abs=0.03)  # it returned at the stop, not later


def test_a_paused_clock_sends_nothing(trace_clock: TraceClock) -> None:
    wall = FakeWall([(3.0, None)])
    assert run(trace_clock, [0.0, 1.0], wall) == []
