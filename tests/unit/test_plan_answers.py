"""The planner's answers are never quietly wrong: an unfit plan is an error unless asked for,
warnings show in every output, fixes stay within the model, one GPU under many names is planned
once, the closest GPU name is suggested, and CR-context messages name CR fields."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest

from kvscale.api.validation import validate_text
from kvscale.capacity import CapacityInputError, PlanRequest, find_gpu, find_model, plan_capacity
from kvscale.cli import main

SEVENTY_B_ON_L4 = ["--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "l4"]
DEPLOYMENT = """\
apiVersion: kvscale.dev/v1alpha1
kind: LLMDeployment
metadata: {{name: chat}}
spec:
  model: {{name: meta-llama/Llama-3.1-8B-Instruct}}
  maxContextLength: {context}
  workload: {{inputTokensP50: 500, inputTokensP95: 2000, outputTokensP50: 100,
             outputTokensP95: 500, peakRequestsPerSecond: 2}}
  placement: {{gpuTypes: {gpus}}}
  slo: {{ttftP95Seconds: 5, itlP95Seconds: {itl}}}
"""


def deployment(gpus: str = "[l40s]", context: int = 8192, itl: float = 0.5) -> str:
    return DEPLOYMENT.format(gpus=gpus, context=context, itl=itl)


@pytest.mark.parametrize("command", ["flags", "plan"])
def test_a_plan_that_does_not_fit_exits_2_naming_the_fix(command, capsys):
    assert main([command, *SEVENTY_B_ON_L4, "--max-model-len", "8192"]) == 2
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.startswith(f"kvscale {command}:")]
    assert line.startswith(f"kvscale {command}: does not fit: weights, activations and runtime")
    assert line.endswith("(or pass --allow-unfit to print it anyway)")
    if command == "flags":
        assert captured.out == ""  # no command line for an engine that would not start
    else:
        assert json.loads(captured.out)["fits"] is False  # the report is still printed


def test_allow_unfit_prints_the_command_line_and_exits_0(capsys):
    argv = ["flags", *SEVENTY_B_ON_L4, "--max-model-len", "8192", "--allow-unfit"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("vllm serve meta-llama/Llama-3.1-70B-Instruct")


def test_planner_warnings_show_in_the_table_and_in_json(tmp_path, capsys):
    path = tmp_path / "llmd.yaml"
    path.write_text(deployment(gpus="[l4, NVIDIA-L4]", itl=0.1), encoding="utf-8")
    assert main(["plan", "-f", str(path)]) == 0
    table = capsys.readouterr().out
    assert "warning: spec.placement.gpuTypes[1] 'NVIDIA-L4' is l4" in table
    assert "warning: l4: a step that prefills a p95 prompt" in table
    assert main(["plan", "-f", str(path), "-o", "json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["warnings"][0].startswith("spec.placement.gpuTypes[1] 'NVIDIA-L4' is l4")
    assert doc["gpuTypes"][0]["warnings"][0].startswith("a step that prefills a p95 prompt")


def test_the_lower_max_model_len_fix_never_exceeds_the_models_limit():
    """A 4k-context model asked for 8192 tokens with KV room for ~6000: the fix is ≤ 4096."""
    model = find_model("meta-llama/Llama-2-7b-hf")
    assert model.max_position_embeddings == 4096
    kv_bytes = 6000 * plan_capacity(PlanRequest(model=model, gpu=find_gpu("l4"))).kv_bytes_per_token
    request = PlanRequest(
        model=model, gpu=find_gpu("l4"), max_model_len_tokens=8192, kv_cache_memory_bytes=kv_bytes
    )
    plan = plan_capacity(request)
    assert not plan.fits
    assert plan.max_fitting_context_tokens == 4096
    assert "lower --max-model-len to 4096 or less" in plan.reason


def test_one_gpu_under_three_names_is_planned_once():
    text = deployment(gpus="[h100, h100_sxm_80gb, NVIDIA-H100-80GB-HBM3, l40s]")
    (result,) = validate_text(text)
    assert result.ok and result.plan is not None
    assert [p.gpu_type for p in result.plan.plans] == ["h100", "l40s"]
    assert [n.split(" 'h100'")[0] for n in result.notes[:2]] == [
        "spec.placement.gpuTypes[1] 'h100_sxm_80gb' is h100_sxm_80gb, as gpuTypes[0]",
        "spec.placement.gpuTypes[2] 'NVIDIA-H100-80GB-HBM3' is h100_sxm_80gb, as gpuTypes[0]",
    ]


@pytest.mark.parametrize(("typed", "first"), [("H1000", "h100_sxm_80gb"), ("l40ss", "l40s")])
def test_the_closest_gpu_name_is_suggested_first(typed: str, first: str):
    with pytest.raises(CapacityInputError) as raised:
        find_gpu(typed)
    assert raised.value.fix.startswith(f"use a catalog id or label value (close matches: {first}")


def test_messages_about_a_cr_name_its_fields_not_cli_flags():
    """Llama-3.1-8B at 128k context on an L4: the reason names spec fields to change."""
    (result,) = validate_text(deployment(gpus="[l4]", context=131072))
    assert not result.ok
    (problem,) = result.problems
    assert "--" not in problem.message
    assert "lower spec.maxContextLength to" in problem.message
    assert "raise spec.engine.gpuMemoryUtilization" in problem.message
    assert "use spec.kvCache.dtype fp8" in problem.message
    assert "a larger spec.placement.gpusPerReplica" in problem.message


def test_cli_messages_keep_naming_cli_flags(capsys):
    assert main(["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "l4"]) == 2
    assert "lower --max-model-len to" in capsys.readouterr().err


def test_renderer_errors_name_the_cli_flag_like_planner_errors(capsys):
    """One error type, one field lookup: an unsupported release is `--engine-version` on the
    command line (before: the Python attribute `engine_version`)."""
    argv = ["flags", "--model", "Qwen/Qwen3-8B", "--gpu", "l4", "--max-model-len", "8192"]
    assert main([*argv, "--engine", "sglang", "--engine-version", "0.3.0"]) == 2
    assert capsys.readouterr().err.startswith(
        "kvscale flags: --engine-version: sglang 0.3.0 is not supported"
    )


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--weights-gib", "nan", "--weights-gib: 'nan' is not a finite number"),
        ("--gpu-memory-gib", "inf", "--gpu-memory-gib: 'inf' is not a finite number"),
        ("--gpu-memory-gib", "1e308", "--gpu-memory-gib: 1e308 GiB is outside (0, 1048576]"),
        ("--gpu-memory-utilization", "nan", "--gpu-memory-utilization: 'nan' is not a finite"),
        ("--swap-space-gib", "nan", "argument --swap-space-gib: 'nan' is not a finite number"),
    ],
)
def test_non_finite_or_absurd_flag_values_are_one_line_exit_2(flag, value, says, capsys):
    """Before: ValueError/OverflowError tracebacks, or `--swap-space nan` rendered."""
    argv = ["flags", "--model", "Qwen/Qwen3-8B", "--gpu", "h100", "--max-model-len", "8192"]
    with pytest.raises(SystemExit) if flag == "--swap-space-gib" else nullcontext():
        assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err
