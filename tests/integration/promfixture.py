"""A real Prometheus server and fake serving-engine pods for integration tests.

`PrometheusServer` runs the Prometheus binary on a free loopback port with a generated config
(1 s scrape interval, static targets carrying the `namespace`/`llmd`/`pod` labels the operator's
scrape config adds in a cluster). `EnginePod` is an HTTP `/metrics` endpoint that speaks a
serving engine's metric names, spelled out here from the engine reference rather than taken
from `kvscale.engines`, so a wrong name in the engines table fails the test.

Reusable by other suites: `from promfixture import PrometheusServer, EnginePod, …` (the
integration conftest puts this directory on the import path).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kvscale.metrics.scrape import metric_relabel_configs

PROMETHEUS_BINARY = "prometheus"
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def find_prometheus() -> str | None:
    """Path of the Prometheus binary, or None (callers skip with a reason)."""
    return shutil.which(PROMETHEUS_BINARY)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class EngineNames:
    """Series names one engine release exports (the exporter side of the contract)."""

    kv_usage: str
    running: str
    waiting: str
    preemptions: str  # counter name without `_total` (prometheus_client appends it)
    ttft: str
    itl: str
    queue_time: str
    rejections: str | None = None  # counter, without `_total`
    cache_info: str | None = None  # info gauge with num_gpu_blocks / block_size labels
    capacity_tokens: str | None = None  # gauge of the pool size in tokens


VLLM_V1 = EngineNames(  # vLLM ≥ 0.11 (reference §1.3)
    kv_usage="vllm:kv_cache_usage_perc",
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    preemptions="vllm:num_preemptions",
    ttft="vllm:time_to_first_token_seconds",
    itl="vllm:inter_token_latency_seconds",
    queue_time="vllm:request_queue_time_seconds",
    cache_info="vllm:cache_config_info",
)
VLLM_OLD = EngineNames(  # vLLM ≤ 0.10.2: old KV and ITL names
    kv_usage="vllm:gpu_cache_usage_perc",
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    preemptions="vllm:num_preemptions",
    ttft="vllm:time_to_first_token_seconds",
    itl="vllm:time_per_output_token_seconds",
    queue_time="vllm:request_queue_time_seconds",
    cache_info="vllm:cache_config_info",
)
SGLANG = EngineNames(  # SGLang 0.5.x (reference §2.3)
    kv_usage="sglang:token_usage",
    running="sglang:num_running_reqs",
    waiting="sglang:num_queue_reqs",
    preemptions="sglang:num_retracted_requests",
    ttft="sglang:time_to_first_token_seconds",
    itl="sglang:inter_token_latency_seconds",
    queue_time="sglang:queue_time_seconds",
    rejections="sglang:num_aborted_requests",
    capacity_tokens="sglang:max_total_num_tokens",
)


class EnginePod:
    """One fake engine pod: a real HTTP /metrics endpoint on 127.0.0.1."""

    def __init__(self, names: EngineNames, *, namespace: str, llmd: str, pod: str) -> None:
        self.names = names
        self.labels = {"namespace": namespace, "llmd": llmd, "pod": pod}
        self.registry = CollectorRegistry()
        reg = self.registry
        self.kv_usage = Gauge(names.kv_usage, "KV usage 0..1", registry=reg)
        self.running = Gauge(names.running, "running requests", registry=reg)
        self.waiting = Gauge(names.waiting, "waiting requests", registry=reg)
        self.preemptions = Counter(names.preemptions, "preemptions", registry=reg)
        self.ttft = Histogram(names.ttft, "TTFT", buckets=LATENCY_BUCKETS_S, registry=reg)
        self.itl = Histogram(names.itl, "ITL", buckets=LATENCY_BUCKETS_S, registry=reg)
        self.queue_time = Histogram(
            names.queue_time, "queue", buckets=LATENCY_BUCKETS_S, registry=reg
        )
        self.rejections = (
            Counter(names.rejections, "rejections", registry=reg) if names.rejections else None
        )
        self.cache_info = (
            Gauge(names.cache_info, "cache config", ["num_gpu_blocks", "block_size"], registry=reg)
            if names.cache_info
            else None
        )
        self.capacity_tokens = (
            Gauge(names.capacity_tokens, "pool tokens", registry=reg)
            if names.capacity_tokens
            else None
        )
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=reg)
        self.address = f"127.0.0.1:{self._server.server_port}"

    def set_state(
        self,
        *,
        kv_usage: float,
        running: float = 0.0,
        waiting: float = 0.0,
        num_gpu_blocks: int | None = None,
        block_size: int = 16,
        capacity_tokens: int | None = None,
    ) -> EnginePod:
        self.kv_usage.set(kv_usage)
        self.running.set(running)
        self.waiting.set(waiting)
        if self.cache_info is not None and num_gpu_blocks is not None:
            self.cache_info.labels(str(num_gpu_blocks), str(block_size)).set(1)
        if self.capacity_tokens is not None and capacity_tokens is not None:
            self.capacity_tokens.set(capacity_tokens)
        return self

    def serve_requests(
        self, *, ttft_s: float, itl_s: float, queue_s: float, preempt: int = 0
    ) -> None:
        """What one engine step reports: latencies observed, preemptions counted."""
        self.ttft.observe(ttft_s)
        self.itl.observe(itl_s)
        self.queue_time.observe(queue_s)
        if preempt:
            self.preemptions.inc(preempt)

    def stop(self) -> None:
        """Stop serving (idempotent): Prometheus then sees the target down."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


