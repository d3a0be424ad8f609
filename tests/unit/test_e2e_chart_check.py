"""The pieces of e2e/scripts/chart-check.sh that are Python: CRD → kubeconform schema
(crd_schemas.py) and the engine objects the operator's reconcile applies for every example
(render_engine_objects.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd_schemas(e2e_importable: Path) -> ModuleType:
    from scripts import crd_schemas as module

    return module


@pytest.fixture(scope="module")
def render_engine_objects(e2e_importable: Path) -> ModuleType:
    from scripts import render_engine_objects as module

    return module


def test_structural_schema_becomes_strict_json_schema(crd_schemas: ModuleType) -> None:
    node = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True},
            "note": {"type": "string", "nullable": True},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    out = crd_schemas.to_json_schema(node)
    assert out["additionalProperties"] is False  # unknown fields are errors, as pruning makes them
    assert out["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert out["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in out["properties"]["free"]
    assert out["properties"]["map"]["additionalProperties"] == {"type": "string"}


def test_our_crd_yields_a_schema_per_served_version(
    crd_schemas: ModuleType, tmp_path: Path
) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "kvscale.dev_llmdeployments.yaml").read_text())
    (path,) = crd_schemas.write_schemas(crd, tmp_path)
    assert path.relative_to(tmp_path).as_posix() == "kvscale.dev/llmdeployment_v1alpha1.json"
    schema = json.loads(path.read_text())
    assert schema["properties"]["spec"]["additionalProperties"] is False


def test_a_bare_equals_sign_in_a_crd_is_a_string(crd_schemas: ModuleType) -> None:
    text = "kind: CustomResourceDefinition\nenum:\n  - =\n  - '!='\n"
    (doc,) = yaml.load_all(text, Loader=crd_schemas.CrdLoader)
    assert doc["enum"] == ["=", "!="]


def test_every_managed_example_renders_its_engine_workload(
    render_engine_objects: ModuleType,
) -> None:
    objects: list[dict[str, Any]] = asyncio.run(render_engine_objects.render(ROOT / "examples"))
    examples = render_engine_objects.llm_deployments(ROOT / "examples")
    managed = {d["metadata"]["name"] for _, d in examples if d["spec"].get("mode") != "adopt"}
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert managed and deployments == managed
    assert {o["kind"] for o in objects} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PodMonitor",
    }
