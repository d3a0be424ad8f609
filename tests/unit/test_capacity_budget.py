"""Memory budget by engine and version, the doesn't-fit verdict and input errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from kvscale.capacity import (
    GIB,
    CapacityInputError,
    PeerLink,
    PlanRequest,
    SamplerPath,
    blocks_for_tokens,
    find_gpu,
    find_model,
    plan_capacity,
    plan_to_json,
)
from kvscale.capacity import rules as rules_module

LLAMA8B = find_model("meta-llama/Llama-3.1-8B-Instruct")  # vocab 128256, hidden 4096
H100 = find_gpu("H100")


def _request(**kw: object) -> PlanRequest:
    fields: dict[str, object] = {
        "model": LLAMA8B,
        "gpu": H100,
        "gpu_memory_bytes": 80 * GIB,
        "weights_bytes": 15 * GIB,
        "max_model_len_tokens": 16384,
    }
    fields.update(kw)
    return PlanRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "util", "cudagraph_on"),
    [
        ("0.11.0", 0.9, False),
        ("0.19.1", 0.9, False),
        ("0.20.0", 0.92, True),  # both flip in 0.20.0 (config/cache.py, envs.py of the wheel)
        ("0.20", 0.92, True),  # the same release spelled short
        ("0.33.0", 0.92, True),
    ],
)
def test_vllm_defaults_by_version(version: str, util: float, cudagraph_on: bool) -> None:
    plan = plan_capacity(_request(engine_version=version))
    assert plan.gpu_memory_utilization == util
    assert (plan.cudagraph_bytes > 0) is cudagraph_on
    assert plan.requested_bytes == math.ceil(80 * GIB * util)


@pytest.mark.parametrize("version", ["0.21", "0.10", "0.8"])
def test_short_and_long_spellings_plan_the_same(version: str) -> None:
    short = plan_capacity(_request(engine_version=version))
    long = plan_capacity(_request(engine_version=version + ".0"))
    assert short == replace(long, request=short.request)
    assert plan_to_json(short) == plan_to_json(long)


def test_vllm_budget_arithmetic_v1() -> None:
    # H100-class (>= 70 GiB, not A100), API server: MNBT 8192, max_num_seqs 1024; 0.11.0 can
    # run the sort path, the costliest: 38 B per (sequence x vocab) element, plus the forward's
    # hidden states (8192 + 2 x 1024 rows x 4096 x 2 B); the forward peak, 6 B x 8192 x
    # (4096 + 14336), is smaller, and the charge is the larger of the two, not their sum. The
    # first GEMM takes PyTorch's cuBLAS workspace and keeps it: 32 MiB on compute capability 9.
    sampler = 38 * 1024 * 128256 + 2 * 4096 * (8192 + 2 * 1024)
    cublas = 32 * 1024**2
    forward = 2 * 8192 * (3 * 4096 + 3 * 14336)
    assert forward < sampler
    non_torch = int(0.13 * GIB)
    rope = 131072 * 128 * 2  # one bf16 cos/sin table: max_position_embeddings x head_dim
    plan = plan_capacity(_request(engine_version="0.11.0"))
    assert (plan.max_num_batched_tokens, plan.max_num_seqs) == (8192, 1024)
    assert plan.sampler_path is SamplerPath.SORT
    assert plan.activation_bytes == sampler + cublas
    assert plan.rope_cache_bytes == rope
    expected = math.ceil(80 * GIB * 0.9) - 15 * GIB - rope - sampler - cublas - non_torch
    assert plan.available_kv_bytes == expected
    # 131072 B/token * 16 = 2 MiB per block over all 32 layers
    assert plan.num_blocks == plan.available_kv_bytes // (2 * 1024**2)


def test_observed_non_kv_replaces_the_estimate() -> None:
    observed = 21 * GIB
    plan = plan_capacity(_request(observed_non_kv_bytes=observed))
    assert plan.available_kv_bytes == math.ceil(80 * GIB * 0.9) - observed
    assert plan.non_kv_bytes == observed and plan_to_json(plan)["nonKvSource"] == "observed"
    estimated = plan_capacity(_request())
    assert estimated.non_kv_bytes == estimated.requested_bytes - estimated.available_kv_bytes


@pytest.mark.parametrize(
    ("gpu", "version", "length", "mnbt", "seqs"),
    [
        ("H100", "0.11.0", 16384, 8192, 1024),
        ("A100-80GB", "0.11.0", 16384, 2048, 256),  # A100 excluded from the big-GPU rule
        ("H100", "0.8.5", 16384, 8192, 1024),  # 0.8.x: by device name (H100/H200)
        ("B200", "0.8.5", 16384, 2048, 256),  # 0.8.x: a big GPU by memory, not by name
        ("L40S", "0.11.0", 16384, 2048, 256),  # < 70 GiB
        ("H100", "0.6.4", 20000, 20000, 256),  # V0 profiles max(max_model_len, 2048)
        ("H100", "0.6.4", 1024, 2048, 256),
        # > 32k: V0 turns chunked prefill on, and SchedulerConfig then defaults to 512 tokens
        ("H100", "0.6.4", 40000, 512, 256),
    ],
)
def test_batch_defaults(gpu: str, version: str, length: int, mnbt: int, seqs: int) -> None:
    plan = plan_capacity(
        _request(gpu=find_gpu(gpu), gpu_memory_bytes=None, engine_version=version,
                 max_model_len_tokens=length)
    )  # fmt: skip
    assert (plan.max_num_batched_tokens, plan.max_num_seqs) == (mnbt, seqs)


def test_kv_cache_memory_bytes_short_circuits_utilisation() -> None:
    low = plan_capacity(_request(kv_cache_memory_bytes=3 * GIB, gpu_memory_utilization=0.3))
    high = plan_capacity(_request(kv_cache_memory_bytes=3 * GIB, gpu_memory_utilization=0.95))
    assert low.available_kv_bytes == high.available_kv_bytes == 3 * GIB
    assert low.num_blocks == high.num_blocks == 3 * GIB // (2 * 1024**2)  # 1536


def test_does_not_fit_names_needed_available_context_and_knob() -> None:
    # 1 GiB of KV = 512 blocks of 2 MiB = 8192 tokens; one 16384-token request needs
    # cdiv(16384, 16) = 1024 blocks = 2 GiB.
    plan = plan_capacity(_request(kv_cache_memory_bytes=GIB))
    assert not plan.fits
    assert plan.max_fitting_context_tokens == 8192
    assert "needs 2.00 GiB" in plan.reason and "only 1.00 GiB" in plan.reason
    assert "8192" in plan.reason and "--max-model-len" in plan.reason
    body = plan_to_json(plan)
    assert body["fits"] is False and body["maxFittingContextTokens"] == 8192


def test_weights_larger_than_budget_is_reported() -> None:
    plan = plan_capacity(_request(weights_bytes=80 * GIB))
    assert not plan.fits and plan.num_blocks == 0
    assert "--gpu-memory-utilization" in plan.reason and "--tensor-parallel-size" in plan.reason


def test_blocks_for_tokens_agrees_with_plan_at_max_len() -> None:
    gpt_oss = find_model("openai/gpt-oss-120b")
    plan = plan_capacity(
        _request(
            model=gpt_oss, tensor_parallel=4, engine_version="0.10.1.1", kv_cache_memory_bytes=GIB
        )
    )
    assert blocks_for_tokens(plan, 16384) == plan.blocks_per_max_len_request
    assert blocks_for_tokens(plan, 0) == 0
    assert blocks_for_tokens(plan, 100) == 7 + 8  # full cdiv(100,16)=7; SW cdiv(100,16)+1=8


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tensor_parallel": 3}, "tensorParallel"),  # 32 heads % 3 != 0
        ({"max_model_len_tokens": 0}, "maxModelLen"),
        ({"gpu_memory_utilization": 1.2}, "gpuMemoryUtilization"),
        ({"kv_cache_dtype": "fp7"}, "kvCacheDtype"),
        ({"engine": "ollama"}, "engine"),
        ({"max_num_seqs": -1}, "maxNumSeqs"),
    ],
)
def test_bad_inputs_raise_typed_errors(change: dict[str, object], field: str) -> None:
    with pytest.raises(CapacityInputError) as info:
        plan_capacity(_request(**change))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and "; fix: " in str(info.value)


def test_sglang_pool_is_fraction_of_free_memory_minus_weights() -> None:
    # free at start = total - 0.85 GiB (TP>1 init); pool = 0.93 * free - weights per rank
    plan = plan_capacity(
        _request(engine="sglang", engine_version="0.4.9", tensor_parallel=4,
                 gpu_memory_utilization=0.93, weights_bytes=4 * 50 * GIB)
    )  # fmt: skip
    expected = int((80 * GIB - int(0.85 * GIB)) * 0.93) - 50 * GIB
    assert plan.available_kv_bytes == expected
    assert plan.kv_cache_tokens == expected // (32 * 2 * 256 * 2)  # page size 1 token


@pytest.mark.parametrize(("version", "tp", "mfs"), [("0.4.3", 1, 0.88), ("0.4.3", 4, 0.85),
                                                     ("0.4.3", 8, 0.81)])  # fmt: skip
def test_sglang_default_fraction_by_tp(version: str, tp: int, mfs: float) -> None:
    plan = plan_capacity(_request(engine="sglang", engine_version=version, tensor_parallel=tp))
    assert plan.gpu_memory_utilization == mfs


@pytest.mark.parametrize(("engine", "frac", "block"), [("tgi", 0.90, 1), ("trtllm", 0.9, 32)])
def test_free_fraction_engines(engine: str, frac: float, block: int) -> None:
    plan = plan_capacity(_request(engine=engine))
    free_after = 80 * GIB - 15 * GIB - plan.activation_bytes - plan.non_torch_bytes
    assert plan.available_kv_bytes == int(free_after * frac)
    assert plan.block_size_tokens == block


def test_observed_non_kv_replaces_sglangs_weights_too() -> None:
    # SGLang: pool = mfs x free at start - (weights, or what the engine was seen to hold)
    base = _request(engine="sglang", engine_version="0.4.9", gpu_memory_utilization=0.9)
    estimated = plan_capacity(base)
    observed = plan_capacity(replace(base, observed_non_kv_bytes=16 * GIB))
    assert estimated.available_kv_bytes - observed.available_kv_bytes == 16 * GIB - 15 * GIB
    assert plan_to_json(observed)["nonKvSource"] == "observed"


@pytest.mark.parametrize(("engine", "version"), [("vllm", "0.11.0"), ("sglang", "0.4.9")])
def test_non_kv_is_what_the_budget_charges_besides_the_pool(engine: str, version: str) -> None:
    plan = plan_capacity(_request(engine=engine, engine_version=version))
    assert plan.non_kv_bytes == plan.requested_bytes - plan.available_kv_bytes


def _tp2_non_torch(gpu: str, version: str = "0.28.0") -> int:
    request = _request(gpu=find_gpu(gpu), tensor_parallel=2, engine_version=version)
    return plan_capacity(request).non_torch_bytes


@pytest.mark.parametrize("version", ["0.11.0", "0.19.0", "0.28.0"])
def test_tp2_non_torch_is_the_nvlink_figure_on_every_link_until_measured(version: str) -> None:
    # Only NVLink logs measure the TP >= 2 extra on two sources; PCIe (L4) and an optional
    # bridge (A100 PCIe) are charged as much, never less (ADR 0012); ROCm has its own figures,
    # larger still.
    nvlink = _tp2_non_torch("H100", version)
    assert nvlink > plan_capacity(_request(engine_version=version)).non_torch_bytes
    for gpu in ("L4", "A100 PCIe"):
        assert _tp2_non_torch(gpu, version) == nvlink, gpu
    assert _tp2_non_torch("MI300X", version) > nvlink


@pytest.mark.parametrize("version", ["0.6.4", "0.11.0", "0.28.0"])
def test_rocm_non_torch_is_its_own_and_grows_with_each_peer(version: str) -> None:
    # A ROCm build charges more than CUDA at TP 1 on every release, and RCCL's buffers grow with
    # the peers a rank talks to: TP 8 adds seven times what TP 2 adds (ADR 0012).
    def non_torch(gpu: str, tp: int) -> int:
        request = _request(gpu=find_gpu(gpu), tensor_parallel=tp, engine_version=version)
        return plan_capacity(request).non_torch_bytes

    assert non_torch("MI300X", 1) > non_torch("H100", 1)
    first_peer = non_torch("MI300X", 2) - non_torch("MI300X", 1)
    assert first_peer > 0
    assert non_torch("MI300X", 8) - non_torch("MI300X", 1) == pytest.approx(7 * first_peer, abs=8)


def test_a_links_own_tp_figure_reaches_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU's link is what the budget looks the TP >= 2 extra up by, and only at TP >= 2.
    last = rules_module.VLLM_RULES[-1]
    measured = replace(last, non_torch_tp_extra_by_link=((PeerLink.PCIE, 0.1),))
    monkeypatch.setattr(rules_module, "VLLM_RULES", (*rules_module.VLLM_RULES[:-1], measured))
    version = str(last.since)
    assert _tp2_non_torch("L4", version) < _tp2_non_torch("H100", version)
    assert _tp2_non_torch("A100 PCIe", version) == _tp2_non_torch("H100", version)
    tp1 = {gpu: plan_capacity(_request(gpu=find_gpu(gpu), engine_version=version)).non_torch_bytes
           for gpu in ("L4", "H100")}  # fmt: skip
    assert tp1["L4"] == tp1["H100"]
