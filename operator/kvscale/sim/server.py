"""A simulated vLLM / SGLang server: real HTTP, simulated GPU.

    python -m kvscale.sim.server --engine vllm --engine-version 0.11.0 --port 8000 \\
        [--sim-gpu h100_sxm_80gb] [--time-scale 10] -- vllm serve MODEL --max-model-len 8192 ...

* `/metrics` — Prometheus text with the chosen engine release's metric names and types
  (`kvscale.engines.metric_queries`): gauges, counters ending in `_total`, histograms with
  `_bucket`/`_sum`/`_count`, and the cache-config info series.
* `/v1/completions` — OpenAI-compatible, streaming (SSE) or not; tokens are emitted at the
  simulated pace, so real clients measure the simulated TTFT and ITL.
* `/health`, `/v1/models`.

The engine is planned from the command line it was started with, so the flags the operator
rendered decide its KV pool, batch limits and speed. `--time-scale` > 1 runs simulated time
faster than the wall clock (latencies reported in simulated seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from kvscale.capacity import CapacityInputError, CapacityPlan, ModelGeometry, plan_capacity
from kvscale.capacity.calibration import modelled_non_kv_bytes, pool_pinned
from kvscale.capacity.types import LayerKind
from kvscale.engines import EngineMetrics, UnsupportedEngineError, metric_queries
from kvscale.sim.engine import EngineSim, SimRequest
from kvscale.sim.engine_args import EngineArgs, EngineArgsError, parse_engine_args
from kvscale.sim.setup import build_engine_config
from kvscale.sim.stats import Histogram

GPU_ENV = "KVSCALE_SIM_GPU"
_POLL_S = 0.002  # wall seconds between engine advances while busy
_CHARS_PER_TOKEN = 4  # prompt text -> tokens when the prompt is not token ids


def engine_plan(args: EngineArgs, kv_pool_fraction: float = 1.0) -> CapacityPlan:
    """The plan the engine really runs. With `kv_pool_fraction` < 1 its non-KV overhead is
    larger than the planner's model by (1 - fraction) of the modelled pool, as a sampler path
    or runtime allocation the model misses would make it: the engine then holds that fraction
    of the planned blocks, and reports it (a pinned pool is not profiled: unchanged)."""
    plan = plan_capacity(args.request)
    if kv_pool_fraction >= 1.0 or pool_pinned(args.request):
        return plan
    missed = int(max(plan.available_kv_bytes, 0) * (1.0 - kv_pool_fraction))
    observed = modelled_non_kv_bytes(plan) + missed
    return plan_capacity(replace(args.request, observed_non_kv_bytes=observed))


class SimServer:
    """One engine, its clock and its HTTP surface."""

    def __init__(
        self, args: EngineArgs, time_scale: float = 1.0, kv_pool_fraction: float = 1.0
    ) -> None:
        self.args = args
        self.plan = engine_plan(args, kv_pool_fraction)
        self.engine = EngineSim(build_engine_config(self.plan))
        self.metrics: EngineMetrics = metric_queries(args.engine, args.version)
        self.time_scale = time_scale
        self._t0 = time.monotonic()
        self._ids = itertools.count()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self.rejected_total = 0

    # -- clock ---------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def wall_delay(self, sim_t: float) -> float:
        return max(0.0, (sim_t - self.sim_now()) / self.time_scale)

    async def _drive(self) -> None:
        while True:
            if not self.engine.has_work:
                self._wake.clear()
                await self._wake.wait()
            self.engine.run_until(self.sim_now())
            async with self._changed:
                self._changed.notify_all()
            await asyncio.sleep(_POLL_S)

    async def start(self, _app: web.Application | None = None) -> None:
        self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def stop(self, _app: web.Application | None = None) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver

    # -- requests ------------------------------------------------------------------------------
    def submit(self, prompt_tokens: int, max_tokens: int) -> SimRequest:
        now = self.sim_now()
        self.engine.run_until(now)  # an idle engine's clock catches up before the arrival
        req = SimRequest(next(self._ids), now, prompt_tokens, max_tokens)
        if not self.engine.add_request(req):
            self.rejected_total += 1
            return req
        self._wake.set()
        return req

    async def tokens(self, req: SimRequest) -> AsyncIterator[int]:
        """Yield how many new tokens `req` produced, no earlier than their simulated time."""
        sent = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(_has_news, req, sent))
            if req.generated > sent:
                await asyncio.sleep(self.wall_delay(req.last_token_s))
                new = req.generated - sent
                sent = req.generated
                yield new
            if _done(req) and sent >= req.generated:
                return

    # -- HTTP ----------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/completions", self.handle_completions)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app

    async def handle_health(self, _request: web.Request) -> web.Response:
        return web.Response(text="")

    async def handle_models(self, _request: web.Request) -> web.Response:
        model = {"id": self.args.served_model_name, "object": "model", "owned_by": "kvscale-sim"}
        return web.json_response({"object": "list", "data": [model]})

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        self.engine.run_until(self.sim_now())
        registry = CollectorRegistry()
        registry.register(_EngineCollector(self))
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def handle_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        prompt_tokens = _count_prompt_tokens(body.get("prompt", ""))
        max_tokens = int(body.get("max_tokens") or 16)
        max_len = self.plan.request.max_model_len_tokens
        if prompt_tokens >= max_len:
            return _error(
                400, f"prompt has {prompt_tokens} tokens; the maximum context length is {max_len}"
            )
        req = self.submit(prompt_tokens, max_tokens)
        if req.status == "rejected":
            return _error(400, f"prompt of {prompt_tokens} tokens cannot fit in the KV cache")
        created = int(time.time())
        rid = f"cmpl-sim-{req.rid}"
        if body.get("stream"):
            return await self._stream(request, req, rid, created)
        count = 0
        async for new in self.tokens(req):
            count += new
        return web.json_response(
            {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": self.args.served_model_name,
                "choices": [{"index": 0, "text": _text(0, count), "finish_reason": _reason(req)}],
                "usage": _usage(req),
            }
        )

    async def _stream(
        self, request: web.Request, req: SimRequest, rid: str, created: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        async for new in self.tokens(req):
            for i in range(sent, sent + new):
                last = _done(req) and i == req.generated - 1
                chunk = {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": self.args.served_model_name,
                    "choices": [
                        {
                            "index": 0,
                            "text": _text(i, i + 1),
                            "finish_reason": _reason(req) if last else None,
                        }
                    ],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            sent += new
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _has_news(req: SimRequest, sent: int) -> bool:
    return req.generated > sent or _done(req)


def _done(req: SimRequest) -> bool:
    return req.status in ("finished", "rejected", "aborted")


def _reason(req: SimRequest) -> str:
    return "length" if req.status == "finished" else "abort"


def _usage(req: SimRequest) -> dict[str, int]:
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": req.generated,
        "total_tokens": req.prompt_tokens + req.generated,
    }


def _text(start: int, end: int) -> str:
    return "".join(f" tok{i}" for i in range(start, end))


def _count_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        prompt = prompt[0]  # batch of one
    if isinstance(prompt, list):
        return max(1, len(prompt))  # token ids
    return max(1, len(str(prompt)) // _CHARS_PER_TOKEN)


def _error(status: int, message: str) -> web.Response:
    body = {"object": "error", "message": message, "type": "BadRequestError", "code": status}
    return web.json_response(body, status=status)


class _EngineCollector(Collector):
    """Engine state as the chosen release names and types it."""

    def __init__(self, server: SimServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        srv, eng, names = self.server, self.server.engine, self.server.metrics
        labels, values = _base_labels(srv)
        gauges = (
            (names.kv_usage, "KV-cache usage, 0-1", eng.pool.usage_frac),
            (names.num_requests_running, "Requests in the batch", len(eng.running)),
            (names.num_requests_waiting, "Requests waiting", len(eng.waiting)),
            (names.kv_capacity_tokens, "KV pool size, tokens", srv.plan.kv_cache_tokens),
        )
        for name, doc, value in gauges:
            if name:
                g = GaugeMetricFamily(name, doc, labels=labels)
                g.add_metric(values, float(value))
                yield g
        counters = (
            (names.preemptions, "Requests preempted for KV", eng.preemptions_reported_total),
            (names.prompt_tokens, "Prompt tokens", eng.prompt_tokens_total),
            (names.generation_tokens, "Generated tokens", eng.generation_tokens_total),
        )
        for name, doc, value in counters:
            if name:
                c = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
                c.add_metric(values, float(value))
                yield c
        if names.request_success:
            c = CounterMetricFamily(
                names.request_success.removesuffix("_total"), "Finished requests",
                labels=[*labels, "finished_reason"],
            )  # fmt: skip
            c.add_metric([*values, "length"], float(eng.success_total))
            yield c
        histograms = (
            (names.ttft_seconds, "Time to first token", eng.ttft),
            (names.itl_seconds, "Inter-token latency", eng.itl),
            (names.e2e_latency_seconds, "Request latency", eng.e2e),
            (names.queue_time_seconds, "Time waiting", eng.queue_time),
        )
        for name, doc, hist in histograms:
            if name:
                yield _histogram(name, doc, labels, values, hist)
        if names.cache_config_info:
            yield _cache_info(srv, names)


def _base_labels(srv: SimServer) -> tuple[list[str], list[str]]:
    if srv.args.engine == "sglang":
        return ["model_name", "engine_type", "tp_rank", "pp_rank"], [
            srv.args.served_model_name, "unified", "0", "0",
        ]  # fmt: skip
    return ["model_name", "engine"], [srv.args.served_model_name, "0"]


def _histogram(
    name: str, doc: str, labels: list[str], values: list[str], hist: Histogram
) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=labels)
    cumulative = hist.cumulative()
    bounds = [*(repr(float(b)) for b in hist.bounds), "+Inf"]
    buckets = [(le, float(c)) for le, c in zip(bounds, cumulative.tolist(), strict=True)]
    h.add_metric(values, buckets, float(hist.sum))
    return h


def _cache_info(srv: SimServer, names: EngineMetrics) -> GaugeMetricFamily:
    """The pool as the engine's info series carries it: one label per cache setting, values
    spelled as the engine spells them (vLLM: `str()` of each CacheConfig field)."""
    plan, request = srv.plan, srv.plan.request
    info = {
        names.cache_info_blocks_label or "num_gpu_blocks": str(plan.num_blocks),
        names.cache_info_block_size_label or "block_size": str(plan.block_size_tokens),
        "cache_dtype": request.kv_cache_dtype,
        "gpu_memory_utilization": str(plan.gpu_memory_utilization),
        "enable_prefix_caching": str(request.enable_prefix_caching),
        "engine": "0",
    }
    if srv.args.engine == "vllm":
        info.update(
            kv_cache_memory_bytes=str(request.kv_cache_memory_bytes),
            num_gpu_blocks_override="None",
            num_cpu_blocks="None",
            sliding_window=str(_uniform_window(request.model)),
        )
    if names.cache_info_tokens_label:  # the planner's token figure: the release's semantics
        info[names.cache_info_tokens_label] = str(plan.kv_cache_tokens)
    if names.cache_info_concurrency_label:
        info[names.cache_info_concurrency_label] = str(plan.max_concurrency)
    g = GaugeMetricFamily(str(names.cache_config_info), "Cache config", labels=list(info))
    g.add_metric(list(info.values()), 1.0)
    return g


def _uniform_window(model: ModelGeometry) -> int | None:
    """vLLM's CacheConfig.sliding_window: the window when every layer slides, else None."""
    if model.layer_kinds and all(k is LayerKind.SLIDING for k in model.layer_kinds):
        return model.sliding_window_tokens
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvscale.sim.server", description=__doc__)
    p.add_argument("--engine", choices=("vllm", "sglang"), default="vllm")
    p.add_argument("--engine-version", default="0.11.0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: the engine args' --port, else 8000")
    p.add_argument("--sim-gpu", help=f"catalog GPU id (default: ${GPU_ENV} or h100_sxm_80gb)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated s per wall s")
    p.add_argument("--sim-model-config", type=Path, help="HF config.json of a non-catalog model")
    p.add_argument(
        "--sim-kv-pool-fraction",
        type=float,
        default=1.0,
        help="hold this fraction (0-1] of the planned KV pool: a non-KV overhead the model misses",
    )
    p.add_argument("engine_args", nargs=argparse.REMAINDER, help="-- then the engine command")
    return p


