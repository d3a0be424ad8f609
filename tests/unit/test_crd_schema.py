"""The generated CRD is structural, documented, bounded and carries the cross-field rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kvscale.api import models
from kvscale.api.base import ApiModel
from kvscale.api.crd import (
    PRINTER_COLUMNS,
    SCALE_SUBRESOURCE,
    build_crd,
    build_openapi_schema,
    render_crd_yaml,
)

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "nullable", "const"}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def node_at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """Follow `.a.b` through properties (and `[...]` filters through items)."""
    node = schema
    for part in dotted.strip(".").split("."):
        name = part.split("[", 1)[0]
        node = node["properties"][name]
        if "[" in part:
            node = node["items"]
    return node


SCHEMA = build_openapi_schema()
NODES = list(walk(SCHEMA))
SPEC_STATUS_NODES = [(p, n) for p, n in NODES if p.startswith((".spec", ".status"))]


def test_every_node_has_a_type_and_no_json_schema_only_keys():
    for path, node in NODES:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if node.get("x-kubernetes-int-or-string"):  # a quantity: structural without a type
            assert set(node) <= {"description", "x-kubernetes-int-or-string"}, path
            continue
        assert "type" in node, path
        assert not FORBIDDEN_KEYS & set(node), (path, FORBIDDEN_KEYS & set(node))
        assert node.get("additionalProperties") is not True, path


def test_only_reserved_fields_preserve_unknown():
    preserved = [p for p, n in NODES if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".status.kopf"]


def test_every_spec_and_status_field_is_described():
    undescribed = [p for p, n in SPEC_STATUS_NODES if not p.endswith(("[]", "{}"))]
    missing = [p for p in undescribed if not dict(NODES)[p].get("description")]
    assert missing == []


def test_strings_lists_and_maps_are_bounded():
    """Bounded sizes keep the API server's CEL cost estimate within budget."""
    unbounded = []
    for path, node in SPEC_STATUS_NODES:
        kind = node.get("type")
        if kind == "string" and not ({"maxLength", "enum", "format"} & set(node)):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_defaults_satisfy_their_own_bounds_and_enums():
    for path, node in SPEC_STATUS_NODES:
        if "default" not in node:
            continue
        value = node["default"]
        if "enum" in node:
            assert value in node["enum"], path
        if "minimum" in node:
            assert value >= node["minimum"], path
        if "maximum" in node:
            assert value <= node["maximum"], path


def api_models() -> list[type[ApiModel]]:
    return [
        obj
        for obj in vars(models).values()
        if isinstance(obj, type) and issubclass(obj, ApiModel) and obj is not ApiModel
    ]


RULE_OWNERS = {
    models.ModelSource: ".spec.model",
    models.WorkloadProfile: ".spec.workload",
    models.Toleration: ".spec.placement.tolerations[]",
    models.PlacementSpec: ".spec.placement",
    models.SloSpec: ".spec.slo",
    models.ScalingSpec: ".spec.scaling",
    models.LLMDeploymentSpec: ".spec",
}


def test_every_model_with_rules_is_checked_here():
    with_rules = {m for m in api_models() if m.cel_rules}
    assert with_rules == set(RULE_OWNERS)


@pytest.mark.parametrize("model", list(RULE_OWNERS), ids=lambda m: m.__name__)
def test_cel_rules_land_on_their_object_with_a_valid_field_path(model: type[ApiModel]):
    node = dict(NODES)[RULE_OWNERS[model]]
    emitted = node["x-kubernetes-validations"]
    assert [r["rule"] for r in emitted] == [r.rule for r in model.cel_rules]
    for entry in emitted:
        assert "; fix: " in entry["message"]
        if "fieldPath" in entry:
            node_at(node, entry["fieldPath"])  # raises KeyError when the path does not exist


@pytest.mark.parametrize(
    ("name", "json_path"), [(c["name"], c["jsonPath"]) for c in PRINTER_COLUMNS]
)
def test_printer_columns_point_at_declared_fields(name: str, json_path: str):
    if json_path.startswith(".metadata"):
        return
    node_at(SCHEMA, json_path.split("[?", 1)[0])


def test_printer_columns_cover_the_issue_list():
    names = {c["name"] for c in PRINTER_COLUMNS}
    assert {"Model", "GPU", "Replicas", "KV Util", "Safe Conc", "Ready"} <= names


@pytest.mark.parametrize(
    ("key", "expected_type"),
    [
        ("specReplicasPath", "integer"),
        ("statusReplicasPath", "integer"),
        ("labelSelectorPath", "string"),
    ],
)
def test_scale_subresource_paths_exist_with_the_right_type(key: str, expected_type: str):
    assert node_at(SCHEMA, SCALE_SUBRESOURCE[key])["type"] == expected_type


def test_crd_has_status_and_scale_subresources_and_short_name():
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == SCALE_SUBRESOURCE
    assert build_crd()["spec"]["names"]["shortNames"] == ["llmd"]


def test_crd_validates_against_the_apiextensions_schema():
    kubernetes_validate.validate(build_crd(), kubernetes_validate.latest_version(), strict=True)


def test_yaml_output_is_stable_and_round_trips():
    text = render_crd_yaml()
    assert text == render_crd_yaml()
    assert yaml.safe_load(text) == build_crd()


@pytest.mark.parametrize(
    "committed",
    ["crds/kvscale.dev_llmdeployments.yaml", "charts/kvscale/crds/kvscale.dev_llmdeployments.yaml"],
)
def test_committed_crd_matches_the_models(committed: str):
    path = REPO / committed
    assert path.read_text(encoding="utf-8") == render_crd_yaml(), (
        f"{committed} drifted: run `kvscale crd > {committed}`"
    )
