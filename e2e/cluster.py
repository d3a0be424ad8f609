"""A real Kubernetes control plane for the e2e tier, started with kwokctl from cached binaries.

The heavy lifting is in the shell scripts next to this file (build, up, down) so a developer can
run them by hand; this module drives them for pytest and owns the one step that needs an API
client: creating the fake GPU nodes and waiting until the cluster can schedule workloads.

Run as a script, ``python e2e/cluster.py prepare --kubeconfig K`` is what cluster-up.sh calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

E2E_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = E2E_DIR / "scripts"
NODES_DIR = E2E_DIR / "nodes"
VERSIONS_FILE = E2E_DIR / "controlplane" / "versions.env"

FAKE_NODE_SELECTOR = "type=kwok"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
#: Set to a kubeconfig path to run the suite against that cluster instead of starting one.
EXISTING_KUBECONFIG_ENV = "KVSCALE_E2E_KUBECONFIG"
SESSION_CLUSTER_PREFIX = "kvscale-e2e-"
NODE_READY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.5


class ClusterStartError(RuntimeError):
    """The control plane could not be built or brought up; the message says where the logs are."""


@dataclass(frozen=True)
class ControlPlaneVersions:
    """The pinned component versions (e2e/controlplane/versions.env)."""

    kubernetes: str
    etcd: str
    kwok: str


class Cluster(NamedTuple):
    """What the ``cluster`` fixture yields: unpack as ``kubeconfig_path, new_api_client``."""

    kubeconfig_path: Path
    new_api_client: Callable[[], ApiClient]


def read_versions(path: Path = VERSIONS_FILE) -> ControlPlaneVersions:
    """Parse the KEY=VALUE pin file shared with the shell scripts."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return ControlPlaneVersions(
        kubernetes=values["K8S_VERSION"], etcd=values["ETCD_VERSION"], kwok=values["KWOK_VERSION"]
    )


