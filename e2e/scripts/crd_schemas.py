"""Write kubeconform JSON schemas from CustomResourceDefinitions (one per served version).

kubeconform knows no custom resource; this turns each CRD's `openAPIV3Schema` into the JSON
Schema it loads from `DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`.
Strict, as the API server's pruning is: an object schema with `properties` admits no other
field unless it says `x-kubernetes-preserve-unknown-fields` or has `additionalProperties`.
OpenAPI's `nullable` and `x-kubernetes-int-or-string` become JSON Schema types.

Usage: python e2e/scripts/crd_schemas.py OUT_DIR CRD.yaml...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


class CrdLoader(yaml.SafeLoader):
    """YAML 1.2 reading of CRDs: a bare `=` (an enum value in some CRDs) is a string, not
    YAML 1.1's `value` tag that PyYAML cannot construct."""


CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: node.value)


def to_json_schema(node: Any) -> Any:
    """The JSON Schema of one OpenAPI v3 (structural) schema node."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def write_schemas(crd: dict[str, Any], out_dir: Path) -> list[Path]:
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    written = []
    for version in spec["versions"]:
        schema = to_json_schema(version["schema"]["openAPIV3Schema"])
        # metadata is validated by the API server itself, not by the CRD's schema.
        schema.setdefault("properties", {})["metadata"] = {"type": "object"}
        path = out_dir / group / f"{kind.lower()}_{version['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=1), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    for name in argv[1:]:
        for doc in yaml.load_all(Path(name).read_text(encoding="utf-8"), Loader=CrdLoader):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                write_schemas(doc, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
