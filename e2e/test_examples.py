"""Scenario 1: every example applies, is planned, runs on the right GPUs and becomes Ready.

The expectation is computed here, independently of the operator process: `kvscale plan -f`
(the CLI a user runs before applying) says which GPU type each example selects and how many KV
blocks a replica gets there. The Deployment's real command line is then read back from the
cluster and parsed the way the engine parses it; planning that command line must give the same
KV pool, so the flags the operator rendered make the engine size its KV cache as planned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from cluster import GPU_PRODUCT_LABEL, GPU_RESOURCE
from harness.fixtures import Harness
from harness.kube import (
    condition_of,
    get_llmd,
    has_condition,
    kubectl,
    node_labels,
    pods_not_running,
    running_pods,
    wait_for,
)
from kvscale.capacity import find_gpu, plan_capacity
from kvscale.sim.engine_args import parse_engine_args

pytestmark = pytest.mark.e2e

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
READY_TIMEOUT_S = 120.0


def load_examples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def cli_plan(manifest: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """`kvscale plan -f` for one LLMDeployment: the user's view of what will be deployed."""
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    kvscale = Path(sys.executable).with_name("kvscale")
    out = subprocess.run(
        [str(kvscale), "plan", "-f", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)[0]
    return result


def engine_view(argv: list[str], spec: dict[str, Any], gpu: str, tmp_path: Path) -> tuple[int, int]:
    """(KV blocks, max model length) an engine started with `argv` on `gpu` would use."""
    config = (spec.get("model") or {}).get("config")
    config_path = None
    if config:
        config_path = tmp_path / "config.json"
        config_path.write_text(config, encoding="utf-8")
    engine = spec.get("engine") or {}
    name, version = engine.get("name", "vllm"), engine.get("version", "0.11.0")
    args = parse_engine_args(name, version, argv, gpu, config_path)
    return plan_capacity(args.request).num_blocks, args.request.max_model_len_tokens


def provision_claims(api: ApiClient, namespace: str, examples: list[dict[str, Any]]) -> list[str]:
    """A PersistentVolume pre-bound to each example claim: the test cluster has no storage
    provisioner, and a pod whose claim stays Pending is never scheduled."""
    core = client.CoreV1Api(api)
    names = []
    for claim in (d for d in examples if d["kind"] == "PersistentVolumeClaim"):
        name = f"{namespace}-{claim['metadata']['name']}"[:63]
        core.create_persistent_volume(
            body={
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": claim["spec"]["resources"]["requests"],
                    "accessModes": claim["spec"]["accessModes"],
                    "storageClassName": "",
                    "hostPath": {"path": f"/var/lib/kvscale-e2e/{name}"},
                    "claimRef": {"namespace": namespace, "name": claim["metadata"]["name"]},
                },
            }
        )
        names.append(name)
    return names


def check_runtime(pod: Any, spec: dict[str, Any]) -> None:
    """spec.runtime reached the running pod: HF_TOKEN from the Secret, the cache claim mounted."""
    runtime = spec.get("runtime") or {}
    engine = pod.spec.containers[0]
    env = {e.name: e for e in engine.env or []}
    token = runtime.get("hfTokenSecretRef")
    if token:
        ref = env["HF_TOKEN"].value_from.secret_key_ref
        assert (ref.name, ref.key) == (token["name"], token.get("key", "token"))
    cache = runtime.get("modelCache")
    if cache and cache.get("claimName"):
        claims = {
            v.persistent_volume_claim.claim_name
            for v in pod.spec.volumes
            if v.persistent_volume_claim
        }
        assert cache["claimName"] in claims
        assert env["HF_HOME"].value == cache.get("mountPath", "/models")
    template_spec = (spec.get("template") or {}).get("spec") or {}
    if "serviceAccountName" in template_spec:
        assert pod.spec.service_account_name == template_spec["serviceAccountName"]


def check_managed(
    api: ApiClient, namespace: str, llmd: dict[str, Any], expected: dict[str, Any], tmp: Path
) -> None:
    name, spec = llmd["metadata"]["name"], llmd["spec"]
    selected = expected["selectedGpuType"]
    gpu_plan = next(g for g in expected["gpuTypes"] if g["gpuType"] == selected)
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    container = deployment.spec.template.spec.containers[0]
    argv = [*(container.command or []), *(container.args or [])]
    blocks, max_len = engine_view(argv, spec, selected, tmp)
    assert (blocks, max_len) == (gpu_plan["numBlocks"], spec["maxContextLength"]), (name, argv)
    gpus = int(container.resources.limits[GPU_RESOURCE])
    assert gpus == (spec.get("placement") or {}).get("gpusPerReplica", 1), name
    pods = running_pods(api, namespace, f"llmd={name}")
    replicas = (spec.get("scaling") or {}).get("minReplicas", 1)
    assert len(pods) == replicas, name
    for pod in pods:
        check_runtime(pod, spec)
    labels = node_labels(api, [p.spec.node_name for p in pods])
    products = {labels[p.spec.node_name][GPU_PRODUCT_LABEL] for p in pods}
    assert products <= set(find_gpu(selected).label_values), (name, products)


def test_every_example_is_planned_run_on_its_gpu_and_ready(
    e2e: Harness, api: ApiClient, namespace: str, tmp_path: Path
) -> None:
    examples = load_examples()
    llmds = [d for d in examples if d["kind"] == "LLMDeployment"]
    volumes = provision_claims(api, namespace, examples)
    try:
        kubectl(e2e.cluster.kubeconfig_path, "apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
        check_every_example(e2e, api, namespace, tmp_path, llmds)
    finally:
        for name in volumes:
            client.CoreV1Api(api).delete_persistent_volume(name)


def check_every_example(
    e2e: Harness, api: ApiClient, namespace: str, tmp_path: Path, llmds: list[dict[str, Any]]
) -> None:
    def all_ready() -> list[dict[str, Any]] | None:
        objs = [get_llmd(api, namespace, d["metadata"]["name"]) for d in llmds]
        return objs if all(has_condition(o, "Ready", "True") for o in objs) else None

    try:
        live = wait_for(all_ready, "every example Ready", READY_TIMEOUT_S)
    except AssertionError:
        names = [d["metadata"]["name"] for d in llmds]
        states = {n: condition_of(get_llmd(api, namespace, n), "Ready") for n in names}
        pods = pods_not_running(api, namespace)
        pytest.fail(f"not all Ready: {states}\npods: {pods}\n{e2e.operator.log_tail()}")
    for manifest, obj in zip(llmds, live, strict=True):
        expected = cli_plan(manifest, tmp_path)
        status = obj["status"]
        assert status["selectedGpuType"] == expected["selectedGpuType"], obj["metadata"]["name"]
        assert has_condition(obj, "Planned", "True")
        assert has_condition(obj, "CapacitySufficient", "True")
        if obj["spec"].get("mode") == "adopt":
            assert has_condition(obj, "Adopted", "True")
            continue
        check_managed(api, namespace, obj, expected, tmp_path)
