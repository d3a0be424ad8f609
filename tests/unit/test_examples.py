"""Every example LLMDeployment validates through the same path as `kvscale validate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kvscale.api.validation import validate_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
LLMD_FILES = [f for f in FILES if "kind: LLMDeployment" in f.read_text(encoding="utf-8")]

# The required coverage: one example per scenario (file name prefix -> model).
REQUIRED = {
    "01-": "meta-llama/Llama-3.1-8B-Instruct",
    "02-": "meta-llama/Llama-3.3-70B-Instruct",
    "03-": "deepseek-ai/DeepSeek-V3",
    "04-": "openai/gpt-oss-120b",
    "05-": "Qwen/Qwen3-Next-80B-A3B-Instruct",
}


@pytest.mark.parametrize("path", LLMD_FILES, ids=lambda p: p.name)
def test_example_is_valid_and_fits(path: Path):
    results = validate_text(path.read_text(encoding="utf-8"))
    for result in results:
        assert result.ok, [str(p) for p in result.problems]
        assert result.plan is not None and result.plan.selected_gpu_type is not None


def test_examples_cover_the_required_scenarios():
    for prefix, model in REQUIRED.items():
        matches = [f for f in LLMD_FILES if f.name.startswith(prefix)]
        assert len(matches) == 1, prefix
        spec = yaml.safe_load(matches[0].read_text(encoding="utf-8"))["spec"]
        assert spec["model"]["name"] == model


def test_adopt_example_targets_the_deployment_shipped_next_to_it():
    adopt = yaml.safe_load((EXAMPLES / "06-adopt-existing.yaml").read_text(encoding="utf-8"))
    target = yaml.safe_load(
        (EXAMPLES / "06-adopt-target-deployment.yaml").read_text(encoding="utf-8")
    )
    assert adopt["spec"]["mode"] == "adopt"
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert adopt["spec"]["targetRef"]["name"] == target["metadata"]["name"]
    containers = [c["name"] for c in target["spec"]["template"]["spec"]["containers"]]
    assert adopt["spec"]["targetRef"]["container"] in containers


def test_every_example_file_is_one_of_the_checked_kinds():
    kinds = {
        doc["kind"]
        for f in FILES
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8"))
        if doc
    }
    assert kinds <= {
        "LLMDeployment",
        "Deployment",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "ServiceAccount",
    }