class _FrozenCollector(Collector):
    """Gauges whose samples carry an old explicit timestamp (a pod whose exporter froze)."""

    def __init__(self, values: Mapping[str, float], age_s: float) -> None:
        self.values, self.age_s = values, age_s

    def collect(self) -> Iterable[GaugeMetricFamily]:
        stamp = time.time() - self.age_s
        for name, value in self.values.items():
            family = GaugeMetricFamily(name, "frozen")
            family.add_metric([], value, timestamp=stamp)
            yield family


class FrozenPod:
    """A pod that still answers scrapes but whose samples are `age_s` old (stale data)."""

    def __init__(
        self, values: Mapping[str, float], *, age_s: float, namespace: str, llmd: str
    ) -> None:
        self.labels = {"namespace": namespace, "llmd": llmd, "pod": f"{llmd}-frozen"}
        registry = CollectorRegistry()
        registry.register(_FrozenCollector(values, age_s))
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.address = f"127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        """Stop serving (idempotent): Prometheus then sees the target down."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


@dataclass
class PrometheusServer:
    """The real Prometheus binary on a free loopback port, scraping `targets` every second."""

    binary: str
    workdir: Path
    targets: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)  # (addr, labels)
    web_config: Path | None = None  # TLS / auth (Prometheus --web.config.file)
    restore_colon_names: bool = True  # apply kvscale's metric relabelling (see metrics.scrape)
    port: int = 0
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.web_config is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {
                    "job_name": "engines",
                    "metric_relabel_configs": (
                        metric_relabel_configs() if self.restore_colon_names else []
                    ),
                    "static_configs": [
                        {"targets": [address], "labels": dict(labels)}
                        for address, labels in self.targets
                    ],
                }
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is valid YAML
        return path

    def start(self, ready_timeout_s: float = 20.0) -> PrometheusServer:
        self.port = self.port or free_loopback_port()
        argv = [
            self.binary,
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        if self.web_config is not None:
            argv.append(f"--web.config.file={self.web_config}")
        log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready(ready_timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.log_tail()}")
            if self.web_config is not None:
                time.sleep(0.5)  # readiness over TLS is checked by the test's own client
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return
                continue
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "prometheus.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll `predicate()` until true or the timeout passes (integration tests only)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def stop_all(items: Iterable[EnginePod | FrozenPod]) -> None:
    for item in items:
        item.stop()


def iter_targets(pods: Iterable[EnginePod | FrozenPod]) -> Iterator[tuple[str, Mapping[str, str]]]:
    for pod in pods:
        yield pod.address, pod.labels


# Signatures of the conftest factory fixtures, for annotating tests.
StartPrometheus = Callable[..., PrometheusServer]
StartPod = Callable[..., EnginePod]
StartFrozenPod = Callable[..., FrozenPod]
