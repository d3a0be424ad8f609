"""docs/api.md is the generated field reference; it must not drift from the models."""

from __future__ import annotations

from pathlib import Path

from kvscale.api.crd import build_openapi_schema
from kvscale.api.docs import render_api_docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_matches_the_models():
    assert DOC.read_text(encoding="utf-8") == render_api_docs(), (
        "docs/api.md drifted: run `kvscale crd --docs > docs/api.md`"
    )


def test_every_spec_field_appears_in_the_reference():
    text = render_api_docs()
    spec = build_openapi_schema()["properties"]["spec"]
    for section in ("scaling", "placement", "slo", "rollout", "engine", "kvCache", "workload"):
        for field in spec["properties"][section]["properties"]:
            assert f"| `{field}` |" in text, f"{section}.{field}"
