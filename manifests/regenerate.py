"""Regenerate manifests/base from the Helm chart (cluster scope, default values).

The kustomize base is the chart rendered once with release name `kvscale` in namespace
`kvscale-system`, minus Helm's own labels, plus the namespace and a copy of the generated CRD.
`tests/unit/test_chart_manifests.py` fails when the checked-in files drift from this.

Run from the repository root:  .venv/bin/python manifests/regenerate.py
Needs the `helm-python-sdk` package (import name `helm_python`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kvscale"
BASE = ROOT / "manifests" / "base"
RELEASE, NAMESPACE = "kvscale", "kvscale-system"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
# template file -> manifest file name in the base
FILES = {
    "serviceaccount.yaml": "serviceaccount.yaml",
    "rbac.yaml": "rbac.yaml",
    "deployment.yaml": "deployment.yaml",
    "service.yaml": "service.yaml",
    "pdb.yaml": "pdb.yaml",
}


def strip_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    labels = obj.get("metadata", {}).get("labels", {})
    for key in HELM_ONLY_LABELS:
        labels.pop(key, None)
    return obj


def render_base() -> dict[str, list[dict[str, Any]]]:
    """manifest file name -> its objects, rendered from the chart."""
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    result: dict[str, list[dict[str, Any]]] = {}
    for path, text in rendered.items():
        name = path.rsplit("/", 1)[-1]
        if name in FILES:
            docs = [strip_helm_labels(d) for d in yaml.safe_load_all(text) if d]
            result[FILES[name]] = docs
    return result


def dump(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


def main() -> int:
    BASE.mkdir(parents=True, exist_ok=True)
    for name, docs in render_base().items():
        (BASE / name).write_text(dump(docs))
    (BASE / "crds").mkdir(exist_ok=True)
    shutil.copyfile(
        ROOT / "crds" / "kvscale.dev_llmdeployments.yaml",
        BASE / "crds" / "kvscale.dev_llmdeployments.yaml",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