def check_binaries_cached() -> bool:
    """True when every control-plane binary for the pinned versions is in the cache."""
    result = subprocess.run(
        [str(SCRIPTS_DIR / "build-controlplane.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def ensure_binaries() -> str | None:
    """Build the control plane if needed; return a skip reason when that is impossible.

    A missing Go toolchain (with nothing cached) is a reason to skip, stated plainly; a build
    that starts and fails is an error, never a skip.
    """
    if check_binaries_cached():
        return None
    if shutil.which("go") is None:
        return (
            "e2e control plane binaries are not cached and Go is not installed: install Go >= 1.26 "
            "and run e2e/scripts/build-controlplane.sh (cold build ~15 min on 2 cores)"
        )
    result = subprocess.run(
        ["nice", "-n", "10", str(SCRIPTS_DIR / "build-controlplane.sh")], check=False
    )
    if result.returncode != 0:
        raise ClusterStartError(
            f"e2e/scripts/build-controlplane.sh failed with exit code {result.returncode}"
        )
    return None


def start_cluster(name: str) -> Path:
    """Run cluster-up.sh and return the kubeconfig path it prints on its last stdout line."""
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(SCRIPTS_DIR / "cluster-up.sh"), name],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ClusterStartError(
            f"cluster-up.sh {name} failed (exit {result.returncode}); its stderr says where the "
            "component logs were kept"
        )
    return Path(lines[-1])


def stop_cluster(name: str, *, keep_logs: bool) -> None:
    """Run cluster-down.sh; it fails when a component process survives the delete."""
    command = [str(SCRIPTS_DIR / "cluster-down.sh")]
    if keep_logs:
        command.append("--keep-logs")
    subprocess.run([*command, name], check=True)


def resolve_work_root() -> Path:
    """Parent of the per-cluster work dirs; same rule as cluster_work_dir in scripts/lib.sh."""
    explicit = os.environ.get("KVSCALE_E2E_WORKDIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "kvscale-e2e"


def is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_stale_clusters(work_root: Path | None = None) -> list[str]:
    """Delete clusters left by pytest sessions that died without teardown (name kvscale-e2e-PID).

    A session killed by CI leaves its control plane running; the next session cleans it up
    instead of leaking five processes per aborted run. Returns the names deleted.
    """
    root = work_root or resolve_work_root()
    stale = []
    for cluster_dir in sorted(root.glob(f"{SESSION_CLUSTER_PREFIX}*/kwok/clusters/*")):
        name = cluster_dir.name
        pid_text = name.removeprefix(SESSION_CLUSTER_PREFIX)
        if pid_text.isdigit() and not is_process_alive(int(pid_text)):
            stop_cluster(name, keep_logs=True)
            stale.append(name)
    return stale


def session_cluster_name() -> str:
    return f"{SESSION_CLUSTER_PREFIX}{os.getpid()}"


def new_api_client_factory(kubeconfig_path: Path) -> Callable[[], ApiClient]:
    """A factory so each test gets its own ApiClient (and closes it) against the cluster."""
    from kubernetes import config

    def new_api_client() -> ApiClient:
        api_client: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig_path)
        )
        return api_client

    return new_api_client


def existing_kubeconfig() -> Path | None:
    """The kubeconfig from KVSCALE_E2E_KUBECONFIG, or None to start a kwokctl cluster."""
    value = os.environ.get(EXISTING_KUBECONFIG_ENV, "").strip()
    return Path(value).expanduser() if value else None


@contextmanager
def open_cluster(keep_logs: Callable[[], bool]) -> Iterator[Cluster]:
    """The cluster the suite and `make demo-cluster` run on.

    With KVSCALE_E2E_KUBECONFIG set, that cluster as it is (checked, never started, changed or
    deleted). Otherwise a kwokctl cluster started here from the cached binaries (the caller
    ensures them) and deleted on exit, its logs kept when `keep_logs()` says so.
    """
    existing = existing_kubeconfig()
    if existing is not None:
        check_existing_cluster(existing)
        yield Cluster(existing, new_api_client_factory(existing))
        return
    delete_stale_clusters()
    name = session_cluster_name()
    kubeconfig_path = start_cluster(name)
    try:
        yield Cluster(kubeconfig_path, new_api_client_factory(kubeconfig_path))
    finally:
        stop_cluster(name, keep_logs=keep_logs())


def list_gpu_nodes(api_client: ApiClient) -> dict[str, str]:
    """Node name -> GPU product, for nodes with the product label and nvidia.com/gpu > 0."""
    from kubernetes import client

    nodes = client.CoreV1Api(api_client).list_node(label_selector=GPU_PRODUCT_LABEL).items
    products = {}
    for node in nodes:
        if node.metadata is None or node.status is None:
            continue
        gpus = (node.status.allocatable or {}).get(GPU_RESOURCE, "0")
        if gpus.isdigit() and int(gpus) > 0:
            products[node.metadata.name or ""] = (node.metadata.labels or {})[GPU_PRODUCT_LABEL]
    return products


def check_existing_cluster(kubeconfig_path: Path) -> None:
    """Refuse a cluster the suite cannot use, saying what is missing (never start or change it).

    The scenarios schedule onto GPU nodes by `nvidia.com/gpu.product`; without such a node
    every workload would stay Pending and the failures would say nothing about the cause.
    """
    if not kubeconfig_path.is_file():
        raise ClusterStartError(
            f"{EXISTING_KUBECONFIG_ENV}={kubeconfig_path}: no such file; point it at a kubeconfig"
            " or unset it to start the kwokctl cluster"
        )
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        with new_api_client_factory(kubeconfig_path)() as api_client:
            gpu_nodes = list_gpu_nodes(api_client)
    except (ApiException, ConfigException, HTTPError) as error:
        raise ClusterStartError(
            f"cannot list the nodes of {EXISTING_KUBECONFIG_ENV}={kubeconfig_path}: {error}"
        ) from error
    if not gpu_nodes:
        raise ClusterStartError(
            f"the cluster of {EXISTING_KUBECONFIG_ENV}={kubeconfig_path} has no node labelled"
            f" {GPU_PRODUCT_LABEL} with allocatable {GPU_RESOURCE}; create the fake GPU nodes"
            " (python e2e/cluster.py prepare --kubeconfig ... with kwok running, as"
            " e2e/kind/up.sh does) or label real GPU nodes"
        )


def load_node_manifests(nodes_dir: Path) -> list[dict[str, Any]]:
    """Every Node document in nodes_dir/*.yaml, in file order."""
    import yaml

    manifests: list[dict[str, Any]] = []
    for path in sorted(nodes_dir.glob("*.yaml")):
        with path.open(encoding="utf-8") as stream:
            manifests.extend(doc for doc in yaml.safe_load_all(stream) if doc)
    return manifests


def create_nodes(api_client: ApiClient, manifests: Sequence[dict[str, Any]]) -> None:
    """Create the fake nodes (an existing node is left alone, so re-running is harmless).

    Each manifest goes through the typed model first: the client refuses to read back a node
    whose nodeInfo lacks a field it requires, so a bad manifest must fail here, by name.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    for manifest in manifests:
        node = client.V1Node.from_dict(manifest)
        if node is None:
            raise ClusterStartError("empty node manifest")
        try:
            core.create_node(body=node)
        except ApiException as error:
            if error.status != 409:
                raise


def list_unready_nodes(api_client: ApiClient, names: Sequence[str]) -> list[str]:
    """Names from ``names`` whose Ready condition is not True (or that do not exist)."""
    from kubernetes import client

    nodes = client.CoreV1Api(api_client).list_node(label_selector=FAKE_NODE_SELECTOR).items
    ready = {
        node.metadata.name
        for node in nodes
        if node.metadata is not None and node.status is not None
        for condition in node.status.conditions or []
        if condition.type == "Ready" and condition.status == "True"
    }
    return [name for name in names if name not in ready]


def has_default_service_account(api_client: ApiClient) -> bool:
    """KCM's serviceaccount controller creates it; pods are rejected until it exists."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(api_client).read_namespaced_service_account("default", "default")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def wait_until_schedulable(
    api_client: ApiClient, node_names: Sequence[str], timeout_s: float = NODE_READY_TIMEOUT_S
) -> None:
    """Block until every fake node is Ready and the default ServiceAccount exists."""
    deadline = time.monotonic() + timeout_s
    while True:
        unready = list_unready_nodes(api_client, node_names)
        has_account = has_default_service_account(api_client)
        if not unready and has_account:
            return
        if time.monotonic() > deadline:
            raise ClusterStartError(
                f"after {timeout_s:.0f} s: nodes not Ready {unready}, "
                f"default ServiceAccount present={has_account}"
            )
        time.sleep(POLL_INTERVAL_S)


