"""`kvscale validate -f FILE`: exit codes and the one-line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvscale.cli import main

VALID = """\
apiVersion: kvscale.dev/v1alpha1
kind: LLMDeployment
metadata:
  name: small
spec:
  model:
    name: Qwen/Qwen3-8B
  maxContextLength: 8192
  workload:
    inputTokensP50: 500
    inputTokensP95: 2000
    outputTokensP50: 100
    outputTokensP95: 500
    peakRequestsPerSecond: 2
  placement:
    gpuTypes: [l40s, h100_sxm_80gb]
  scaling:
    minReplicas: {min}
    maxReplicas: {max}
"""

CONFIGMAP_PAIR = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: tiny-config
data:
  config.json: |
    {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "num_attention_heads": 32,
     "num_key_value_heads": 8, "hidden_size": 2048, "intermediate_size": 8192,
     "vocab_size": 128256, "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
---
apiVersion: kvscale.dev/v1alpha1
kind: LLMDeployment
metadata:
  name: tiny
spec:
  model:
    configMapRef: {name: tiny-config}
    uri: acme/tiny
  maxContextLength: 4096
  workload: {inputTokensP50: 100, inputTokensP95: 1000, outputTokensP50: 50,
             outputTokensP95: 500, peakRequestsPerSecond: 1}
  placement: {gpuTypes: [l4]}
"""


def run_validate(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    path = tmp_path / "llmd.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["validate", "-f", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_valid_file_exits_0_with_a_line_per_gpu_type(tmp_path, capsys):
    code, out, err = run_validate(tmp_path, VALID.format(min=1, max=3), capsys)
    assert (code, err) == (0, "")
    assert "small: valid" in out
    assert "l40s:" in out and "h100_sxm_80gb:" in out
    assert "selected " in out


def test_invalid_file_exits_2_naming_field_and_fix(tmp_path, capsys):
    code, out, err = run_validate(tmp_path, VALID.format(min=3, max=2), capsys)
    assert code == 2
    assert out == ""
    assert err.strip().endswith(
        "small: spec.scaling.maxReplicas: must be ≥ minReplicas (3 > 2);"
        " fix: raise maxReplicas or lower minReplicas"
    )


def test_multi_document_file_reports_each_document(tmp_path, capsys):
    text = (
        VALID.format(min=1, max=3)
        + "---\n"
        + VALID.format(min=5, max=4).replace("name: small", "name: broken")
    )
    code, out, err = run_validate(tmp_path, text, capsys)
    assert code == 2
    assert "small: valid" in out
    assert "broken: spec.scaling.maxReplicas" in err


def test_configmap_in_the_same_file_serves_config_map_ref(tmp_path, capsys):
    code, out, err = run_validate(tmp_path, CONFIGMAP_PAIR, capsys)
    assert (code, err) == (0, "")
    assert "tiny: valid" in out


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [unclosed", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no LLMDeployment document"),
    ],
)
def test_unusable_file_is_one_line_exit_2(tmp_path, capsys, text: str, fragment: str):
    code, _, err = run_validate(tmp_path, text, capsys)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_missing_file_is_a_cli_error(tmp_path, capsys):
    code = main(["validate", "-f", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "cannot read" in capsys.readouterr().err


def test_each_gpu_types_warnings_are_printed_under_its_line(tmp_path, capsys):
    """A tight ITL target: the planner's prefill-step warning shows under the GPU it is about."""
    text = VALID.format(min=1, max=3).replace(
        "  scaling:", "  slo: {itlP95Seconds: 0.03, ttftP95Seconds: 5}\n  scaling:"
    )
    code, out, _ = run_validate(tmp_path, text, capsys)
    assert code == 0
    warned, gpu = [], None
    for line in out.splitlines():
        if line.startswith("      warning: a step that prefills a p95 prompt"):
            warned.append(gpu)
        elif not line.startswith("      "):
            gpu = line.split(":")[0].strip(" *")
    assert warned and set(warned) <= {"l40s", "h100_sxm_80gb"}, out
