"""`kvscale plan` in-process: the JSON contract, -f deployments, and exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvscale.cli import main

CONTRACT_KEYS = {
    "kvBytesPerToken", "weightsBytes", "activationBytes", "cudagraphBytes", "availableKvBytes",
    "blockSize", "numBlocks", "kvCacheTokens", "maxConcurrency", "fits", "warnings",
}  # fmt: skip


def test_plan_prints_contract_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "NVIDIA-H100-80GB-HBM3",
                 "--engine", "vllm", "--engine-version", "0.11.0", "--max-model-len", "32768",
                 "-o", "json"])  # fmt: skip
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(body) >= CONTRACT_KEYS
    assert body["kvBytesPerToken"] == 36 * 8 * 256 * 2
    assert body["gpuMemoryUtilization"] == 0.9  # omitted -> the version's default
    assert body["kvCacheTokens"] == body["numBlocks"] * 16


def test_plan_from_model_config_with_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "hidden_size": 4096, "vocab_size": 128256, "torch_dtype": "bfloat16"}  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code = main(["plan", "--model-config", str(path), "--gpu", "l40s", "--weights-gib", "15",
                 "--max-model-len", "8192", "--kv-cache-memory-bytes", str(2**30)])  # fmt: skip
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert body["numBlocks"] == 512  # 1 GiB / (16 * 131072 B)
    assert body["weightsBytes"] == 15 * 2**30


def _run_bad(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["plan", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "must_contain"),
    [
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H1000"], "h100"),  # close matches listed
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--gpu-memory-utilization", "1.5"],
         "--gpu-memory-utilization"),
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--gpu-memory-utilization", "0"],
         "--gpu-memory-utilization"),
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--max-model-len", "0"], "--max-model-len"),
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--max-model-len", "-5"],
         "--max-model-len"),
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--tensor-parallel", "3"],
         "--tensor-parallel"),
        (["--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--max-num-seqs", "x"], "--max-num-seqs"),
        (["--gpu", "H100"], "--model"),
        (["--model", "Qwen/Qwen3-8B"], "--gpu"),
        (["--model", "no/such-model", "--gpu", "H100"], "model"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(
    args: list[str], must_contain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_bad(args, capsys)
    assert must_contain in err and "fix:" in err


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"num_attention_heads": 8, "hidden_size": 1024}', "config.num_hidden_layers"),
        ("not json", "--model-config"),
        ("[1, 2]", "--model-config"),
    ],
)
def test_malformed_config_exits_2(
    content: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    err = _run_bad(["--model-config", str(path), "--gpu", "H100"], capsys)
    assert field in err


DEPLOYMENT = """
apiVersion: kvscale.dev/v1alpha1
kind: LLMDeployment
metadata: {name: qwen}
spec:
  model: {name: Qwen/Qwen3-8B}
  maxContextLength: 32768
  engine: {name: vllm, version: "0.11.0"}
  kvCache: {dtype: auto}
  placement: {gpuTypes: [NVIDIA-H100-80GB-HBM3, NVIDIA-L40S], gpusPerReplica: 1}
  workload: {inputTokensP50: 1000, inputTokensP95: 4000, outputTokensP50: 200,
             outputTokensP95: 800, peakRequestsPerSecond: 20}
  slo: {ttftP95Seconds: 2.0, itlP95Seconds: 0.05}
"""


def test_plan_deployment_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "llmd.yaml"
    path.write_text(DEPLOYMENT)
    assert main(["plan", "-f", str(path)]) == 0
    table = capsys.readouterr().out
    assert "NVIDIA-H100-80GB-HBM3" in table and "NVIDIA-L40S" in table and "SAFE" in table
    assert main(["plan", "-f", str(path), "-o", "json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    rows = doc["gpuTypes"]
    assert [r["plan"]["gpu"] for r in rows] == ["h100_sxm_80gb", "l40s"]
    assert all(set(r["plan"]) >= CONTRACT_KEYS for r in rows)
    safe = [r["safeConcurrency"] for r in rows]
    assert safe[0] > safe[1] > 0  # the H100 holds more than the L40S
    assert doc["selectedGpuType"] in {"NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S"}


def test_plan_deployment_bad_gpu_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "llmd.yaml"
    path.write_text(DEPLOYMENT.replace("NVIDIA-L40S", "NVIDIA-L40Z"))
    err = _run_bad(["-f", str(path)], capsys)
    assert "gpu" in err


def test_short_and_full_release_spellings_plan_and_render_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def both(command: str) -> list[str]:
        outputs = []
        for version in ("0.21", "0.21.0"):
            code = main([command, "--model", "Qwen/Qwen3-8B", "--gpu", "H100",
                         "--engine-version", version, "--max-model-len", "32768"])  # fmt: skip
            assert code == 0
            outputs.append(capsys.readouterr().out)
        return outputs

    short, full = both("plan")
    assert short == full
    body = json.loads(short)
    # 0.21 is past the 0.20.0 flip: util 0.92 and the CUDA-graph estimate subtracted
    assert body["engineVersion"] == "0.21.0" and body["gpuMemoryUtilization"] == 0.92
    assert body["cudagraphBytes"] > 0
    short_flags, full_flags = both("flags")
    assert short_flags == full_flags and "--gpu-memory-utilization 0.92" in short_flags


def test_sampler_path_flag_changes_the_activation_charge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    charges = {}
    for path in ("auto", "sort", "flashinfer"):
        main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--engine-version",
              "0.11.0", "--sampler-path", path])  # fmt: skip
        body = json.loads(capsys.readouterr().out)
        charges[path] = (body["samplerPath"], body["activationBytes"])
    assert charges["auto"] == charges["sort"]  # auto: the costliest path 0.11.0 can run
    assert charges["flashinfer"][1] < charges["sort"][1]
    code = main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--engine-version",
                 "0.11.0", "--sampler-path", "v2"])  # fmt: skip
    assert code == 2
    assert "--sampler-path" in capsys.readouterr().err


def test_quantization_flag_plans_the_quantized_checkpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = {}
    for quant in (None, "fp8"):
        extra = ["--quantization", quant] if quant else []
        code = main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--engine-version",
                     "0.11.0", *extra])  # fmt: skip
        assert code == 0
        weights[quant] = json.loads(capsys.readouterr().out)["weightsBytes"]
    assert weights[None] / 2 < weights["fp8"] < weights[None]
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a method it does not list
        main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "H100", "--quantization", "int3"])
    assert exit_info.value.code == 2
    assert "--quantization" in capsys.readouterr().err
