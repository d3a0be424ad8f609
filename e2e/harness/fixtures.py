"""pytest fixtures of the e2e scenarios (registered by e2e/conftest.py).

Session scope, once: kvscale installed from its chart (CRDs, RBAC, ServiceAccount), extra fake
GPU nodes, a real Prometheus, the engine runner and the operator process. Function scope: a
fresh namespace per scenario, registered with the engine runner and deleted afterwards.
When a test of the session fails, the work dir (operator, engine and Prometheus logs) is kept
and its path printed.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from cluster import Cluster
from harness.engines import EngineRunner
from harness.install import Installation, install
from harness.nodes import H200, L4_X8, add_nodes
from harness.operator import OperatorProcess
from harness.prom import FileSdPrometheus, find_prometheus, free_loopback_port

# Fast loops for the scenarios; specs shorten the per-object windows themselves.
RECONCILE_INTERVAL_S = 3
SCALING_INTERVAL_S = 2.5
# Examples 02-05 on H200 at once need 17 GPUs: pods of 4, 1 and 4 GPUs and one of 8. The
# scheduler spreads pods (least-allocated scoring), so the three smaller pods can land on three
# different nodes and leave no node with 8 free GPUs; a fourth node keeps one whole node free
# whatever order the pods are scheduled in.
EXTRA_H200_NODES = 4
EXTRA_L4_NODES = 14  # 100 one-GPU LLMDeployments, next to what other scenarios left running


@dataclass
class Harness:
    """Everything a scenario drives."""

    cluster: Cluster
    installation: Installation
    prometheus: FileSdPrometheus
    engines: EngineRunner
    operator: OperatorProcess
    work_dir: Path

    def api(self) -> ApiClient:
        return self.cluster.new_api_client()


def chart_values(prometheus_url: str, metrics_port: int, health_port: int) -> dict[str, object]:
    """Values a user would pass to `helm install` for a single-replica, cluster-scope install."""
    return {
        "replicaCount": 1,
        "prometheus": {"url": prometheus_url, "httpTimeoutSeconds": 2},
        "reconcile": {
            "intervalSeconds": RECONCILE_INTERVAL_S,
            "scalingIntervalSeconds": SCALING_INTERVAL_S,
            "applyMode": "server-side",
        },
        "metrics": {"port": metrics_port},
        "health": {"port": health_port},
        "eventLevel": "WARNING",
    }


@contextmanager
def running_stack(cluster: Cluster, work_dir: Path, prometheus_binary: Path) -> Iterator[Harness]:
    """kvscale installed from its chart on `cluster`, with engines, Prometheus and the operator
    running; all stopped on exit. Shared by the e2e session and `make demo-cluster`."""
    with cluster.new_api_client() as api:
        add_nodes(api, "kwok-h200", H200, EXTRA_H200_NODES)
        add_nodes(api, "kwok-l4x8", L4_X8, EXTRA_L4_NODES)
    runner = EngineRunner(cluster.new_api_client, work_dir / "engines").start()
    prometheus = FileSdPrometheus(
        prometheus_binary, work_dir / "prometheus", targets_file=runner.targets_file
    )
    prometheus.workdir.mkdir()
    prometheus.port = free_loopback_port()
    metrics_port, health_port = free_loopback_port(), free_loopback_port()
    values = chart_values(prometheus.url, metrics_port, health_port)
    installation = install(cluster.kubeconfig_path, work_dir, values)
    operator = OperatorProcess(installation, work_dir, {}, health_port)
    try:
        prometheus.start()
        operator.start()
        yield Harness(cluster, installation, prometheus, runner, operator, work_dir)
    finally:
        operator.stop()
        runner.stop()
        prometheus.stop()


@pytest.fixture(scope="session")
def e2e(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    binary = find_prometheus()
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package `prometheus`)")
    work_dir = tmp_path_factory.mktemp("kvscale-e2e")
    failures_before = request.session.testsfailed
    try:
        with running_stack(cluster, work_dir, binary) as harness:
            yield harness
    finally:
        if request.session.testsfailed > failures_before:
            print(f"\nkvscale e2e logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture
def api(e2e: Harness) -> Iterator[ApiClient]:
    with e2e.api() as api_client:
        yield api_client


@pytest.fixture
def namespace(e2e: Harness, api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose engine pods get simulated engines; deleted afterwards."""
    stem = request.node.name.removeprefix("test_")[:30].replace("_", "-").lower().strip("-")
    name = f"e2e-{stem}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api)
    core.create_namespace(body=client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    e2e.engines.watch_namespace(name)
    yield name
    e2e.engines.forget_namespace(name)
    core.delete_namespace(name)
