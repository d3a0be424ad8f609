"""`kvscale validate` on hostile or surprising YAML: bounded answers, every document checked,
and the verdicts the API server gives (field names, nulls, numbers, defaults)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kvscale.api.crd import build_structural_schema
from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.validation import echo, validate_text
from kvscale.cli import main
from kvscale.engines.defaults import DEFAULT_ENGINE_VERSION

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-llama-3.1-8b-l4-l40s-h100.yaml"


def alias_bomb(levels: int = 9) -> str:
    """An LLMDeployment whose maxContextLength is 9**levels nested "lol"s (a few hundred
    bytes of YAML, hundreds of millions of items when walked)."""
    lines = [
        "  annotations:",
        '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    spec = yaml.safe_dump(document["spec"]).replace(
        "maxContextLength: 8192", "maxContextLength: *a8"
    )
    body = "\n".join("  " + line for line in spec.splitlines())
    head = "apiVersion: kvscale.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: bomb\n"
    return head + "\n".join(lines) + "\nspec:\n" + body + "\n"


@pytest.mark.timeout(60)  # the old echo walked the whole expansion: it never finished
def test_an_alias_bomb_is_answered_with_one_bounded_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    assert main(["validate", "-f", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: bomb: spec.maxContextLength: must be an integer (got [[")
    assert len(line) < 300


def test_echo_is_bounded_in_length_and_depth():
    nested: list[object] = ["x" * 10_000]
    for _ in range(50):
        nested = [nested] * 9
    assert len(echo(nested)) < 100
    assert len(echo("y" * 10**6)) < 100
    assert echo(8192) == "8192"


def example_with(*replacements: tuple[str, str]) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def problems_of(text: str) -> list[str]:
    return [f"{r.name}: {p}" for r in validate_text(text) for p in r.problems]


def test_python_attribute_names_are_unknown_fields_as_on_the_server():
    text = example_with(("maxContextLength:", "max_context_length:"))
    assert problems_of(text) == [
        "llama-3-1-8b: spec.maxContextLength: required field is missing; fix: add"
        " maxContextLength (Longest sequence (prompt + output) in tokens; the engine's max"
        " model length.)",
        "llama-3-1-8b: spec.max_context_length: unknown field; fix: write maxContextLength"
        " (the API spells its fields in camelCase)",
    ]


def test_a_misspelt_kind_in_a_later_document_is_a_problem_not_skipped():
    valid = example_with()
    text = valid + "---\n" + valid.replace("kind: LLMDeployment", "kind: LLMDeploymnet")
    (first, second) = validate_text(text)
    assert first.ok
    assert [str(p) for p in second.problems] == [
        "kind: 'LLMDeploymnet' is not served by kvscale.dev/v1alpha1; fix: write kind:"
        " LLMDeployment"
    ]


@pytest.mark.parametrize(
    "document",
    ["- just\n- a list\n", "apiVersion: kvscale.dev/v1alpha1\nmetadata: {name: x}\nspec: {}\n"],
)
def test_a_document_that_is_not_an_object_or_has_no_kind_is_a_problem(document: str):
    results = validate_text(example_with() + "---\n" + document)
    assert [r.ok for r in results] == [True, False]


def test_other_kinds_beside_the_llmdeployment_are_still_skipped():
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: engine}\n"
    assert [r.ok for r in validate_text(example_with() + "---\n" + deployment)] == [True]


@pytest.mark.parametrize(
    "replacement",
    [
        (
            '  engine:\n    name: vllm\n    version: "0.11.0"\n',
            "  engine: null\n  replicas: null\n  kvCache2: null\n",
        ),
        ("    prefixCaching: true\n", "    prefixCaching: null\n"),
        ("  slo:\n", "  rollout: null\n  slo:\n"),
    ],
)
def test_null_fields_are_dropped_and_defaulted_as_the_server_does(replacement: tuple[str, str]):
    """Helm leaves `key: null` where a value was templated out; the server drops it."""
    text = example_with(replacement)
    if "kvCache2" in text:  # an unknown key stays unknown (and a known null is not blamed)
        assert [p.split(": ")[1] for p in problems_of(text)] == ["spec.kvCache2"]
    else:
        assert problems_of(text) == []


def test_a_null_required_field_is_missing_as_on_the_server():
    text = example_with(("  workload:\n", "  workload: null\n  workload_unused:\n"))
    paths = [p.split(": ")[1] for p in problems_of(text)]
    assert "spec.workload" in paths


@pytest.mark.parametrize(
    ("written", "read"), [("1e4", 10000), ("8192.0", 8192), ("1.6384e4", 16384), ("8192", 8192)]
)
def test_numbers_are_read_as_kubectl_sends_them(written: str, read: int):
    (result,) = validate_text(
        example_with(("maxContextLength: 8192", f"maxContextLength: {written}"))
    )
    assert result.ok, result.problems
    assert result.spec is not None and result.spec.max_context_length == read


def test_a_fractional_integer_is_still_refused():
    text = example_with(("maxContextLength: 8192", "maxContextLength: 8192.5"))
    assert problems_of(text) == [
        "llama-3-1-8b: spec.maxContextLength: must be an integer (got 8192.5); fix: write an"
        " integer"
    ]


@pytest.mark.parametrize("engine", ["sglang", "tgi", "trtllm"])
def test_an_engine_without_a_version_is_planned_for_its_own_default_release(engine: str):
    text = example_with(('    name: vllm\n    version: "0.11.0"\n', f"    name: {engine}\n"))
    (result,) = validate_text(text)
    assert result.ok, result.problems
    assert result.spec is not None and result.spec.engine.version is None
    assert result.spec.engine.release == DEFAULT_ENGINE_VERSION[engine]


def test_the_crd_sets_no_engine_version_default():
    engine = build_structural_schema(LLMDeploymentSpec)["properties"]["engine"]
    assert "default" not in engine["properties"]["version"]
    assert "version" not in engine["default"]


def test_the_spec_rules_read_mode_only_when_present():
    """A spec-level rule that reads `self.mode` fails with "no such key: mode" where the
    server evaluates it before `mode` is defaulted."""
    for rule in LLMDeploymentSpec.cel_rules:
        guarded = rule.rule.replace("(has(self.mode) ? self.mode : 'managed')", "")
        assert not re.search(r"self\.mode\b", guarded), rule.rule
