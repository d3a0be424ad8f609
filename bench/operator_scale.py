"""Operator-scale benchmark: N LLMDeployments through the autoscaler's full decision path.

    .venv/bin/python bench/operator_scale.py [--deployments 1000] [--cycles 3] [--quick]

What runs, and where:

* a child process serves a synthetic vLLM exporter: one /metrics endpoint with the series of
  every deployment (labels namespace/llmd/pod, one pod per deployment, counters that grow and
  histograms that fill between scrapes);
* the real Prometheus binary (tests/integration/promfixture.py) scrapes it every 1 s;
* this process is the operator side: kvscale's `SignalsCache` + `PrometheusSource` (one batched
  read per cycle), and for every object the same `Autoscaler.tick` the kopf timer calls — GET
  the Deployment, parse the spec, `plan_tick` (policy + status build) — then a merge PATCH of
  the status subresource. kopf's own scheduling is not included.
* The API server is an in-process fake (`InProcessApi`: JSON round-trips, RFC 7386 merge
  patches, a patch counter), not kmock: kmock's per-request cost grows with the number of
  objects it holds (its garbage-collector hook scans every object on every write; measured here
  56 ms per tick at 20 objects, 160 ms at 50), which would make the benchmark time the fake.

Figures: PromQL queries per cycle (at 10, 100 and N deployments: must not grow), decision CPU
per object (thread CPU of spec parse + `plan_tick`, p50/p99; thread time, because the metrics
read runs in a worker thread of the same process), peak RSS of this (operator-side) process,
and the wall time of one full cycle (batched read + every object's tick + status patch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))

from samples import llama8b_spec, llmd_object  # type: ignore[import-not-found]  # noqa: E402

NAMESPACE = "bench"
QUICK_DEPLOYMENTS = 20  # --quick: enough to run every path, small enough for CI
BUCKETS_S = ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "+Inf")


def deployment_name(index: int) -> str:
    return f"llm-{index:04d}"


# --- the child process: exporter + fake API ------------------------------------------------------


class SyntheticFleet:
    """Exposition text for N one-pod vLLM deployments; counters advance with wall time."""

    def __init__(self, count: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.count = count
        self.started_s = time.time()
        self.kv = [round(rng.uniform(0.2, 0.95), 3) for _ in range(count)]
        self.waiting = [rng.choice((0, 0, 1, 3, 8)) for _ in range(count)]
        self.preempt_per_s = [rng.choice((0.0, 0.0, 0.0, 0.2)) for _ in range(count)]
        self.requests_per_s = [rng.uniform(1.0, 6.0) for _ in range(count)]

    def render(self) -> bytes:
        elapsed_s = time.time() - self.started_s
        lines: list[str] = []
        for i in range(self.count):
            name = deployment_name(i)
            labels = f'namespace="{NAMESPACE}",llmd="{name}",pod="{name}-0"'
            done = self.requests_per_s[i] * elapsed_s
            lines.append(f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv[i]}")
            lines.append(f"vllm:num_requests_running{{{labels}}} {int(self.kv[i] * 40)}")
            lines.append(f"vllm:num_requests_waiting{{{labels}}} {self.waiting[i]}")
            lines.append(
                f"vllm:num_preemptions_total{{{labels}}} {self.preempt_per_s[i] * elapsed_s:.3f}"
            )
            lines.append(
                f'vllm:cache_config_info{{{labels},num_gpu_blocks="3800",block_size="16"}} 1'
            )
            for metric, scale in (
                ("vllm:time_to_first_token_seconds", 1.0),
                ("vllm:inter_token_latency_seconds", 0.1),
                ("vllm:request_queue_time_seconds", 0.5),
            ):
                lines.extend(_histogram(metric, labels, done, scale * (0.5 + self.kv[i])))
        return ("\n".join(lines) + "\n").encode()


def _histogram(metric: str, labels: str, count: float, typical_s: float) -> list[str]:
    out = []
    for le in BUCKETS_S:
        bound = float("inf") if le == "+Inf" else float(le)
        share = 1.0 if bound == float("inf") else min(1.0, bound / (2 * typical_s))
        out.append(f'{metric}_bucket{{{labels},le="{le}"}} {count * share:.2f}')
    out.append(f"{metric}_sum{{{labels}}} {count * typical_s:.3f}")
    out.append(f"{metric}_count{{{labels}}} {count:.2f}")
    return out


def serve_exporter(fleet: SyntheticFleet) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = fleet.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_child(count: int, urls: Any, stop: Any) -> None:
    """Child process: the exporter, until `stop` is set."""
    exporter = serve_exporter(SyntheticFleet(count))
    urls.put(f"127.0.0.1:{exporter.server_port}")
    stop.wait()
    exporter.shutdown()


# --- the operator side -------------------------------------------------------------------------


def llmd_body(name: str) -> dict[str, Any]:
    spec = llama8b_spec(
        "h100_sxm_80gb",
        replicas=1,
        scaling={"maxReplicas": 8, "warmupSeconds": 0},
        rollout={"enabled": False},
    )
    return llmd_object(name, NAMESPACE, spec)


def deployment_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"llmd": name}}},
    }


class InProcessApi:
    """The slice of `KubeClient` the autoscaler uses, over dicts, with wire-like JSON copies."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], str] = {}  # (plural, ns, name) -> JSON
        self.patches = 0
        self.gets = 0

    def create(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(plural, meta["namespace"], meta["name"])] = json.dumps(obj)

    async def get(self, ref: Any, namespace: str | None, name: str) -> dict[str, Any]:
        self.gets += 1
        await asyncio.sleep(0)  # a real call yields to the loop
        loaded: dict[str, Any] = json.loads(self.objects[(ref.plural, namespace or "", name)])
        return loaded

    async def patch_merge(
        self,
        ref: Any,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self.patches += 1
        await asyncio.sleep(0)
        key = (ref.plural, namespace or "", name)
        merged: dict[str, Any] = merge_patch(
            json.loads(self.objects[key]), json.loads(json.dumps(patch))
        )
        self.objects[key] = json.dumps(merged)
        if ref.plural == "llmdeployments" and subresource == "scale":
            self.follow_scale(namespace or "", name, int(patch["spec"]["replicas"]))
        return merged

    def follow_scale(self, namespace: str, name: str, replicas: int) -> None:
        """What the reconcile and the Deployment controller would do: the workload follows
        spec.replicas and (no GPUs to wait for here) every replica is Ready at once."""
        key = ("deployments", namespace, name)
        deployment = json.loads(self.objects[key])
        deployment["spec"]["replicas"] = replicas
        deployment["status"] = dict.fromkeys(
            ("replicas", "readyReplicas", "availableReplicas"), replicas
        )
        self.objects[key] = json.dumps(deployment)

    def body(self, namespace: str, name: str) -> dict[str, Any]:
        """The object as kopf's watch stream would hand it to the timer (not an API call)."""
        loaded: dict[str, Any] = json.loads(self.objects[("llmdeployments", namespace, name)])
        return loaded


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def create_objects(api: InProcessApi, count: int) -> None:
    for i in range(count):
        name = deployment_name(i)
        api.create("llmdeployments", llmd_body(name))
        deployment = deployment_body(name)
        deployment["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
        api.create("deployments", deployment)


class Timed:
    """Thread-CPU time of each call of a synchronous function (the event-loop thread)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.samples_s: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.samples_s.append(time.thread_time() - started)


async def run_cycle(
    autoscaler: Any, kube: InProcessApi, names: list[str], concurrency: int
) -> tuple[float, float, int]:
    """One full cycle: batched read, then every object's tick + status patch. Returns
    (refresh seconds, total seconds, status patches sent)."""
    import kopf

    from kvscale.controller.kube import LLM_DEPLOYMENTS

    started = time.perf_counter()
    await autoscaler.cache.refresh()
    refreshed = time.perf_counter()
    semaphore = asyncio.Semaphore(concurrency)
    patches = 0

    async def one(name: str) -> None:
        nonlocal patches
        async with semaphore:
            body = kube.body(NAMESPACE, name)
            patch = kopf.Patch()
            await autoscaler.tick(body, patch, None)
            status = dict(patch.get("status") or {})
            if status:
                await kube.patch_merge(
                    LLM_DEPLOYMENTS, NAMESPACE, name, {"status": status}, "status"
                )
                patches += 1

    await asyncio.gather(*(one(name) for name in names))
    return refreshed - started, time.perf_counter() - started, patches


def queries_for(source: Any, count: int) -> int:
    from kvscale.metrics import DeploymentTarget

    targets = [
        DeploymentTarget(NAMESPACE, deployment_name(i), "vllm", "0.11.0", 1) for i in range(count)
    ]
    source.fetch(targets)
    return int(source.queries_sent)


def wait_for_series(url: str, count: int, timeout_s: float = 60.0) -> None:
    import json
    import urllib.parse
    import urllib.request

    query = urllib.parse.quote("count(rate(vllm:num_preemptions_total[20s]))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/v1/query?query={query}", timeout=5) as rsp:
            result = json.load(rsp)["data"]["result"]
        if result and int(float(result[0]["value"][1])) >= count:
            return
        time.sleep(1.0)
    raise SystemExit(f"Prometheus did not hold {count} deployments' series in {timeout_s}s")


async def operator_side(args: argparse.Namespace, prom_url: str) -> dict[str, Any]:
    from kvscale.controller import autoscaler as autoscaler_module
    from kvscale.controller import desired
    from kvscale.controller.autoscaler_metrics import AutoscalerMetrics
    from kvscale.controller.kube import KubeClient
    from kvscale.controller.rollout_wiring import RolloutMemory
    from kvscale.controller.settings import ReconcileSettings, Settings
    from kvscale.controller.telemetry import OperatorMetrics
    from kvscale.metrics import PrometheusSource

    # Measurement hooks, patched in by name (the module looks them up at call time).
    events: list[str] = []
    timed_plan = Timed(autoscaler_module.plan_tick)
    timed_parse = Timed(desired.parse_spec)
    hooks = {
        "post_event": lambda body, event: events.append(event.reason),  # counted, not posted
        "plan_tick": timed_plan,
        "parse_spec": timed_parse,
    }
    for attribute, hook in hooks.items():
        # A renamed function must fail here, not leave the real one (kopf.event needs kopf's
        # context and raises LookupError outside it) to break the run halfway.
        if not hasattr(autoscaler_module, attribute):
            raise SystemExit(f"kvscale.controller.autoscaler has no {attribute}: update the hook")
        setattr(autoscaler_module, attribute, hook)

    kube = InProcessApi()
    started = time.perf_counter()
    create_objects(kube, args.deployments)
    create_s = time.perf_counter() - started

    source = PrometheusSource(prom_url, window_s=20, timeout_s=30.0)
    scaling = [queries_for(source, n) for n in (10, 100)]  # N: measured in the cycles
    settings = Settings(reconcile=ReconcileSettings(scaling_interval_s=15.0))
    metrics = AutoscalerMetrics(OperatorMetrics().registry)
    cache = autoscaler_module.SignalsCache(source, interval_s=15.0, metrics=metrics)
    autoscaler = autoscaler_module.Autoscaler(
        settings, cast(KubeClient, kube), cache=cache, metrics=metrics, memory=RolloutMemory()
    )
    names = [deployment_name(i) for i in range(args.deployments)]
    # Cycle 0 registers the targets (the first tick of each object only tracks it).
    await run_cycle(autoscaler, kube, names, args.concurrency)
    cycles = []
    for _ in range(args.cycles):
        timed_plan.samples_s.clear()
        timed_parse.samples_s.clear()
        refresh_s, total_s, patches = await run_cycle(autoscaler, kube, names, args.concurrency)
        cpu = [a + b for a, b in zip(timed_plan.samples_s, timed_parse.samples_s, strict=False)]
        cycles.append((refresh_s, total_s, patches, cpu, cache.last_queries))
    return {
        "create_s": create_s,
        "queries_at": [*scaling, cache.last_queries],
        "cycles": cycles,
        "events": len(events),
        "patches": kube.patches,
        "gets": kube.gets,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(args: argparse.Namespace, result: dict[str, Any], setup_s: float) -> None:
    n = args.deployments
    q10, q100, qn = result["queries_at"]
    all_cpu_ms = [s * 1e3 for cycle in result["cycles"] for s in cycle[3]]
    rows: list[tuple[str, str, str]] = [
        (
            f"PromQL queries per cycle at 10 / 100 / {n} objects",
            f"{q10} / {q100} / {qn}",
            "constant in N",
        ),
        ("decision CPU per object, p50 (ms)", f"{percentile(all_cpu_ms, 0.5):.2f}", ""),
        ("decision CPU per object, p99 (ms)", f"{percentile(all_cpu_ms, 0.99):.2f}", "<= 50"),
        ("decision CPU per object, max (ms)", f"{max(all_cpu_ms):.2f}", ""),
        ("operator-side peak RSS (MiB)", f"{result['rss_mib']:.0f}", "<= 250"),
    ]
    for index, (refresh_s, total_s, patches, cpu, queries) in enumerate(result["cycles"], 1):
        rows.append(
            (
                f"cycle {index}: full cycle wall time (s)",
                f"{total_s:.2f}",
                f"batched read {refresh_s:.2f} s ({queries} queries), {len(cpu)} decisions,"
                f" {patches} status patches",
            )
        )
    cycle_cpu_s = statistics.fmean(sum(c[3]) for c in result["cycles"])
    rows += [
        ("decision CPU of one whole cycle (s)", f"{cycle_cpu_s:.2f}", ""),
        ("scale Events (counted, not posted)", str(result["events"]), ""),
        ("API calls over the run (GET / PATCH)", f"{result['gets']} / {result['patches']}", ""),
        (f"setup: Prometheus up with the series of {n} (s)", f"{setup_s:.1f}", ""),
        (f"setup: {2 * n} objects into the fake API (s)", f"{result['create_s']:.2f}", ""),
    ]
    print(f"\nkvscale operator-scale benchmark: {n} LLMDeployments, {args.cycles} cycles\n")
    print(f"{'figure':<52}{'value':>16}  target / note")
    for label, value, note in rows:
        print(f"{label:<52}{value:>16}  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="ticks in flight at once")
    parser.add_argument(
        "--quick", action="store_true", help="smoke size: 20 objects, 1 cycle (for CI)"
    )
    args = parser.parse_args()
    if args.quick:
        args.deployments, args.cycles = QUICK_DEPLOYMENTS, 1

    from promfixture import PrometheusServer, find_prometheus  # type: ignore[import-not-found]

    binary = find_prometheus()
    if binary is None:
        print("prometheus binary not found on PATH (Debian package `prometheus`)")
        return 2
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    urls, stop = context.Queue(), context.Event()
    child = context.Process(target=run_child, args=(args.deployments, urls, stop), daemon=True)
    child.start()
    exporter = urls.get(timeout=30)
    with tempfile.TemporaryDirectory(prefix="kvscale-bench-") as workdir:
        prometheus = PrometheusServer(binary, Path(workdir), [(exporter, {})]).start()
        try:
            wait_for_series(prometheus.url, args.deployments)
            setup_s = time.perf_counter() - started
            result = asyncio.run(operator_side(args, prometheus.url))
        finally:
            prometheus.stop()
            stop.set()
            child.join(timeout=10)
    report(args, result, setup_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
