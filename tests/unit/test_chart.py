"""The Helm chart renders, and every rendered object is valid against the Kubernetes schemas.

Rendering uses Helm's own Go engine through the `helm-python-sdk` wheel (import `helm_python`),
offline; validation uses `kubernetes-validate` (strict: unknown fields are errors) for the
oldest Kubernetes release the chart supports and the newest the validator knows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvscale.cli import build_parser

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (pip install helm-python-sdk)"
)
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kvscale"
NAMESPACE = "kvscale-system"
# oldest: x-kubernetes-validations with reason/fieldPath (used by the CRD) need 1.28
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())

DEFAULT: dict[str, Any] = {}
NAMESPACED: dict[str, Any] = {"scope": "namespace", "watchNamespaces": ["team-a", "team-b"]}
SINGLE: dict[str, Any] = {
    "scope": "namespace",
    "replicaCount": 1,
    "leaderElection": {"enabled": False},
}
MODES = {"default": DEFAULT, "namespaced": NAMESPACED, "single-replica": SINGLE}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    rendered = chart.render(values, name="kvscale", namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_schema_valid(mode: str, version: str) -> None:
    objects = render(MODES[mode])
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_chart_crds_are_valid_custom_resource_definitions(version: str) -> None:
    crds = helm.Chart.load(str(CHART)).crds
    assert [c["filename"].rsplit("/", 1)[-1] for c in crds] == ["kvscale.dev_llmdeployments.yaml"]
    for crd in crds:
        obj = yaml.safe_load(crd["data"])
        assert obj["kind"] == "CustomResourceDefinition"
        kubernetes_validate.validate(obj, version, strict=True)


def test_operator_pod_is_hardened() -> None:
    (deployment,) = by_kind(render(DEFAULT), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("values", "replicas", "elected"), [(DEFAULT, 2, True), (SINGLE, 1, False)]
)
def test_replicas_elect_a_leader_unless_single(
    values: dict[str, Any], replicas: int, elected: bool
) -> None:
    objects = render(values)
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert ("--standalone" in container["args"]) is not elected
    env = env_of(container)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # holderIdentity
    assert env["KVSCALE_LEASE_NAMESPACE"] == NAMESPACE
    lease_rules = [
        rule
        for role in by_kind(objects, "Role")
        for rule in role["rules"]
        if "leases" in rule["resources"]
    ]
    if not elected:
        assert lease_rules == []
        return
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-election")]
    assert role["metadata"]["namespace"] == NAMESPACE
    named = [r for r in lease_rules if r.get("resourceNames")]
    assert [r["resourceNames"] for r in named] == [[env["KVSCALE_LEASE_NAME"]]]
    assert not by_kind(objects, "CustomResourceDefinition")  # no kopf peering CRDs any more


def test_probes_budget_and_spread_select_the_operator_pods() -> None:
    objects = render(DEFAULT)
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ports["health"] != ports["metrics"]
    (budget,) = by_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert not by_kind(render(SINGLE), "PodDisruptionBudget")  # one replica: nothing to keep


def test_service_monitor_scrapes_the_metrics_service() -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    objects = render(values)
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    assert not by_kind(render(DEFAULT), "ServiceMonitor")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"health": {"port": 8080}}, "health.port and metrics.port must differ"),
        ({"securityContext": {"privileged": True}}, "/securityContext/privileged"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"tolerations": [{"key": "gpu", "effect": "NoScheduel"}]}, "/tolerations/0/effect"),
        ({"metrics": {"service": {"enabled": True, "type": "NodePort"}}}, "/metrics/service"),
        ({"leaderElection": {"renewDeadlineSeconds": 15}}, "leaseDurationSeconds > renewDeadline"),
        ({"leaderElection": {"enabled": False}}, "replicaCount > 1 needs leaderElection"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service.enabled",
        ),
    ],
)
def test_values_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message.replace(".", r"\.")) as caught:
        render(values)
    assert type(caught.value).__name__ in {"HelmValuesError", "HelmRenderError"}


def test_notes_point_to_files_that_exist() -> None:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render({}, name="kvscale", namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    paths = re.findall(r"\b(?:examples|docs)/[\w./-]+\.(?:yaml|md)\b", notes)
    assert paths, notes
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, missing


@pytest.mark.parametrize(
    ("values", "log_format", "all_namespaces", "standalone"),
    [(DEFAULT, "text", True, False), ({**SINGLE, "logFormat": "json"}, "json", False, True)],
)
def test_operator_args_are_what_kvscale_run_accepts(
    values: dict[str, Any], log_format: str, all_namespaces: bool, standalone: bool
) -> None:
    (deployment,) = by_kind(render(values), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.log_format == log_format
    assert (parsed.all_namespaces, parsed.standalone) == (all_namespaces, standalone)


def rules_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for role in by_kind(objects, kind) for rule in role["rules"]]


def granted(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


@pytest.mark.parametrize("mode", MODES)
def test_rbac_has_no_wildcards_and_never_deletes(mode: str) -> None:
    objects = render(MODES[mode])
    rules = rules_of(objects, "ClusterRole") + rules_of(objects, "Role")
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "delete" not in rule["verbs"]  # children go with their owner through the GC
    assert not granted(rules, "", "secrets")


def test_cluster_scope_grants_workloads_cluster_wide() -> None:
    objects = render(DEFAULT)
    cluster_rules = rules_of(objects, "ClusterRole")
    assert {"create", "patch"} <= granted(cluster_rules, "apps", "deployments")
    assert {"patch"} <= granted(cluster_rules, "kvscale.dev", "llmdeployments/status")
    roles = by_kind(
        objects, "Role"
    )  # the Lease and the calibration record, in the release namespace
    assert sorted((r["metadata"]["namespace"], r["rules"][0]["resources"][0]) for r in roles) == [
        (NAMESPACE, "configmaps"),
        (NAMESPACE, "leases"),
    ]


def test_namespace_scope_grants_workloads_only_in_watched_namespaces() -> None:
    objects = render(NAMESPACED)
    cluster_rules = rules_of(objects, "ClusterRole")
    assert granted(cluster_rules, "apps", "deployments") == set()
    assert granted(cluster_rules, "kvscale.dev", "llmdeployments") == set()
    assert granted(cluster_rules, "apiextensions.k8s.io", "customresourcedefinitions") == {
        "list",
        "watch",
    }
    assert granted(cluster_rules, "", "namespaces") == {"list", "watch"}
    roles = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "kvscale"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert {"create", "patch"} <= granted(role["rules"], "apps", "deployments")
    (deployment,) = by_kind(objects, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KVSCALE_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize("mode", MODES)
def test_calibration_record_is_granted_by_name_in_the_release_namespace(mode: str) -> None:
    """The operator writes one ConfigMap (docs/adr/0013): get/patch by name, create (which
    cannot be limited by name) in the release namespace only, where the env points it."""
    objects = render(MODES[mode])
    (role,) = [
        r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-calibration")
    ]
    assert role["metadata"]["namespace"] == NAMESPACE
    by_verbs = {tuple(rule["verbs"]): rule for rule in role["rules"]}
    assert by_verbs[("get", "patch")]["resourceNames"] == ["kvscale-calibration"]
    assert "resourceNames" not in by_verbs[("create",)]
    (binding,) = [
        b
        for b in by_kind(objects, "RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    (deployment,) = by_kind(objects, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KVSCALE_CALIBRATION_NAMESPACE"] == NAMESPACE
    assert env["KVSCALE_CALIBRATION_CONFIGMAP"] == "kvscale-calibration"


@pytest.mark.parametrize(
    "values",
    [
        {"scope": "everything"},
        {"calibration": {"configMapName": "Not_A_Name", "refreshSeconds": 30}},
        {"replicaCount": 0},
        {"prometheus": {"url": "not a url"}},
        {"unknownKey": True},
        {"prometheusRule": {"kvUsageThreshold": 1.5}},
        {"prometheusRule": {"kvUsageFor": "ten minutes"}},
        {"dashboard": {"enabled": "yes"}},
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        helm.Chart.load(str(CHART)).validate_schema(values)


def test_notes_render_with_the_gitops_hint() -> None:
    rendered = helm.Chart.load(str(CHART)).render({}, name="kvscale", namespace=NAMESPACE)
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "kvscale-system" in notes
    assert "/spec/replicas" in notes


OBSERVABILITY: dict[str, Any] = {
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboard": {"enabled": True, "namespace": "monitoring"},
}


def test_alerts_and_dashboard_render_when_enabled() -> None:
    objects = render(OBSERVABILITY)
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"KvscaleKvHeadroomLow", "KvscalePreemptionsSustained"} <= set(alerts)
    dashboards = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")
    ]
    (dashboard,) = dashboards
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert json.loads(dashboard["data"]["kvscale-overview.json"])["panels"]
    for obj in objects:
        if obj["kind"] != "PrometheusRule":  # a CRD kind the validator has no schema for
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


def test_alert_thresholds_come_from_values() -> None:
    values = {"prometheusRule": {"enabled": True, "kvUsageThreshold": 0.83, "kvUsageFor": "7m"}}
    (rule,) = by_kind(render(values), "PrometheusRule")
    (alert,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "KvscaleKvHeadroomLow"
    ]
    assert alert["expr"].rstrip().endswith("> 0.83")
    assert alert["for"] == "7m"


def test_nothing_for_monitoring_renders_by_default() -> None:
    kinds = {o["kind"] for o in render(DEFAULT)}
    names = {o["metadata"]["name"] for o in render(DEFAULT)}
    assert "PrometheusRule" not in kinds
    assert not any(name.endswith("-dashboard") for name in names)
