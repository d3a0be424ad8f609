"""Install kvscale as a user would: CRDs from crds/, then the chart's RBAC and ServiceAccount.

The chart is rendered by Helm's own engine (`helm-python-sdk`, as tests/unit/test_chart.py
does) and applied with kubectl. The operator Deployment itself is not applied (there is no
container runtime here): its args and environment are read from the rendered manifest and the
operator runs as a local process (`harness.operator`), authenticated as the chart's
ServiceAccount with a TokenRequest token, so the chart's RBAC is what the operator really has.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from harness.kube import kubectl, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "kvscale"
CRDS_DIR = ROOT / "crds"
RELEASE = "kvscale"
NAMESPACE = "kvscale-system"
TOKEN_TTL_S = 6 * 3600
INSTALLED_KINDS = frozenset(
    {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)


@dataclass(frozen=True)
class Installation:
    """What the install produced: the operator's identity and how the chart would run it."""

    kubeconfig_path: Path  # bearer token of the chart's ServiceAccount
    service_account: str
    namespace: str
    operator_args: tuple[str, ...]  # the chart's container args (after the `kvscale` entrypoint)
    operator_env: dict[str, str]  # the chart's literal env values


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for `values` (schema-checked, as `helm install` does)."""
    import helm_python as helm

    chart = helm.Chart.load(str(CHART_DIR))
    chart.validate_schema(values)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def install(kubeconfig: Path, work_dir: Path, values: dict[str, Any]) -> Installation:
    """Apply CRDs and the chart's RBAC/ServiceAccount; write a kubeconfig for the operator."""
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(CRDS_DIR))
    wait_for(lambda: crds_established(kubeconfig), "CRDs Established", 60)
    objects = render_chart(values)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=_namespace_manifest())
    wanted = [o for o in objects if o["kind"] in INSTALLED_KINDS]
    manifest = yaml.safe_dump_all(wanted)
    kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=manifest)
    account = next(o for o in wanted if o["kind"] == "ServiceAccount")["metadata"]["name"]
    container = operator_container(objects)
    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    token_path = work_dir / "operator.kubeconfig"
    write_token_kubeconfig(kubeconfig, token_path, account)
    return Installation(token_path, account, NAMESPACE, tuple(container["args"]), env)


def crds_established(kubeconfig: Path) -> bool:
    """Every CRD reports Established=True. Read as JSON: `kubectl wait` and a jsonpath filter
    both fail while a new CRD's status has no conditions yet (a large schema widens that gap)."""
    crds = json.loads(kubectl(kubeconfig, "get", "crd", "-o", "json"))["items"]
    return all(
        any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )
        for crd in crds
    )


def _namespace_manifest() -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})


def write_token_kubeconfig(admin_kubeconfig: Path, path: Path, account: str) -> None:
    """A kubeconfig with the cluster's server and CA and a TokenRequest token for `account`."""
    from kubernetes import config

    admin = yaml.safe_load(admin_kubeconfig.read_text(encoding="utf-8"))
    cluster = admin["clusters"][0]["cluster"]
    ca_data = cluster.get("certificate-authority-data")
    if ca_data is None:
        ca_path = Path(cluster["certificate-authority"])
        ca_data = base64.b64encode(ca_path.read_bytes()).decode()
    api: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(admin_kubeconfig)
    )
    with api:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_TTL_S)
        )
        response = client.CoreV1Api(api).create_namespaced_service_account_token(
            account, NAMESPACE, request
        )
    token = response.status.token
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": cluster["server"], "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": account}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(kubeconfig), encoding="utf-8")
    path.chmod(0o600)