def prepare_cluster(kubeconfig_path: Path, nodes_dir: Path, timeout_s: float) -> None:
    """Create the fake GPU nodes and wait until workloads can be scheduled onto them."""
    manifests = load_node_manifests(nodes_dir)
    if not manifests:
        raise ClusterStartError(f"no node manifests in {nodes_dir}")
    api_client = new_api_client_factory(kubeconfig_path)()
    with api_client:
        create_nodes(api_client, manifests)
        names = [manifest["metadata"]["name"] for manifest in manifests]
        wait_until_schedulable(api_client, names, timeout_s)
    print(f"{len(manifests)} fake GPU nodes Ready", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line used by cluster-up.sh."""
    parser = argparse.ArgumentParser(description="kvscale e2e control-plane helper")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="create fake GPU nodes and wait until Ready")
    prepare.add_argument("--kubeconfig", type=Path, required=True)
    prepare.add_argument("--nodes-dir", type=Path, default=NODES_DIR)
    prepare.add_argument("--timeout-s", type=float, default=NODE_READY_TIMEOUT_S)
    args = parser.parse_args(argv)
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        prepare_cluster(args.kubeconfig, args.nodes_dir, args.timeout_s)
    except (ClusterStartError, ApiException, HTTPError) as error:
        print(f"cluster not ready: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
