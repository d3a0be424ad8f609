"""Object builders: a Workload literal in, Kubernetes objects out (pure, deterministic)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from kvscale.api.podtemplate import RuntimeSpec
from kvscale.controller import builders, enginepod
from kvscale.controller.workload import Drain, Owner, Probes, Workload

OWNER = Owner(name="chat", namespace="serving", uid="0000-uid")


def make_workload(**changes: Any) -> Workload:
    base = Workload(
        owner=OWNER,
        engine="vllm",
        engine_version="0.11.0",
        image="vllm/vllm-openai:v0.11.0",
        command=("vllm", "serve", "org/model"),
        args=("--max-model-len", "8192", "--gpu-memory-utilization", "0.9"),
        port=8000,
        health_path="/health",
        metrics_path="/metrics",
        gpus_per_replica=1,
        gpu_label_key="nvidia.com/gpu.product",
        gpu_label_values=("NVIDIA-L40S",),
        replicas=2,
    )
    return dataclasses.replace(base, **changes)


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def engine(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_spec(deployment)["containers"][0]
    return container


def test_deployment_runs_the_rendered_command_and_args() -> None:
    workload = make_workload()
    container = engine(builders.build_deployment(workload, pod_monitor=True))
    assert container["command"] == list(workload.command)
    assert container["args"] == list(workload.args)
    assert container["image"] == workload.image


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_gpu_limits_equal_gpus_per_replica(gpus: int) -> None:
    container = engine(
        builders.build_deployment(make_workload(gpus_per_replica=gpus), pod_monitor=True)
    )
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)


@pytest.mark.parametrize(("gpus", "shm_size"), [(1, "1024Mi"), (2, "2048Mi"), (4, "4096Mi")])
def test_every_replica_gets_a_sized_shared_memory_volume(gpus: int, shm_size: str) -> None:
    workload = make_workload(
        gpus_per_replica=gpus, pod=enginepod.size_pod(2**30, gpus, RuntimeSpec(), None)
    )
    deployment = builders.build_deployment(workload, pod_monitor=True)
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in engine(deployment)["volumeMounts"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": shm_size}
    assert mounts["/dev/shm"] == "dshm"


@pytest.mark.parametrize(
    "values", [("NVIDIA-L40S",), ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB")]
)
def test_node_affinity_requires_the_selected_gpu_product(values: tuple[str, ...]) -> None:
    deployment = builders.build_deployment(make_workload(gpu_label_values=values), pod_monitor=True)
    terms = pod_spec(deployment)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": list(values)}
            ]
        }
    ]


def test_no_affinity_when_the_gpu_has_no_product_label() -> None:
    deployment = builders.build_deployment(make_workload(gpu_label_values=()), pod_monitor=True)
    assert "affinity" not in pod_spec(deployment)


def test_gpu_taint_is_tolerated_before_user_tolerations() -> None:
    user = (("effect", "NoSchedule"), ("key", "dedicated"), ("operator", "Equal"), ("value", "llm"))
    tolerations = pod_spec(
        builders.build_deployment(make_workload(tolerations=(user,)), pod_monitor=True)
    )["tolerations"]
    assert tolerations[0]["key"] == "nvidia.com/gpu"
    assert tolerations[1] == dict(user)


def test_extra_node_selector_is_copied_and_absent_when_empty() -> None:
    with_selector = make_workload(node_selector=(("pool", "gpu-a"),))
    assert pod_spec(builders.build_deployment(with_selector, pod_monitor=True))["nodeSelector"] == {
        "pool": "gpu-a"
    }
    assert "nodeSelector" not in pod_spec(
        builders.build_deployment(make_workload(), pod_monitor=True)
    )


def test_probes_use_engine_health_path_and_startup_covers_the_timeout() -> None:
    workload = make_workload(
        health_path="/healthz", probes=Probes(startup_timeout_s=1205, startup_period_s=10)
    )
    container = engine(builders.build_deployment(workload, pod_monitor=True))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 1205
    assert (startup["failureThreshold"] - 1) * startup["periodSeconds"] < 1205


def test_drain_sleeps_before_sigterm_within_the_grace_period() -> None:
    workload = make_workload(drain=Drain(pre_stop_sleep_s=20, grace_period_s=90))
    deployment = builders.build_deployment(workload, pod_monitor=True)
    assert engine(deployment)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 90


@pytest.mark.parametrize(("pod_monitor", "scrape_annotation"), [(True, None), (False, "true")])
def test_scrape_annotations_only_without_pod_monitor(
    pod_monitor: bool, scrape_annotation: str | None
) -> None:
    workload = make_workload(port=9000, metrics_path="/metrics")
    annotations = builders.build_deployment(workload, pod_monitor=pod_monitor)["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert annotations.get("prometheus.io/scrape") == scrape_annotation
    if not pod_monitor:
        assert annotations["prometheus.io/port"] == "9000"
        assert annotations["prometheus.io/path"] == "/metrics"


def test_plan_hash_changes_with_args_and_not_with_replicas() -> None:
    def template_hash(workload: Workload) -> str:
        return str(
            builders.build_deployment(workload, pod_monitor=True)["spec"]["template"]["metadata"][
                "annotations"
            ]["kvscale.dev/plan-hash"]
        )

    base = make_workload()
    assert template_hash(base) != template_hash(make_workload(args=("--max-model-len", "16384")))
    assert template_hash(base) == template_hash(make_workload(replicas=7))


def test_pod_label_llmd_and_selector_match_every_object() -> None:
    workload = make_workload()
    deployment = builders.build_deployment(workload, pod_monitor=True)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["llmd"] == "chat"
    assert pod_labels["app.kubernetes.io/managed-by"] == "kvscale"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    for obj in (builders.build_pdb(workload), builders.build_pod_monitor(workload)):
        assert obj["spec"]["selector"]["matchLabels"] == selector
    assert builders.build_service(workload)["spec"]["selector"] == selector
    assert builders.selector_string("chat") == "kvscale.dev/deployment=chat"


def test_every_object_is_owned_by_the_llmdeployment() -> None:
    workload = make_workload()
    for obj in builders.build_objects(workload, pod_monitor=True, scrape_interval_s=15):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "kvscale.dev/v1alpha1",
            "kind": "LLMDeployment",
            "name": "chat",
            "uid": "0000-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == "serving"


@pytest.mark.parametrize(
    ("pod_monitor", "kinds"),
    [
        (True, ["Deployment", "Service", "PodDisruptionBudget", "PodMonitor"]),
        (False, ["Deployment", "Service", "PodDisruptionBudget"]),
    ],
)
def test_build_objects_kinds(pod_monitor: bool, kinds: list[str]) -> None:
    objects = builders.build_objects(make_workload(), pod_monitor=pod_monitor, scrape_interval_s=15)
    assert [o["kind"] for o in objects] == kinds


def test_pod_monitor_relabels_llmd_and_uses_the_metrics_path() -> None:
    monitor = builders.build_pod_monitor(make_workload(metrics_path="/m"), interval_s=30)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/m"
    assert endpoint["interval"] == "30s"
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_llmd"],
        "targetLabel": "llmd",
        "action": "replace",
    } in endpoint["relabelings"]


def relabel_name(rules: list[dict[str, Any]], name: str) -> str:
    """Prometheus `replace` semantics on __name__: fully anchored regex, ${n} groups."""
    for rule in rules:
        assert rule["sourceLabels"] == ["__name__"] and rule["targetLabel"] == "__name__"
        match = re.fullmatch(rule["regex"], name)
        if match:
            template = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", rule["replacement"])
            name = match.expand(template)
    return name


@pytest.mark.parametrize(
    ("scraped", "stored"),
    [
        ("vllm_kv_cache_usage_perc", "vllm:kv_cache_usage_perc"),
        ("vllm_time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_bucket"),
        ("sglang_token_usage", "sglang:token_usage"),
        ("vllm:num_requests_waiting", "vllm:num_requests_waiting"),  # already right: untouched
        ("process_cpu_seconds_total", "process_cpu_seconds_total"),
    ],
)
def test_pod_monitor_restores_the_engines_colon_names(scraped: str, stored: str) -> None:
    (endpoint,) = builders.build_pod_monitor(make_workload())["spec"]["podMetricsEndpoints"]
    assert relabel_name(endpoint["metricRelabelings"], scraped) == stored


def test_service_targets_the_named_engine_port() -> None:
    (port,) = builders.build_service(make_workload(port=8080))["spec"]["ports"]
    assert port == {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    container_port = engine(builders.build_deployment(make_workload(port=8080), pod_monitor=True))[
        "ports"
    ][0]
    assert container_port["name"] == "http"
    assert container_port["containerPort"] == 8080


def test_builders_are_deterministic() -> None:
    first = builders.build_objects(make_workload(), pod_monitor=True, scrape_interval_s=15)
    second = builders.build_objects(make_workload(), pod_monitor=True, scrape_interval_s=15)
    assert first == second
