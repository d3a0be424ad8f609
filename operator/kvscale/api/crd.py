"""Generate the LLMDeployment CRD from the pydantic models.

pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3
schema. The differences handled here: `$ref`s are inlined, `title`s dropped, `X | None`
(`anyOf` with null) becomes plain `X` (the field is simply omitted), `int | str` (a
Kubernetes quantity) becomes `x-kubernetes-int-or-string`, numeric
`exclusiveMinimum: n` becomes `minimum: n, exclusiveMinimum: true`, `additionalProperties:
false` is dropped (the API server prunes/rejects unknown fields itself), and `default: null`
is dropped. Keys are emitted in one fixed order so `kvscale crd` is byte-stable and CI can
diff it against the committed files.
"""

from __future__ import annotations

from typing import Any

import yaml

from kvscale.api.models import (
    API_GROUP,
    API_VERSION,
    KIND,
    OBJECT_NAME_MAX_LENGTH,
    OBJECT_NAME_PATTERN,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    LLMDeploymentSpec,
)
from kvscale.api.status import LLMDeploymentStatus

CRD_NAME = f"{PLURAL}.{API_GROUP}"

# Output key order of one schema node; unknown keys would be a generator bug (see _order_keys).
_KEY_ORDER: tuple[str, ...] = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
)
INT_OR_STRING = "x-kubernetes-int-or-string"

PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "GPU", "type": "string", "jsonPath": ".status.selectedGpuType"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "KV Util", "type": "number", "jsonPath": ".status.kvUtilization"},
    {"name": "Safe Conc", "type": "number", "jsonPath": ".status.safeConcurrency"},
    {"name": "Planned KV", "type": "integer", "jsonPath": ".status.calibration.plannedKvTokens"},
    {"name": "Live KV", "type": "integer", "jsonPath": ".status.calibration.liveKvTokens"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)

SCALE_SUBRESOURCE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


class SchemaConversionError(ValueError):
    """The models use a JSON-Schema construct that has no structural OpenAPI equivalent."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace `$ref` / single-branch `anyOf|allOf` by the target, keeping sibling keys."""
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "anyOf", "allOf")}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**_resolve(target, defs), **siblings}
    for key in ("anyOf", "allOf"):
        if key in node:
            branches = [b for b in node[key] if b != {"type": "null"}]
            if sorted(b.get("type", "") for b in branches) == ["integer", "string"]:
                return {**siblings, INT_OR_STRING: True}  # a quantity, as core/v1 types it
            if len(branches) != 1:
                raise SchemaConversionError(f"{key} with {len(branches)} non-null branches")
            return {**_resolve(branches[0], defs), **siblings}
    return node


def _to_structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs") or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue  # false: the API server rejects unknown fields; true: see preserve-unknown
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: _to_structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _to_structural(value, defs)
        else:
            out[key] = value
    return _order_keys(out)


def _order_keys(node: dict[str, Any]) -> dict[str, Any]:
    unknown = set(node) - set(_KEY_ORDER)
    if unknown:
        raise SchemaConversionError(f"no structural mapping for {sorted(unknown)}")
    return {key: node[key] for key in _KEY_ORDER if key in node}


def build_structural_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model (by alias, validation mode)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _to_structural(raw, raw.get("$defs", {}))


def build_openapi_schema() -> dict[str, Any]:
    """The whole object's schema: apiVersion/kind/metadata, spec, status."""
    return {
        "description": (
            "LLMDeployment serves one LLM whose limit is KV-cache memory: kvscale plans the KV"
            " capacity per candidate GPU type, renders the engine flags, runs (or adopts) the"
            " workload and autoscales it from engine metrics."
        ),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"description": "API version of this object.", "type": "string"},
            "kind": {"description": "Kind of this object.", "type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "description": (
                            "Also names the Deployment and Service kvscale creates, so it must be"
                            " a DNS-1035 label."
                        ),
                        "type": "string",
                        "maxLength": OBJECT_NAME_MAX_LENGTH,
                        "pattern": OBJECT_NAME_PATTERN,
                    }
                },
            },
            "spec": build_structural_schema(LLMDeploymentSpec),
            "status": build_structural_schema(LLMDeploymentStatus),
        },
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a plain dict (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"kvscale.dev/generated-by": "kvscale crd (do not edit)"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["kvscale"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": build_openapi_schema()},
                    "subresources": {"status": {}, "scale": dict(SCALE_SUBRESOURCE)},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as YAML, byte-stable across runs (the committed files must equal this)."""
    header = "# Generated by `kvscale crd` from kvscale/api/models.py; do not edit.\n"
    body = yaml.safe_dump(
        build_crd(), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    return header + "---\n" + body
