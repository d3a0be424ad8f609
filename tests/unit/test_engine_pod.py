"""spec.runtime and spec.template: what the overlay may change, what kvscale keeps (ADR 0008)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kvscale.api.validation import parse_spec
from kvscale.controller import builders, enginepod
from kvscale.controller.desired import SpecInvalidError, compute_desired
from kvscale.controller.settings import Settings
from samples import llama8b_spec

SPEC = llama8b_spec("l40s")
GIB = 2**30


def with_template(
    template: dict[str, Any], runtime: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {**SPEC, "template": template, "runtime": runtime or {}}


def container(**fields: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "engine", **fields}]}}


def pod(**fields: Any) -> dict[str, Any]:
    return {"spec": fields}


TOKEN = {"hfTokenSecretRef": {"name": "hf"}}
CACHE = {"modelCache": {"claimName": "cache", "mountPath": "/cache"}}
GPU_TERM = {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "Exists"}]}

# (overlay, runtime, the field the refusal must name)
REFUSED = [
    ({"metadata": {"labels": {"llmd": "x"}}}, None, "spec.template.metadata.labels.llmd"),
    (
        {"metadata": {"labels": {"kvscale.dev/deployment": "x"}}},
        None,
        "spec.template.metadata.labels.kvscale.dev/deployment",
    ),
    (
        {"metadata": {"annotations": {"kvscale.dev/plan-hash": "x"}}},
        None,
        "spec.template.metadata.annotations.kvscale.dev/plan-hash",
    ),
    (
        {"metadata": {"annotations": {"prometheus.io/port": "1"}}},
        None,
        "spec.template.metadata.annotations.prometheus.io/port",
    ),
    (pod(volumes=[{"name": "dshm", "emptyDir": {}}]), None, "spec.template.spec.volumes[0].name"),
    (
        pod(volumes=[{"name": "model-cache", "emptyDir": {}}]),
        None,
        "spec.template.spec.volumes[0].name",
    ),
    (
        container(env=[{"name": "A", "value": "1"}, {"name": "HF_TOKEN", "value": "x"}]),
        TOKEN,
        "spec.template.spec.containers[0].env[1].name",
    ),
    (
        container(env=[{"name": "HF_HOME", "value": "/x"}]),
        CACHE,
        "spec.template.spec.containers[0].env[0].name",
    ),
    (
        {
            "spec": {
                "volumes": [{"name": "s", "emptyDir": {}}],
                "containers": [{"volumeMounts": [{"name": "s", "mountPath": "/dev/shm"}]}],
            }
        },
        None,
        "spec.template.spec.containers[0].volumeMounts[0].mountPath",
    ),
    (
        {
            "spec": {
                "volumes": [{"name": "s", "emptyDir": {}}],
                "containers": [{"volumeMounts": [{"name": "s", "mountPath": "/cache/"}]}],
            }
        },
        CACHE,
        "spec.template.spec.containers[0].volumeMounts[0].mountPath",
    ),
    (
        container(volumeMounts=[{"name": "missing", "mountPath": "/m"}]),
        None,
        "spec.template.spec.containers[0].volumeMounts[0].name",
    ),
    (
        container(resources={"requests": {"nvidia.com/gpu": 2}}),
        None,
        "spec.template.spec.containers[0].resources.requests.nvidia.com/gpu",
    ),
    (
        container(resources={"limits": {"nvidia.com/gpu": "1"}}),
        None,
        "spec.template.spec.containers[0].resources.limits.nvidia.com/gpu",
    ),
    (
        container(resources={"limits": {"memory": "lots"}}),
        None,
        "spec.template.spec.containers[0].resources.limits.memory",
    ),
    (container(args=["--x"]), None, "spec.template.spec.containers[0].args"),
    (container(image="mine:1"), None, "spec.template.spec.containers[0].image"),
    (container(ports=[]), None, "spec.template.spec.containers[0].ports"),
    (
        {"spec": {"containers": [{"name": "sidecar"}]}},
        None,
        "spec.template.spec.containers[0].name",
    ),
    (
        pod(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-L4"}),
        None,
        "spec.template.spec.nodeSelector.nvidia.com/gpu.product",
    ),
    (
        pod(
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{}, GPU_TERM]
                    }
                }
            }
        ),
        None,
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchExpressions[0].key",
    ),
    (pod(hostNetwork=True), None, "spec.template.spec.hostNetwork"),
]


@pytest.mark.parametrize(("overlay", "runtime", "field"), REFUSED)
def test_an_overlay_touching_what_kvscale_owns_is_refused_naming_the_field(
    overlay: dict[str, Any], runtime: dict[str, Any] | None, field: str
) -> None:
    spec, problems = parse_spec(with_template(overlay, runtime))
    assert spec is None
    assert [p.path for p in problems] == [field]
    assert problems[0].fix
    with pytest.raises(SpecInvalidError, match=f"^{re.escape(field)}: "):
        compute_desired(
            {"name": "chat", "namespace": "ns"}, with_template(overlay, runtime), Settings()
        )


def test_template_is_refused_in_adopt_mode() -> None:
    adopt = {**SPEC, "mode": "adopt", "targetRef": {"name": "existing"}, "template": {}}
    _, problems = parse_spec(adopt)
    assert [p.path for p in problems] == ["spec.template"]


def test_placement_and_template_node_selectors_must_agree() -> None:
    spec = {**SPEC, "placement": {**SPEC["placement"], "nodeSelector": {"pool": "a"}}}
    _, problems = parse_spec({**spec, "template": pod(nodeSelector={"pool": "b"})})
    assert [p.path for p in problems] == ["spec.template.spec.nodeSelector.pool"]
    _, problems = parse_spec({**spec, "template": pod(nodeSelector={"pool": "a", "zone": "z"})})
    assert problems == []


ACCEPTED = [
    # The same names are free when kvscale does not set them.
    (
        container(
            env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        ),
        None,
    ),
    (container(env=[{"name": "HF_HOME", "value": "/hf"}]), TOKEN),
    (
        {
            "spec": {
                "volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "pvc"}}],
                "containers": [{"volumeMounts": [{"name": "c", "mountPath": "/dev/shm2"}]}],
            }
        },
        CACHE,
    ),
    (container(resources={"requests": {"cpu": 8, "memory": "64Gi"}}), None),
    ({"metadata": {"labels": {"team": "a"}, "annotations": {"example.com/x": "y"}}}, None),
    (pod(nodeSelector={"pool": "gpu"}, priorityClassName="high", runtimeClassName="nvidia"), None),
]


@pytest.mark.parametrize(("overlay", "runtime"), ACCEPTED)
def test_overlays_that_leave_kvscale_fields_alone_are_accepted(
    overlay: dict[str, Any], runtime: dict[str, Any] | None
) -> None:
    spec, problems = parse_spec(with_template(overlay, runtime))
    assert problems == [] and spec is not None


def render(spec: dict[str, Any]) -> dict[str, Any]:
    desired = compute_desired({"name": "chat", "namespace": "ns", "uid": "u"}, spec, Settings())
    assert desired.workload is not None
    template: dict[str, Any] = builders.build_deployment(desired.workload, pod_monitor=True)[
        "spec"
    ]["template"]
    return template


def engine_of(template: dict[str, Any]) -> dict[str, Any]:
    engine: dict[str, Any] = template["spec"]["containers"][0]
    return engine


def test_first_class_token_and_cache_become_env_volume_and_mount() -> None:
    template = render(with_template({}, {**TOKEN, **CACHE}))
    engine = engine_of(template)
    env = {e["name"]: e for e in engine["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env["HF_HOME"]["value"] == "/cache"
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "cache"}
    assert {"name": "model-cache", "mountPath": "/cache"} in engine["volumeMounts"]


def test_overlay_resources_override_defaults_but_never_the_gpu() -> None:
    defaults = engine_of(render(SPEC))["resources"]
    assert set(defaults["requests"]) == {"cpu", "memory", "nvidia.com/gpu"}
    overlay = container(resources={"requests": {"cpu": 8}, "limits": {"memory": "64Gi"}})
    resources = engine_of(render(with_template(overlay)))["resources"]
    assert resources["requests"]["cpu"] == 8
    # a memory limit alone: no default request above it (Kubernetes requests the limit)
    assert "memory" not in resources["requests"]
    assert resources["limits"]["memory"] == "64Gi"
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"


def test_security_context_defaults_are_merged_field_by_field() -> None:
    plain = render(SPEC)
    assert plain["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert engine_of(plain)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    overlay = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            "containers": [{"securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}}],
        }
    }
    merged = render(with_template(overlay))
    assert merged["spec"]["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": 1000,
    }
    assert engine_of(merged)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["IPC_LOCK"]},
    }


def test_gpu_expression_is_anded_into_every_required_node_term() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    rack = {"key": "rack", "operator": "Exists"}
    preferred = [{"weight": 5, "preference": {"matchExpressions": [rack]}}]
    overlay = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchFields": [rack]}]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": preferred,
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                ]
            },
        }
    )
    affinity = render(with_template(overlay))["spec"]["affinity"]
    node = affinity["nodeAffinity"]
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        assert term["matchExpressions"][-1]["key"] == "nvidia.com/gpu.product"
    assert terms[0]["matchExpressions"][0] == zone
    assert terms[1]["matchFields"] == [rack]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    assert "podAntiAffinity" in affinity


def test_metadata_tolerations_and_pod_fields_are_merged() -> None:
    overlay = {
        "metadata": {"labels": {"team": "a"}, "annotations": {"example.com/x": "y"}},
        "spec": {
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "serviceAccountName": "engine",
            "imagePullSecrets": [{"name": "regcred"}],
            "runtimeClassName": "nvidia",
            "priorityClassName": "llm",
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "containers": [{"envFrom": [{"configMapRef": {"name": "cfg"}}]}],
        },
    }
    template = render(with_template(overlay))
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["llmd"] == "chat"
    assert template["metadata"]["annotations"]["example.com/x"] == "y"
    assert "kvscale.dev/plan-hash" in template["metadata"]["annotations"]
    spec = template["spec"]
    assert [t["key"] for t in spec["tolerations"]] == ["nvidia.com/gpu", "dedicated"]
    assert spec["serviceAccountName"] == "engine"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert (spec["runtimeClassName"], spec["priorityClassName"]) == ("nvidia", "llm")
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "zone"
    assert engine_of(template)["envFrom"] == [{"configMapRef": {"name": "cfg"}}]


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_memory_request_holds_the_weights_the_processes_and_shm(gpus: int) -> None:
    small = enginepod.size_pod(4 * GIB, gpus, parse_runtime(), None)
    large = enginepod.size_pod(40 * GIB, gpus, parse_runtime(), None)
    assert large.memory_request_bytes - small.memory_request_bytes >= 36 * GIB * gpus
    assert small.memory_request_bytes >= 4 * GIB * gpus + small.shm_size_bytes
    assert small.shm_size_bytes == gpus * GIB
    more = enginepod.size_pod(4 * GIB, gpus + 1, parse_runtime(), None)
    assert more.cpu_request_millicores > small.cpu_request_millicores


def parse_runtime(**fields: Any) -> Any:
    from kvscale.api.podtemplate import RuntimeSpec

    return RuntimeSpec.model_validate(fields)


def test_shm_size_field_overrides_the_default_and_is_in_the_memory_request() -> None:
    base = enginepod.size_pod(GIB, 1, parse_runtime(), None)
    big = enginepod.size_pod(GIB, 1, parse_runtime(shmSizeBytes=8 * GIB), None)
    assert big.shm_size_bytes == 8 * GIB
    assert big.memory_request_bytes - base.memory_request_bytes == 7 * GIB


@pytest.mark.parametrize(
    ("ttft_s", "output_p95", "itl_s"), [(2.0, 800, 0.08), (3.0, 1500, 0.08), (0.5, 64, 0.05)]
)
def test_grace_covers_the_prestop_sleep_and_a_p95_request(
    ttft_s: float, output_p95: int, itl_s: float
) -> None:
    spec = {
        **SPEC,
        "workload": {**SPEC["workload"], "outputTokensP95": output_p95},
        "slo": {"ttftP95Seconds": ttft_s, "itlP95Seconds": itl_s},
    }
    spec["workload"]["outputTokensP50"] = min(spec["workload"]["outputTokensP50"], output_p95)
    template = render(spec)
    grace = template["spec"]["terminationGracePeriodSeconds"]
    pre_stop = int(engine_of(template)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert grace - pre_stop >= ttft_s + output_p95 * itl_s
    assert pre_stop < grace


def test_startup_window_follows_the_runtime_field() -> None:
    probe = engine_of(render(with_template({}, {"startupTimeoutSeconds": 600})))["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 600
    assert (probe["failureThreshold"] - 1) * probe["periodSeconds"] < 600
