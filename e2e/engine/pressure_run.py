"""One real engine under KV pressure, scraped by a real Prometheus: the data the metrics
contract, the simulator-fidelity and the simulator-parity tests read.

The engine is the tiny GQA Llama started from the argv kvscale renders for a plan with a
4,096-token pool (block 32, 128 blocks); 60 requests of 500 prompt + 500 output tokens arrive
at once (the prompts of one HTTP request, handed to the engine while its scheduler is paused,
then resumed: `drive_batch_from_pause`), so the pool fills, requests wait and some are
preempted. The engine's own /metrics is sampled every 0.2 s while the load runs (a loaded
machine answers about once a second: 60 requests keep the engine busy long enough for that);
Prometheus scrapes it every second; every query of `metric_queries("vllm", <release>)` is
evaluated at the moment the last request finished. The engine also logs every step
(STEP_LOG_FLAG).
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.pressure import (
    LOG_REQUESTS_FLAG,
    PAUSE_ENV,
    BatchResult,
    MetricsSampler,
    RequestShape,
    drive_batch_from_pause,
)
from harness.prom import PrometheusServer, free_loopback_port
from harness.realvllm import EngineEnv, KvCase, engine_flags, plan_for, running_vllm
from kvscale.capacity.types import CapacityPlan
from kvscale.engines import EngineMetrics, build_deployment_queries, metric_queries
from kvscale.scaling.observe import LATENCY_WINDOW_S, SIGNAL_WINDOW_S

MIB = 1024 * 1024
PRESSURE_CASE = KvCase(
    "llama-gqa",
    kv_cache_memory_bytes=4 * MIB,  # 1,024 B/token: 4,096 tokens, 128 blocks of 32
    max_model_len=2048,
    max_num_batched_tokens=2048,
    block_size=32,
    max_num_seqs=64,
)
SHAPE = RequestShape(count=60, prompt_tokens=500, output_tokens=500, vocab_size=8192)
TARGET_LABELS = {"namespace": "engine-tier", "llmd": "tiny-llama", "pod": "tiny-llama-0"}
SCRAPE_WAIT_S = 30.0
# Observation only, added to kvscale's argv: the API server logs every engine step (its context
# and generation requests and tokens, and the KV usage after it), the dense record the
# simulator-fidelity test reads; /metrics is only sampled, seconds apart on a loaded machine.
STEP_LOG_FLAG = "--enable-logging-iteration-details"


@dataclass
class PressureRun:
    plan: CapacityPlan
    flags: list[str]
    names: EngineMetrics
    metrics_text: str  # the engine's /metrics after the load
    log_text: str
    sampler: MetricsSampler
    batch: BatchResult
    queries: dict[str, str]  # DeploymentQueries field -> PromQL (None fields left out)
    results: dict[str, list[dict[str, Any]]]  # field -> Prometheus vector at load end
    peak_usage_scraped: float  # the largest KV usage Prometheus scraped during the load


def prom_query(base_url: str, query: str, at_s: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at_s:.3f}"})
    with urllib.request.urlopen(f"{base_url}/api/v1/query?{params}", timeout=10) as response:
        body = json.loads(response.read().decode())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _wait_scraped(prom_url: str, names: EngineMetrics, requests: int) -> float:
    """Until Prometheus holds the final success count; returns that scrape's time."""
    query = f"sum({names.request_success})"
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while time.monotonic() < deadline:
        now = time.time()
        result = prom_query(prom_url, query, now)
        if result and float(result[0]["value"][1]) >= requests:
            return now
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never saw {requests} finished requests")


def run_pressure(
    env: EngineEnv, model_dir: Path, prometheus_binary: str, work_dir: Path
) -> PressureRun:
    plan = plan_for(PRESSURE_CASE, model_dir, env.version)
    port = free_loopback_port()
    flags = engine_flags(plan, model_dir, port)
    names = metric_queries("vllm", env.version)
    queries = build_deployment_queries(  # the windows the operator's adapter sends
        names, window_s=int(SIGNAL_WINDOW_S), latency_window_s=int(LATENCY_WINDOW_S)
    )
    wanted = {f.name: getattr(queries, f.name) for f in fields(queries)}
    promql = {k: q for k, q in wanted.items() if q is not None}
    (work_dir / "prometheus").mkdir(parents=True, exist_ok=True)
    prometheus = PrometheusServer(
        prometheus_binary, work_dir / "prometheus", targets=[(f"127.0.0.1:{port}", TARGET_LABELS)]
    )
    prometheus.start()
    try:
        argv = [*flags, STEP_LOG_FLAG, LOG_REQUESTS_FLAG]
        log_path = work_dir / "vllm.log"
        with running_vllm(env, model_dir, argv, log_path, extra_env=PAUSE_ENV) as server:
            load_started_s = time.time()
            with MetricsSampler.for_engine(server.url, names) as sampler:
                batch = drive_batch_from_pause(server, SHAPE)
            at_s = _wait_scraped(prometheus.url, names, SHAPE.count)
            results = {k: prom_query(prometheus.url, q, at_s) for k, q in promql.items()}
            window_s = math.ceil(at_s - load_started_s)
            peak = prom_query(
                prometheus.url, f"max(max_over_time({names.kv_usage}[{window_s}s]))", at_s
            )
            metrics_text = server.metrics_text()
            log_text = server.log_text()
    finally:
        prometheus.stop()
    return PressureRun(
        plan,
        flags,
        names,
        metrics_text,
        log_text,
        sampler,
        batch,
        promql,
        results,
        float(peak[0]["value"][1]) if peak else 0.0,
    )
