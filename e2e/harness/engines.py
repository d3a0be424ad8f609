"""Simulated serving engines for the engine pods the cluster runs (kwok has no containers).

`EngineRunner` polls the API for Pods labelled `llmd` in the namespaces a test registered. For
every Running pod it starts one `python -m kvscale.sim.server` on a free 127.0.0.1 port with the
pod's own container command and args, on the GPU type of the node the scheduler chose, so the
engine sizes its KV pool from the flags the operator rendered. When the pod is deleted the engine
leaves the targets at once and is drained like the pod's container: SIGTERM (the simulator
finishes the requests it holds), killed after the pod's termination grace period. It keeps a
Prometheus file_sd file listing every engine with the `namespace`, `pod` and `llmd` labels
kvscale's scrape config attaches in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from cluster import GPU_PRODUCT_LABEL
from harness.kube import get_llmd
from harness.prom import free_loopback_port
from harness.realvllm import kill_group
from kvscale.capacity import find_gpu
from kvscale.engines import EngineMetrics, metric_queries

LABEL_LLMD = "llmd"
POLL_S = 0.5
STOP_TIMEOUT_S = 5.0
DEFAULT_GRACE_S = 30.0  # a pod's terminationGracePeriodSeconds when it sets none

# Starts the engine process of one pod: (the pod's container args, port, log file) -> process.
# A namespace without one gets simulated engines; harness.realvllm provides the real vLLM's.
Launcher = Callable[[list[str], int, Path], subprocess.Popen[bytes]]


@dataclass
class Engine:
    """One simulated engine process standing in for one pod."""

    namespace: str
    pod: str
    uid: str
    llmd: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics: EngineMetrics  # the series names its engine release exposes
    grace_s: float = DEFAULT_GRACE_S
    listening: bool = False  # set once its port accepted a connection
    own_group: bool = False  # started in its own process group (stopped with its children)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepts_connections(self) -> bool:
        """Whether the simulator listens yet (a Service only routes to Ready endpoints)."""
        if not self.listening and self.process.poll() is None:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.05).close()
                self.listening = True
        return self.listening and self.process.poll() is None

    def idle(self) -> bool:
        """No request running or waiting (its own /metrics: no scrape or rate-window lag).
        An engine that exited serves nothing; one that does not answer is not known idle."""
        if self.process.poll() is not None:
            return True
        busy = self.metric_sum(self.metrics.num_requests_running, self.metrics.num_requests_waiting)
        return busy == 0

    def samples(self) -> list[Any] | None:
        """Every sample on the engine's own /metrics (None: no answer)."""
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def metric_sum(self, *names: str | None) -> float | None:
        """The sum of the named series on the engine's own /metrics (None: no answer)."""
        samples = self.samples()
        if samples is None:
            return None
        wanted = {name for name in names if name}
        return sum(sample.value for sample in samples if sample.name in wanted)

    def info_labels(self, name: str | None) -> dict[str, str] | None:
        """The labels of an info gauge (e.g. cache_config_info) on the engine's own /metrics."""
        found = [s for s in self.samples() or () if name and s.name == name]
        return dict(found[0].labels) if found else None

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        if self.own_group:
            kill_group(self.process, grace_s)
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class EngineRunner:
    """Background thread mirroring engine pods into local simulator processes."""

    new_api_client: Any  # Callable[[], ApiClient]
    work_dir: Path
    time_scale: float = 1.0
    namespaces: set[str] = field(default_factory=set)
    launchers: dict[str, Launcher] = field(default_factory=dict)  # namespace -> real engines
    engines: dict[str, Engine] = field(default_factory=dict)  # by pod uid
    sim_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by namespace
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _draining: list[tuple[Engine, threading.Thread]] = field(default_factory=list)

    @property
    def targets_file(self) -> Path:
        return self.work_dir / "targets.json"

    def start(self) -> EngineRunner:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        self._thread = threading.Thread(target=self._run, name="engine-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for engine in self.engines.values():
                engine.stop()
            self.engines.clear()
        for engine, drain in self._draining:  # the session is over: no grace left
            engine.process.kill()
            drain.join(timeout=STOP_TIMEOUT_S)
        self._draining.clear()
        self._write_targets()

    def watch_namespace(self, namespace: str) -> None:
        with self._lock:
            self.namespaces.add(namespace)

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            self.namespaces.discard(namespace)
            self.sim_flags.pop(namespace, None)
            self.launchers.pop(namespace, None)

    def set_sim_flags(self, namespace: str, *flags: str) -> None:
        """Simulator flags for the engines started from now on in `namespace` (e.g.
        `--sim-kv-pool-fraction 0.9`: engines that hold less KV than the plan)."""
        with self._lock:
            self.sim_flags[namespace] = flags

    def use_launcher(self, namespace: str, launcher: Launcher) -> None:
        """Back this namespace's engine pods with `launcher` instead of simulated engines."""
        with self._lock:
            self.launchers[namespace] = launcher

    def engines_of(self, namespace: str, llmd: str) -> list[Engine]:
        with self._lock:
            return [
                e
                for e in self.engines.values()
                if e.namespace == namespace and e.llmd == llmd and e.process.poll() is None
            ]

    def serving_urls(self, namespace: str, llmd: str) -> list[str]:
        """Base URLs of the engines that accept requests: what a Service would route to."""
        return [e.url for e in self.engines_of(namespace, llmd) if e.accepts_connections()]

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        with self.new_api_client() as api:
            while not self._stop.is_set():
                try:
                    self._sync(api)
                except Exception as error:  # keep mirroring; tests read .errors
                    self.errors.append(f"{type(error).__name__}: {error}")
                self._stop.wait(POLL_S)

    def _sync(self, api: ApiClient) -> None:
        with self._lock:
            namespaces = set(self.namespaces)
        pods = client.CoreV1Api(api).list_pod_for_all_namespaces(label_selector=LABEL_LLMD).items
        live = {
            p.metadata.uid: p
            for p in pods
            if p.metadata.namespace in namespaces
            and p.metadata.deletion_timestamp is None
            and p.status is not None
            and p.status.phase == "Running"
        }
        changed = False
        with self._lock:
            gone = [uid for uid in self.engines if uid not in live]
            for uid in gone:
                self._drain(self.engines.pop(uid))
                changed = True
        for uid, pod in live.items():
            if uid not in self.engines:
                engine = self._start_engine(api, pod)
                if engine is not None:
                    with self._lock:
                        self.engines[uid] = engine
                    changed = True
        if changed:
            self._write_targets()

    def _drain(self, engine: Engine) -> None:
        """Stop a deleted pod's engine in the background, as the kubelet would."""
        drain = threading.Thread(target=engine.stop, args=(engine.grace_s,), daemon=True)
        drain.start()
        self._draining = [(e, t) for e, t in self._draining if t.is_alive()]
        self._draining.append((engine, drain))

    def _start_engine(self, api: ApiClient, pod: Any) -> Engine | None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        llmd_name = pod.metadata.labels[LABEL_LLMD]
        try:
            llmd = get_llmd(api, namespace, llmd_name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        release = engine_release(llmd)
        port = free_loopback_port()
        log_path = self.work_dir / f"{namespace}_{name}.log"
        with self._lock:
            launcher = self.launchers.get(namespace)
        if launcher is not None:
            container = _engine_container(pod, _target_container(llmd))
            process = launcher(list(container.args or []), port, log_path)
        else:
            argv = self._engine_argv(api, pod, llmd, release)
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    _sim_command(argv, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        grace_s = pod.spec.termination_grace_period_seconds
        return Engine(
            namespace,
            name,
            pod.metadata.uid,
            llmd_name,
            port,
            process,
            log_path,
            metric_queries(*release),
            DEFAULT_GRACE_S if grace_s is None else float(grace_s),
            own_group=launcher is not None,
        )

    def _engine_argv(
        self, api: ApiClient, pod: Any, llmd: dict[str, Any], release: tuple[str, str]
    ) -> list[str]:
        """Our simulator's flags followed by `--` and the pod's engine command line."""
        spec = llmd.get("spec") or {}
        engine, version = release
        container = _engine_container(pod, _target_container(llmd))
        node = client.CoreV1Api(api).read_node(pod.spec.node_name)
        product = (node.metadata.labels or {}).get(GPU_PRODUCT_LABEL, "")
        argv = [
            "--engine",
            engine,
            "--engine-version",
            version,
            "--sim-gpu",
            find_gpu(product).id,
            "--time-scale",
            f"{self.time_scale:g}",
        ]
        with self._lock:
            argv += self.sim_flags.get(pod.metadata.namespace, ())
        model_config = (spec.get("model") or {}).get("config")
        if model_config:
            config_path = self.work_dir / f"{pod.metadata.namespace}_{pod.metadata.name}.json"
            config_path.write_text(str(model_config), encoding="utf-8")
            argv += ["--sim-model-config", str(config_path)]
        return [*argv, "--", *(container.command or []), *(container.args or [])]

    def _write_targets(self) -> None:
        with self._lock:
            groups = [
                {
                    "targets": [f"127.0.0.1:{e.port}"],
                    "labels": {"namespace": e.namespace, "pod": e.pod, LABEL_LLMD: e.llmd},
                }
                for e in self.engines.values()
            ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups), encoding="utf-8")
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file


def engine_release(llmd: dict[str, Any]) -> tuple[str, str]:
    """The engine name and version an LLMDeployment runs (the CRD's defaults when unset)."""
    engine = (llmd.get("spec") or {}).get("engine") or {}
    return str(engine.get("name") or "vllm"), str(engine.get("version") or "0.11.0")


def _sim_command(engine_argv: list[str], port: int) -> list[str]:
    sim_flags, _, engine = _split(engine_argv)
    return [
        sys.executable,
        "-m",
        "kvscale.sim.server",
        "--port",
        str(port),
        *sim_flags,
        "--",
        *engine,
    ]


def _split(argv: list[str]) -> tuple[list[str], str, list[str]]:
    index = argv.index("--")
    return argv[:index], "--", argv[index + 1 :]


def _target_container(llmd: dict[str, Any]) -> str | None:
    return ((llmd.get("spec") or {}).get("targetRef") or {}).get("container")


def _engine_container(pod: Any, name: str | None) -> Any:
    containers = pod.spec.containers
    for container in containers:
        if name is None or container.name == name:
            return container
    return containers[0]


def wait_engines_listening(engines: list[Engine], timeout_s: float = 30.0) -> None:
    """Block until every engine accepts connections (a simulator takes ~1 s to import and plan;
    it binds its port only once its app has started)."""
    deadline = time.monotonic() + timeout_s
    for engine in engines:
        while not engine.accepts_connections():
            if time.monotonic() > deadline or engine.process.poll() is not None:
                log = engine.log_path.read_text(encoding="utf-8", errors="replace")
                raise AssertionError(f"engine for {engine.pod} not listening:\n{log}")
            time.sleep(0.2)
