"""`kvscale validate` on hostile or surprising YAML: bounded answers, every document checked,
and the verdicts the API server gives (field names, nulls, numbers, defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kvscale.api.validation import echo
from kvscale.cli import main

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
