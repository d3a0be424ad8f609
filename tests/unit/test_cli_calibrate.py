# ruff: noqa: E501  (log lines are as long as the engines print them)
"""`kvscale calibrate --log`: start-up log lines in, planned vs logged out; partial logs exit 2.

The excerpts below are written in the engines' own log formats (vLLM 0.10/0.11 V1, vLLM V0
0.6.x, SGLang 0.4) with figures of the kind public logs print; they are not copies of any log.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kvscale.capacity import GIB, SamplerPath, find_gpu, plan_capacity
from kvscale.cli import main
from kvscale.cli.calibrate_cmd import CSV_COLUMNS, request_from_log
from kvscale.engines.startup_log import parse_startup_log

VLLM_V1 = """\
(APIServer pid=7) INFO 10-02 08:01:11 [api_server.py:1839] vLLM API server version 0.11.0
(APIServer pid=7) INFO 10-02 08:01:11 [utils.py:233] non-default args: {'model': 'Qwen/Qwen3-8B', 'max_model_len': 32768, 'gpu_memory_utilization': 0.85, 'max_num_seqs': 512}
(APIServer pid=7) INFO 10-02 08:01:19 [scheduler.py:205] Chunked prefill is enabled with max_num_batched_tokens=8192.
(EngineCore_DP0 pid=90) INFO 10-02 08:01:25 [core.py:77] Initializing a V1 LLM engine (v0.11.0) with config: model='Qwen/Qwen3-8B', dtype=torch.bfloat16, max_seq_len=32768, tensor_parallel_size=1, kv_cache_dtype=auto
(EngineCore_DP0 pid=90) INFO 10-02 08:01:27 [topk_topp_sampler.py:55] Using FlashInfer for top-p & top-k sampling.
(EngineCore_DP0 pid=90) INFO 10-02 08:01:40 [gpu_model_runner.py:2602] Model loading took 15.2683 GiB and 9.8 seconds
(EngineCore_DP0 pid=90) INFO 10-02 08:02:02 [gpu_worker.py:298] Available KV cache memory: 48.20 GiB
(EngineCore_DP0 pid=90) INFO 10-02 08:02:02 [kv_cache_utils.py:1087] GPU KV cache size: 350,944 tokens
(EngineCore_DP0 pid=90) INFO 10-02 08:02:02 [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 10.71x
nvidia-smi: GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)
"""

VLLM_V0 = """\
INFO 11-21 10:00:01 model_runner.py:1077] Loading model weights took 14.9888 GB
INFO 11-21 10:00:09 worker.py:232] Memory profiling results: total_gpu_memory=23.58GiB initial_memory_usage=15.34GiB peak_torch_memory=17.06GiB memory_usage_post_profile=15.35GiB non_torch_memory=0.35GiB kv_cache_size=3.81GiB gpu_memory_utilization=0.90
INFO 11-21 10:00:09 gpu_executor.py:113] # GPU blocks: 1952, # CPU blocks: 2048
INFO 11-21 10:00:09 gpu_executor.py:117] Maximum concurrency for 20000 tokens per request: 1.56x
"""

SGLANG = """\
[2025-03-08 12:29:04] server_args=ServerArgs(model_path='/models/Qwen/QwQ-32B', kv_cache_dtype='auto', mem_fraction_static=0.85, chunked_prefill_size=2048, tp_size=4)
[2025-03-08 12:31:10 TP0] Load weight end. type=Qwen2ForCausalLM, dtype=torch.bfloat16, avail mem=6.09 GB, mem usage=15.54 GB.
[2025-03-08 12:31:11 TP0] KV Cache is allocated. #tokens: 46611, K size: 1.42 GB, V size: 1.42 GB
[2025-03-08 12:31:20 TP0] max_total_num_tokens=46611, chunked_prefill_size=2048, max_prefill_tokens=16384, max_running_requests=2049, context_len=131072
"""


def _write(tmp_path: Path, text: str, name: str = "engine.log") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_vllm_v1_log_is_read_field_by_field() -> None:
    log = parse_startup_log(VLLM_V1)
    assert (log.engine, log.release, log.model) == ("vllm", "0.11.0", "Qwen/Qwen3-8B")
    assert (log.gpu_memory_utilization, log.max_num_batched_tokens, log.max_num_seqs) == (
        0.85,
        8192,
        512,
    )
    assert (log.tensor_parallel, log.max_model_len_tokens, log.kv_cache_dtype) == (1, 32768, "auto")
    assert (log.available_kv_gib, log.kv_cache_tokens, log.max_concurrency) == (
        48.20,
        350944,
        10.71,
    )
    assert log.weights_gib == 15.2683
    assert log.sampler_path is SamplerPath.FLASHINFER
    assert find_gpu(log.gpu or "").id == "h100_sxm_80gb"


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("[topk_topp_sampler.py:61] FlashInfer is not available. Falling back to the "
         "PyTorch-native implementation of top-p & top-k sampling.", SamplerPath.SORT),
        ("[topk_topp_sampler.py:52] FlashInfer is available, but it is not enabled. Falling "
         "back to the PyTorch-native implementation of top-p & top-k sampling.", SamplerPath.SORT),
        ("[topk_topp_sampler.py:49] Using FlashInfer for top-p & top-k sampling.",
         SamplerPath.FLASHINFER),
        ("[gpu_worker.py:298] Available KV cache memory: 4.00 GiB", None),
    ],
)  # fmt: skip
def test_the_sampler_line_names_the_path(line: str, path: SamplerPath | None) -> None:
    assert parse_startup_log(line).sampler_path is path


def test_the_logged_facts_become_the_planners_request() -> None:
    log = parse_startup_log(VLLM_V1)
    request = request_from_log(log)
    assert (request.sampler_path, request.max_num_seqs, request.gpu_memory_utilization) == (
        SamplerPath.FLASHINFER,
        512,
        0.85,
    )
    assert str(request.engine_version) == "0.11.0" and request.max_model_len_tokens == 32768


def test_calibrate_prints_prediction_implied_overhead_and_a_bench_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, VLLM_V1)
    assert main(["calibrate", "--log", path, "-o", "json", "--provenance", "https://x/1"]) == 0
    out = json.loads(capsys.readouterr().out)
    logged = round(48.20 * GIB)
    assert out["loggedKvBytes"] == logged
    plan = plan_capacity(request_from_log(parse_startup_log(VLLM_V1)))
    assert out["plannedKvBytes"] == plan.available_kv_bytes
    # implied overhead: the engine's requested budget minus the pool it logged
    assert out["observedNonKvBytes"] == plan.requested_bytes - logged
    # planning with the observed overhead gives back exactly the logged pool's tokens
    assert out["calibratedKvTokens"] == out["kvTokensFromLoggedMemory"]
    # ... which match the log to the print rounding of "48.20 GiB" (±0.005 GiB)
    rounding_tokens = 0.005 * GIB / plan.kv_bytes_per_token + plan.block_size_tokens
    assert abs(out["calibratedKvTokens"] - 350944) <= rounding_tokens
    row = next(csv.DictReader(io.StringIO(",".join(CSV_COLUMNS) + "\n" + out["csv"])))
    assert (row["engine_version"], row["available_kv_gib"], row["kv_cache_tokens"]) == (
        "0.11.0",
        "48.2",
        "350944",
    )
    assert (row["sampler_path"], row["provenance"], row["source"]) == (
        "flashinfer",
        "https://x/1",
        "engine.log",
    )


def test_v0_log_reads_blocks_and_profiling_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, VLLM_V0)
    code = main(["calibrate", "--log", path, "--engine-version", "0.6.4", "--gpu", "RTX 3090",
                 "--model", "meta-llama/Llama-3.1-8B-Instruct", "-o", "json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["loggedKvTokens"] == 1952 * 16 and out["maxModelLen"] == 20000
    assert out["loggedKvBytes"] == round(3.81 * GIB)


def test_sglang_log_reads_the_pool_from_k_and_v_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, SGLANG)
    code = main(["calibrate", "--log", path, "--engine-version", "0.4.3", "--gpu", "L4",
                 "-o", "json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["engine"], out["model"], out["tensorParallel"]) == ("sglang", "Qwen/QwQ-32B", 4)
    assert out["loggedKvBytes"] == round((1.42 + 1.42) * GIB)
    assert out["loggedKvTokens"] == 46611 and out["gpuMemoryUtilization"] == 0.85


@pytest.mark.parametrize(
    ("text", "extra", "named"),
    [
        (VLLM_V1.replace("NVIDIA H100 80GB HBM3", "(device not printed)"), (), "gpu (pass --gpu)"),
        ("\n".join(line for line in VLLM_V1.splitlines() if "0.11.0" not in line), (),
         "release (pass --engine-version)"),
        ("\n".join(line for line in VLLM_V1.splitlines() if "KV cache" not in line), (),
         "the KV pool"),
        ("Hello, world\n", (), "engine (pass --engine)"),
        (VLLM_V0, ("--gpu", "RTX 3090", "--engine-version", "0.6.4"), "model (pass --model)"),
    ],
)  # fmt: skip
def test_partial_logs_exit_2_naming_what_is_missing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    extra: tuple[str, ...],
    named: str,
) -> None:
    code = main(["calibrate", "--log", _write(tmp_path, text), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert named in err and err.count("\n") == 1


def test_unknown_model_and_unreadable_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = VLLM_V1.replace("Qwen/Qwen3-8B", "acme/unheard-of-7b")
    assert main(["calibrate", "--log", _write(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert "acme/unheard-of-7b" in err and "fix:" in err
    assert main(["calibrate", "--log", str(tmp_path / "absent.log")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_start_up_banner_names_release_and_model() -> None:
    banner = (
        "(APIServer pid=1) INFO 04-18 20:22:57 [utils.py:299] ▄▄ ▄█ █ █ █ ▀▄▀ █ version 0.19.0\n"
        "(APIServer pid=1) INFO 04-18 20:22:57 [utils.py:299] █▄█▀ █ █ █ █ model openai/gpt-oss-20b\n"
        "(EngineCore pid=2) INFO [gpu_worker.py:440] Available KV cache memory: 36.56 GiB\n"
    )
    log = parse_startup_log(banner)
    assert (log.release, log.model, log.available_kv_gib) == ("0.19.0", "openai/gpt-oss-20b", 36.56)


FP8_AT_LOAD_LOG = (
    Path(__file__).resolve().parents[2]
    / "bench"
    / "data"
    / "startup_logs"
    / "llm-d-planner-llama-3.1-8b-h100-fp8-at-load.log"
)


def test_a_log_that_quantized_at_load_is_planned_with_the_weights_it_held() -> None:
    # vLLM 0.19.0 started on the 16-bit Llama-3.1-8B-Instruct with --quantization fp8: its
    # "Model loading took 8.49 GiB" is the fp8 model; planned as 16-bit it would be ~15 GiB
    log = parse_startup_log(FP8_AT_LOAD_LOG.read_text(encoding="utf-8")).with_overrides(gpu="H100")
    assert log.quantization == "fp8"
    request = request_from_log(log)
    assert request.online_quantization is not None
    plan = plan_capacity(request)
    assert log.weights_gib is not None
    assert plan.loaded_weights_bytes == pytest.approx(log.weights_gib * GIB, rel=0.01)
    # a log without the flag ("quantization=None") plans the checkpoint as it is
    assert (
        parse_startup_log(
            VLLM_V1.replace("kv_cache_dtype=auto", "quantization=None, kv_cache_dtype=auto")
        ).quantization
        is None
    )
