"""A load driver that replays a slice of the Azure LLM inference trace (conversation) against
the simulated engines of one LLMDeployment, round-robin like a ClusterIP Service.

The trace's own prompt/output lengths and inter-arrival gaps are used; `rate` multiplies the
arrival rate (0 pauses the load), so a scenario ramps load up and down without scripting KV
numbers: KV utilisation is whatever the engines' paged KV pools make of the requests.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from kvscale.sim.traces import FloatArray, Trace, default_azure_path, load_azure, slice_trace

TICK_S = 0.02  # wall seconds between looks at the trace clock


def azure_conv_slice(start_s: float = 600.0, duration_s: float = 600.0) -> Trace:
    """A slice of the embedded Azure 2023 conversation trace."""
    return slice_trace(load_azure(default_azure_path("conv")), start_s, duration_s)


@dataclass
class LoadDriver:
    """Background replay; `targets()` returns the engine base URLs to spread requests over."""

    targets: Callable[[], list[str]]
    trace: Trace
    max_prompt_tokens: int
    rate: float = 0.0
    sent: int = 0
    completed: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadDriver:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            robin = itertools.count()
            async for i in trace_clock(self.trace.arrival_s, lambda: self.rate, self._stop):
                urls = self.targets()
                if urls:
                    url = urls[next(robin) % len(urls)]
                    task = asyncio.create_task(self._send(session, url, i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, session: aiohttp.ClientSession, url: str, i: int) -> None:
        output = int(self.trace.output_tokens[i])
        prompt = min(int(self.trace.prompt_tokens[i]), self.max_prompt_tokens - output - 1)
        body = {"prompt": [1] * max(1, prompt), "max_tokens": max(1, output)}
        self.sent += 1
        try:
            async with session.post(f"{url}/v1/completions", json=body) as response:
                await response.read()
                if response.status == 200:
                    self.completed += 1
                else:
                    self.failed += 1
        except (aiohttp.ClientError, TimeoutError):
            self.failed += 1


async def trace_clock(
    arrival_s: Sequence[float] | FloatArray,
    rate: Callable[[], float],
    stop: threading.Event,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[int]:
    """Yield trace indices (cycling) when their arrival time comes on a trace clock that runs
    at `rate()` times the wall clock, read afresh every tick: a pause (rate 0) takes effect at
    once, even in the middle of a long gap, and nothing is yielded once `stop` is set."""
    first_s, last_s = float(arrival_s[0]), float(arrival_s[-1])
    cycle_s = (last_s - first_s) * len(arrival_s) / max(1, len(arrival_s) - 1)  # + a mean gap
    trace_now_s = first_s
    last = now()
    for cycle in itertools.count():
        for i, at_s in enumerate(arrival_s):
            due_s = float(at_s) + cycle * cycle_s
            while trace_now_s < due_s or rate() <= 0:
                if stop.is_set():
                    return
                await sleep(TICK_S)
                wall_s = now()
                trace_now_s += (wall_s - last) * max(0.0, rate())
                last = wall_s
            if stop.is_set():
                return
            yield i


def start_burst(url: str, count: int, prompt_tokens: int, output_tokens: int) -> threading.Thread:
    """`count` requests sent at once to one engine (in a background thread): more KV than the
    pool holds once they decode, so the engine preempts."""

    async def burst() -> None:
        body = {"prompt": [1] * prompt_tokens, "max_tokens": output_tokens}
        timeout = aiohttp.ClientTimeout(total=300)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> None:
                async with session.post(f"{url}/v1/completions", json=body) as response:
                    await response.read()

            await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)

    thread = threading.Thread(target=lambda: asyncio.run(burst()), daemon=True)
    thread.start()
    return thread
