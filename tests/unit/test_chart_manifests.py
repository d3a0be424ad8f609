"""manifests/base (kustomize, plain GitOps) is the chart rendered once: no drift, all valid."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "regenerate", ROOT / "manifests" / "regenerate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_base_matches_the_chart() -> None:
    generator = load_generator()
    for name, docs in generator.render_base().items():
        on_disk = [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
        assert on_disk == docs, f"{name} drifted: run manifests/regenerate.py"


def test_base_crd_is_the_generated_crd() -> None:
    copy = (BASE / "crds" / "kvscale.dev_llmdeployments.yaml").read_text()
    assert copy == (ROOT / "crds" / "kvscale.dev_llmdeployments.yaml").read_text()


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = {str(p.relative_to(BASE)) for p in BASE.rglob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize(
    "path", sorted(p.name for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml")
)
def test_every_manifest_is_schema_valid(path: str) -> None:
    (file,) = BASE.rglob(path)
    for obj in yaml.safe_load_all(file.read_text()):
        if obj:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
