"""`kvscale flags`: the plan arguments in, one runnable command line out."""

from __future__ import annotations

import json
import shlex

import pytest

from kvscale.cli import main

BASE = ["flags", "--model", "Qwen/Qwen3-8B", "--gpu", "h100", "--max-model-len", "32768"]


def run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main([*BASE, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_output_is_one_shell_line_with_program_and_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--engine", "vllm", "--engine-version", "0.11.0")
    assert code == 0
    assert out.count("\n") == 1
    argv = shlex.split(out)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    assert argv[argv.index("--max-model-len") + 1] == "32768"
    assert argv[argv.index("--port") + 1] == "8000"


def test_json_matches_text_and_utilisation_matches_the_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ("--engine", "vllm", "--engine-version", "0.11.0", "--gpu-memory-utilization", "0.85")
    _, text, _ = run(capsys, *common)
    code, js, _ = run(capsys, *common, "-o", "json")
    assert code == 0
    argv = json.loads(js)
    assert argv == shlex.split(text)
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"


def test_args_only_model_ref_and_extra_args(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "--engine", "sglang", "--engine-version", "0.5.23",
        "--model-ref", "/models/qwen3", "--port", "30000",
        "--args-only", "-o", "json", "--", "--trust-remote-code",
    )  # fmt: skip
    assert code == 0, err
    argv = json.loads(out)
    assert argv[0].startswith("--")  # no program
    assert "/models/qwen3" not in argv
    assert argv[-1] == "--trust-remote-code"
    assert argv[argv.index("--port") + 1] == "30000"
    assert "--enable-metrics" in argv


@pytest.mark.parametrize(("version", "present"), [("0.17.0", True), ("0.18.0", False)])
def test_swap_space_respects_its_removal(
    capsys: pytest.CaptureFixture[str], version: str, present: bool
) -> None:
    code, out, err = run(
        capsys, "--engine", "vllm", "--engine-version", version, "--swap-space-gib", "4"
    )
    assert code == 0
    assert ("--swap-space" in shlex.split(out)) is present
    assert ("warning: --swap-space not rendered" in err) is not present


def test_kv_bytes_on_an_old_release_falls_back_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys,
        "--engine", "vllm", "--engine-version", "0.9.2",
        "--kv-cache-memory-bytes", "30000000000",
    )  # fmt: skip
    assert code == 0
    argv = shlex.split(out)
    assert "--kv-cache-memory-bytes" not in argv
    assert "--gpu-memory-utilization" in argv
    assert "warning: --kv-cache-memory-bytes needs vLLM ≥ 0.10.2" in err


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (("--engine", "vllm", "--engine-version", "0.8.0"), "--engine-version"),
        (
            ("--engine", "trtllm", "--engine-version", "1.2.1", "--kv-cache-dtype", "fp8"),
            "--kv-cache-dtype",
        ),
    ],
)
def test_unrenderable_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], field: str
) -> None:
    code, out, err = run(capsys, *extra)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert f"{field}:" in err and "fix:" in err


def test_pinned_pool_renders_the_planned_bytes_where_the_release_has_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--engine-version", "0.21", "--kv-pool", "pinned", "-o", "json")
    argv = json.loads(out)
    assert code == 0 and "--gpu-memory-utilization" not in argv
    main(["plan", "--model", "Qwen/Qwen3-8B", "--gpu", "h100", "--max-model-len", "32768",
          "--engine-version", "0.21.0"])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    pool = plan["numBlocks"] * plan["pageBytes"] * plan["groupSizeLayers"]
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(pool)
    code, out, err = run(capsys, "--engine-version", "0.9.2", "--kv-pool", "pinned")
    assert code == 0 and "--kv-cache-memory-bytes" not in out and "0.10.2" in err
