"""KV pressure on a real engine, and its own /metrics sampled while it lasts.

`drive_requests` sends N identical-shape completions at once, one HTTP request each, and
`drive_batch` sends them as the prompts of one request, so they reach the engine within a
scheduler step instead of over the seconds a loaded machine takes to open N connections
(token-id prompts, so every prompt has exactly the intended length; `ignore_eos`, so every
answer has exactly `max_tokens`);
`MetricsSampler` reads the engine's /metrics on a short period in a background thread and keeps
the series the checks need. Loopback only, bounded: every request and the sampler stop by
themselves.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from harness.kube import wait_for
from harness.realvllm import VllmServer, post_json
from kvscale.engines import EngineMetrics

REQUEST_TIMEOUT_S = 900.0
FIRST_TOKEN_ID = 3  # after the tiny tokenizer's special tokens


@dataclass(frozen=True)
class RequestShape:
    count: int
    prompt_tokens: int
    output_tokens: int
    vocab_size: int
    seed: int = 7

    def prompts(self) -> list[list[int]]:
        """Distinct random token-id prompts (no shared prefix, so no prefix-cache hits)."""
        rng = random.Random(self.seed)
        return [
            [rng.randrange(FIRST_TOKEN_ID, self.vocab_size) for _ in range(self.prompt_tokens)]
            for _ in range(self.count)
        ]


def complete(
    base_url: str, model: str, prompt: list[int] | list[list[int]], output_tokens: int
) -> dict[str, Any]:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    return post_json(f"{base_url}/v1/completions", body, REQUEST_TIMEOUT_S)


def drive_requests(base_url: str, model: str, shape: RequestShape) -> list[dict[str, Any]]:
    """All requests at once; returns their `usage` objects once every one has finished."""
    prompts = shape.prompts()
    with ThreadPoolExecutor(max_workers=shape.count) as pool:
        futures = [pool.submit(complete, base_url, model, p, shape.output_tokens) for p in prompts]
        return [f.result()["usage"] for f in futures]


@dataclass(frozen=True)
class BatchResult:
    choices: int  # completions returned (one per prompt)
    completion_tokens: int  # generated over all of them


def drive_batch(base_url: str, model: str, shape: RequestShape) -> BatchResult:
    """Every prompt in one completion request; returns once all have finished. The engine's
    per-request cap (`max_tokens`) makes `completion_tokens == count * output_tokens` mean that
    each one generated exactly `output_tokens`."""
    response = complete(base_url, model, shape.prompts(), shape.output_tokens)
    return BatchResult(len(response["choices"]), response["usage"]["completion_tokens"])


# The engine's scheduler paused with its queue kept, and resumed (vLLM's development endpoints,
# served when the API server runs with PAUSE_ENV; vllm/entrypoints/rl/online/api_router.py,
# 0.32.0); with `--enable-log-requests` the API server logs ADDED_LINE once it has handed a
# request to the engine.
PAUSE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
LOG_REQUESTS_FLAG = "--enable-log-requests"
ADDED_LINE = "Added request "
HANDOVER_TIMEOUT_S = 300.0


def drive_batch_from_pause(server: VllmServer, shape: RequestShape) -> BatchResult:
    """`drive_batch` with every request in the engine's queue before its first step: the
    scheduler is paused, the batch sent, and the scheduler resumed once the API server logged
    every request as handed over (the resume travels behind them on the same channel)."""
    post_json(f"{server.url}/pause?mode=keep&clear_cache=false", {}, 60)
    with ThreadPoolExecutor(max_workers=1) as pool:
        batch = pool.submit(drive_batch, server.url, str(server.model_dir), shape)
        try:
            wait_for(
                lambda: batch.done() or server.log_text().count(ADDED_LINE) >= shape.count,
                f"the engine to be handed {shape.count} requests",
                HANDOVER_TIMEOUT_S,
                interval_s=0.1,
            )
        finally:  # always: a paused engine would hold the batch, and this pool, forever
            post_json(f"{server.url}/resume", {}, 60)
        return batch.result(timeout=REQUEST_TIMEOUT_S)


def scrape_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of the samples of each named series in a /metrics text (absent names omitted)."""
    wanted = set(names)
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


@dataclass(frozen=True)
class Sample:
    t_s: float
    values: Mapping[str, float]


@dataclass
class MetricsSampler:
    """Polls `<url>/metrics` every `period_s` until stopped; keeps the named series."""

    url: str
    names: tuple[str, ...]
    period_s: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, url: str, m: EngineMetrics) -> MetricsSampler:
        names = (
            m.kv_usage,
            m.num_requests_running,
            m.num_requests_waiting,
            m.preemptions,
            m.generation_tokens,
            m.request_success,
        )
        return cls(url, tuple(n for n in names if n))

    def __enter__(self) -> MetricsSampler:
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample_once()  # the final state, after the last request finished

    def sample_once(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError as error:
            self.errors.append(str(error))
            return
        self.samples.append(Sample(time.monotonic(), scrape_values(text, self.names)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.period_s)

    def series(self, name: str) -> list[float]:
        return [s.values[name] for s in self.samples if name in s.values]