def build_server(argv: Sequence[str]) -> tuple[SimServer, argparse.Namespace]:
    """Parse our flags and the engine's; raise EngineArgsError with a one-line reason."""
    ns = build_parser().parse_args(argv)
    engine_argv = [a for a in ns.engine_args if a != "--"] if ns.engine_args else []
    gpu = ns.sim_gpu or os.environ.get(GPU_ENV)
    try:
        parsed = parse_engine_args(
            ns.engine, ns.engine_version, engine_argv, gpu, ns.sim_model_config
        )
        if not 0 < ns.sim_kv_pool_fraction <= 1:
            raise EngineArgsError(
                f"--sim-kv-pool-fraction: {ns.sim_kv_pool_fraction} is not in (0, 1]"
            )
        server = SimServer(parsed, ns.time_scale, ns.sim_kv_pool_fraction)
    except (CapacityInputError, UnsupportedEngineError) as exc:
        raise EngineArgsError(str(exc)) from exc
    return server, ns


def main(argv: Sequence[str] | None = None) -> int:
    try:
        server, ns = build_server(sys.argv[1:] if argv is None else argv)
    except EngineArgsError as exc:
        print(f"kvscale.sim.server: {exc}", file=sys.stderr)
        return 2
    plan = server.plan
    port = ns.port or server.args.port or 8000
    print(
        f"simulated {server.args.engine} {server.args.version}: {server.args.model} on"
        f" {plan.request.gpu.id}, {plan.num_blocks} KV blocks ({plan.kv_cache_tokens} tokens),"
        f" max_num_seqs {plan.max_num_seqs}, listening on {ns.host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(server.build_app(), host=ns.host, port=port, print=None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
