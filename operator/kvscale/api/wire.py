"""The spec as the API server reads it: what kubectl and the server do to a manifest before
any rule runs, so that `kvscale validate` (and the operator) judge the same object.

* kubectl parses YAML with go-yaml (floats need no dot: `1e5`) and sends JSON, where an integral
  float is written as an integer (`KubectlYamlLoader`, `as_sent_by_kubectl`);
* the API server drops null fields its schema knows (then fills their defaults) and knows the
  camelCase field names only (`drop_nulls`, `spec_from_wire`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import yaml

from kvscale.api.crd import build_structural_schema
from kvscale.api.models import LLMDeploymentSpec


@cache
def spec_schema() -> dict[str, Any]:
    return build_structural_schema(LLMDeploymentSpec)


class KubectlYamlLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1, reading numbers as kubectl does.

    kubectl parses YAML with go-yaml, whose floats need no dot (`1e5` is 100000.0; PyYAML's
    YAML 1.1 resolver leaves it a string), and sends JSON, where an integral float is written
    as an integer: `maxContextLength: 1e5` reaches the API server as 100000 and is admitted.
    """


KubectlYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)
_JSON_INTEGRAL_FLOAT_MAX = 1e21  # Go's JSON encoder writes integral floats below this as integers


def as_sent_by_kubectl(value: Any) -> Any:
    """`value` after kubectl's JSON encoding: integral floats become integers."""
    memo: dict[int, Any] = {}

    def walk(node: Any) -> Any:
        if id(node) in memo:  # YAML aliases share nodes: each is rewritten once
            return memo[id(node)]
        if isinstance(node, Mapping):
            result: Any = {key: walk(item) for key, item in node.items()}
        elif isinstance(node, list):
            result = [walk(item) for item in node]
        elif (
            isinstance(node, float)
            and math.isfinite(node)
            and node.is_integer()
            and abs(node) < _JSON_INTEGRAL_FLOAT_MAX
        ):
            result = int(node)
        else:
            return node
        memo[id(node)] = result
        return result

    return walk(value)


def drop_nulls(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """`value` without the null fields the API server drops before defaulting.

    The server deletes a null whose schema is known (a property or a map value; not nullable
    in this CRD) and then fills the field's default, if any; Helm templating leaves such
    nulls behind. Nulls in lists and under unknown keys stay, and fail as they do there.
    """
    memo: dict[tuple[int, int], Any] = {}

    def walk(node: Any, sub: Mapping[str, Any] | None) -> Any:
        key = (id(node), id(sub))
        if key not in memo:  # YAML aliases share nodes: each is rewritten once
            if isinstance(node, Mapping):
                memo[key] = {
                    k: walk(v, _field_schema(sub, k))
                    for k, v in node.items()
                    if v is not None or _field_schema(sub, k) is None
                }
            elif isinstance(node, list):
                items = sub.get("items") if sub else None
                memo[key] = [walk(item, items) for item in node]
            else:
                memo[key] = node
        return memo[key]

    return walk(value, schema)


def _field_schema(schema: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    properties: Mapping[str, Any] = schema.get("properties", {})
    if key in properties:
        return properties[key]  # type: ignore[no-any-return]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def spec_from_wire(raw: Any, *, strict: bool = True) -> LLMDeploymentSpec:
    """The spec as the API server reads it: camelCase names only (the Python attribute names
    are unknown fields there too), null fields dropped; `ValidationError` otherwise.

    Strict by default: no `"8192"` -> 8192 or `"yes"` -> true, because the API server refuses
    such values ("must be of type integer"); a lax check here would pass a manifest that
    `kubectl apply` then rejects.
    """
    return LLMDeploymentSpec.model_validate(
        drop_nulls(raw, spec_schema()), strict=strict, by_alias=True, by_name=False
    )
