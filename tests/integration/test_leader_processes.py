"""Two real `kvscale run` processes against the fake API server: one acts, one stands by.

This is the install the chart makes by default (two replicas, leader election on). Before the
Lease, kopf peering paused both equal-priority peers and nothing was reconciled. Here: exactly
one process reconciles (its reconcile counter moves, the other's never appears), both are Ready
and say which role they have, and when the leader is killed (SIGKILL: no release) the standby
takes the Lease after the lease duration and reconciles a spec change.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from autoscale_fixture import collect_leaked_sessions
from kube_fixture import DEPLOYMENTS, LEASES, LLMD, FakeCluster, running_fake_cluster, wait_for

from samples import llama8b_spec, llmd_object

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

NS, LEASE_NS = "serving", "kvscale-system"
# Shorter than the defaults (15/10/2) to keep the test short, not so short that a renew on a
# loaded 2-core machine (the fake API server shares the test's process) misses its deadline.
LEASE_DURATION_S = 10.0
ELECTION_ENV = {
    "KVSCALE_LEASE_NAMESPACE": LEASE_NS,
    "KVSCALE_LEASE_DURATION_S": str(LEASE_DURATION_S),
    "KVSCALE_RENEW_DEADLINE_S": "7",
    "KVSCALE_RETRY_PERIOD_S": "1",
    "KVSCALE_RECONCILE_INTERVAL_S": "1",
    "KVSCALE_RETRY_DELAY_S": "0.5",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


@dataclass
class Replica:
    """One `kvscale run` process (a pod of the operator Deployment)."""

    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    metrics_port: int
    log_path: Path

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return get_json(f"http://127.0.0.1:{self.health_port}/readyz")

    def role(self) -> str:
        status, body = self.readiness()
        return str(body.get("role", "")) if status == 200 else ""

    def reconciles(self) -> float:
        """Sum of kvscale_reconcile_total on this replica's /metrics (0 when none)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kvscale_reconcile_total{")
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "operator"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def replicas(
    cluster: FakeCluster, work_dir: Path, names: tuple[str, ...]
) -> Iterator[list[Replica]]:
    config = kubeconfig(work_dir / "kubeconfig", cluster.url)
    kvscale = Path(sys.executable).with_name("kvscale")
    started: list[Replica] = []
    try:
        for name in names:
            health, metrics = free_port(), free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("KVSCALE_")},
                **ELECTION_ENV,
                "KUBECONFIG": str(config),
                "POD_NAME": name,
                "KVSCALE_HEALTH_PORT": str(health),
                "KVSCALE_METRICS_PORT": str(metrics),
                "PYTHONUNBUFFERED": "1",
            }
            log_path = work_dir / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [str(kvscale), "run", "--all-namespaces"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            started.append(Replica(name, process, health, metrics, log_path))
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in started:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=5)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with running_fake_cluster() as fake_cluster:
        yield fake_cluster
    collect_leaked_sessions()


def holder(cluster: FakeCluster) -> str:
    lease = cluster.get(LEASES, LEASE_NS, "kvscale") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def deployment_replicas(cluster: FakeCluster) -> int | None:
    dep = cluster.get(DEPLOYMENTS, NS, "chat")
    return None if dep is None else int(dep["spec"]["replicas"])


async def test_one_replica_acts_and_the_standby_takes_over_when_it_dies(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    with replicas(cluster, tmp_path, ("op-a", "op-b")) as (a, b):
        by_name = {a.name: a, b.name: b}
        leader_name = await wait_for(lambda: holder(cluster), timeout_s=60)
        leader = by_name[leader_name]
        standby = b if leader is a else a
        await wait_for(lambda: leader.role() == "leader", timeout_s=30)
        # standbys are Ready (200) and name the holder
        await wait_for(lambda: standby.readiness()[1].get("holder") == leader.name, timeout_s=30)
        assert standby.readiness() == (200, {**standby.readiness()[1], "role": "standby"})

        await cluster.create(LLMD, llmd_object("chat", NS, llama8b_spec(replicas=2)))
        await wait_for(lambda: deployment_replicas(cluster) == 2, timeout_s=60)
        await wait_for(lambda: leader.reconciles() >= 3, timeout_s=30)
        assert standby.reconciles() == 0, standby.log_tail()

        leader.process.send_signal(signal.SIGKILL)  # a crashed pod: the Lease is not released
        leader.process.wait(timeout=10)
        await wait_for(lambda: holder(cluster) == standby.name, timeout_s=LEASE_DURATION_S * 5)
        await wait_for(lambda: standby.role() == "leader", timeout_s=10)
        await cluster.patch(LLMD, NS, "chat", {"spec": {"replicas": 3}})
        await wait_for(lambda: deployment_replicas(cluster) == 3, timeout_s=60)
        await wait_for(lambda: standby.reconciles() > 0, timeout_s=30)
        lease = cluster.get(LEASES, LEASE_NS, "kvscale") or {}
        assert lease["spec"]["leaseTransitions"] == 1, lease
