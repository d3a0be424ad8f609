"""The kvscale operator as a local process, started the way the chart's Deployment runs it.

Args and environment come from the rendered chart (`harness.install`); the kubeconfig carries
the chart ServiceAccount's token. Each start logs to its own file in the work dir, which the
fixture keeps (and whose tail it prints) when a test fails.

Like the kubelet for the chart's pod, the harness restarts a replica that exited because it
lost its Lease (on a loaded machine a renewal can miss its deadline; the replica then exits by
design so that its pod restarts as a standby). Any other exit is left alone, so a crash stays
visible; a replica the test stops or kills is never restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness.install import Installation

READY_TIMEOUT_S = 30.0
RESTART_BACKOFF_S = 10.0  # the kubelet's first crash-loop back-off
LEASE_LOST_EXIT = "exiting so the pod restarts as a standby"  # run_cmd.py's last log line
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessUsage:
    """CPU seconds (user + system) and peak RSS of a process, read from /proc while it lives."""

    cpu_s: float
    peak_rss_bytes: int


def read_usage(pid: int) -> ProcessUsage:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    fields = stat.rsplit(")", 1)[1].split()
    cpu_ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    peak_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            peak_kib = int(line.split()[1])
    return ProcessUsage(cpu_ticks / CLOCK_TICKS_PER_S, peak_kib * 1024)


@dataclass
class OperatorProcess:
    """`kvscale run` as a subprocess; restartable (scenario: killed mid-scale)."""

    installation: Installation
    work_dir: Path
    env_overrides: dict[str, str]
    health_port: int
    # The pod's name (POD_NAME, the Lease holderIdentity): kept across restarts, as a container
    # restarted in the same pod keeps it and so reclaims its own Lease at once.
    pod_name: str = "e2e-operator"
    process: subprocess.Popen[bytes] | None = None
    log_paths: list[Path] = field(default_factory=list)
    restarts: int = 0  # after a lost Lease, as the kubelet would
    _generation: int = 0  # bumped by every start/stop/kill: an older watcher then retires

    @property
    def log_path(self) -> Path:
        return self.log_paths[-1]

    def start(self) -> OperatorProcess:
        self._spawn()
        self._wait_healthy()
        self._generation += 1
        watcher = threading.Thread(
            target=self._restart_after_lost_lease, args=(self._generation,), daemon=True
        )
        watcher.start()
        return self

    def _restart_after_lost_lease(self, generation: int) -> None:
        while self._generation == generation:
            process = self.process
            if process is not None and process.poll() is not None:
                if LEASE_LOST_EXIT not in self.log_tail(5):
                    return  # a crash: left for the test to see
                time.sleep(RESTART_BACKOFF_S)
                if self._generation != generation:
                    return
                self.restarts += 1
                self._spawn()
            time.sleep(0.5)

    def _spawn(self) -> None:
        kvscale = Path(sys.executable).with_name("kvscale")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KVSCALE_")},
            **self.installation.operator_env,
            **self.env_overrides,
            "KUBECONFIG": str(self.installation.kubeconfig_path),
            "POD_NAME": self.pod_name,
            "PYTHONUNBUFFERED": "1",
        }
        log_path = self.work_dir / f"{self.pod_name}-{len(self.log_paths) + 1}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(kvscale), *self.installation.operator_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def readiness(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, body) of /readyz; (0, {}) when it does not answer."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"operator exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator not healthy after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def usage(self) -> ProcessUsage:
        assert self.process is not None and self.process.poll() is None, "operator not running"
        return read_usage(self.process.pid)

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no graceful kopf shutdown (a crashed pod)."""
        self._generation += 1
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self._generation += 1
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_paths or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(encoding="utf-8", errors="replace") for p in self.log_paths if p.exists()
        )
