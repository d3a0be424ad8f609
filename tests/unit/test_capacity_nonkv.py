"""The physical non-KV model: sampler paths by release, max(forward, sampler), extrapolation."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from kvscale.capacity import (
    GIB,
    CapacityInputError,
    ModelGeometry,
    PlanRequest,
    SamplerPath,
    find_gpu,
    find_model,
    plan_capacity,
)
from kvscale.capacity.nonkv import (
    FUSED_MOE_CHUNK_TOKENS,
    SAMPLER_BYTES_PER_ELEMENT,
    ActivationPeak,
    MoeShape,
    activation_peak,
    forward_peak_bytes,
    moe_forward_bytes,
    moe_workspace_bytes,
    resolve_sampler_path,
    sampler_peak_bytes,
)
from kvscale.capacity.rules import vllm_rules

QWEN3_8B = find_model("Qwen/Qwen3-8B")  # vocab 151936, hidden 4096, intermediate 12288
LLAMA_70B = find_model("meta-llama/Llama-3.1-70B-Instruct")  # hidden 8192, intermediate 28672
H100 = find_gpu("H100")


def _peak(
    model: ModelGeometry, path: SamplerPath, seqs: int, mnbt: int, tp: int = 1
) -> ActivationPeak:
    assert model.vocab_size and model.hidden_size and model.intermediate_size
    return activation_peak(
        path,
        max_num_seqs=seqs,
        mnbt=mnbt,
        vocab=model.vocab_size,
        hidden=model.hidden_size,
        intermediate=model.intermediate_size,
        tp=tp,
        dtype_bytes=model.dtype_bytes,
        compute_units=H100.compute_units,
    )


@pytest.mark.parametrize(
    ("version", "auto_path", "runnable"),
    [
        ("0.8.5", SamplerPath.SORT, {SamplerPath.SORT, SamplerPath.FLASHINFER}),
        ("0.11.0", SamplerPath.SORT, {SamplerPath.SORT, SamplerPath.FLASHINFER}),
        ("0.16.0", SamplerPath.SORT, {SamplerPath.SORT, SamplerPath.FLASHINFER}),
        ("0.17", SamplerPath.TRITON, {SamplerPath.TRITON, SamplerPath.FLASHINFER}),
        (
            "0.27.0",
            SamplerPath.TRITON,
            {SamplerPath.TRITON, SamplerPath.FLASHINFER, SamplerPath.V2},
        ),
    ],
)
def test_auto_takes_the_costliest_path_the_release_can_run(
    version: str, auto_path: SamplerPath, runnable: set[SamplerPath]
) -> None:
    paths = vllm_rules(version).sampler_paths
    assert set(paths) == runnable
    chosen = resolve_sampler_path(SamplerPath.AUTO, paths)
    assert chosen is auto_path
    assert all(SAMPLER_BYTES_PER_ELEMENT[chosen] >= SAMPLER_BYTES_PER_ELEMENT[p] for p in paths)


@pytest.mark.parametrize("path", [SamplerPath.FLASHINFER, SamplerPath.V2, SamplerPath.SORT])
def test_auto_never_plans_more_kv_than_a_named_path(path: SamplerPath) -> None:
    base = PlanRequest(model=QWEN3_8B, gpu=H100, engine_version="0.11.0", max_num_seqs=256)
    auto = plan_capacity(base)
    if path not in vllm_rules("0.11.0").sampler_paths:
        with pytest.raises(CapacityInputError) as info:
            plan_capacity(PlanRequest(**{**base.__dict__, "sampler_path": path}))
        assert info.value.field == "samplerPath" and "auto" in info.value.fix
        return
    named = plan_capacity(PlanRequest(**{**base.__dict__, "sampler_path": path}))
    assert auto.available_kv_bytes <= named.available_kv_bytes
    assert named.sampler_path is path


def test_the_profiler_sees_the_larger_peak_not_the_sum() -> None:
    # Few sequences, many batched tokens on a wide model: the forward pass dominates.
    forward_heavy = _peak(LLAMA_70B, SamplerPath.TRITON, seqs=16, mnbt=32768)
    assert forward_heavy.forward_bytes > forward_heavy.sampler_bytes
    assert forward_heavy.peak_bytes == forward_heavy.forward_bytes
    # Many sequences, the sort path: the sampler dominates.
    sampler_heavy = _peak(QWEN3_8B, SamplerPath.SORT, seqs=1024, mnbt=8192)
    assert sampler_heavy.peak_bytes == sampler_heavy.sampler_bytes


@pytest.mark.parametrize("path", [SamplerPath.SORT, SamplerPath.FLASHINFER, SamplerPath.TRITON,
                                  SamplerPath.V2])  # fmt: skip
@pytest.mark.parametrize("mnbt", [2048, 8192, 32768])
def test_sampler_is_linear_in_sequences(path: SamplerPath, mnbt: int) -> None:
    # from one row per SM of the H100 up, where the Triton kernel's buffer stops growing
    seqs = [256, 448, 640, 1024, 1408, 2048]
    sampler = [_peak(QWEN3_8B, path, s, mnbt).sampler_bytes for s in seqs]
    slopes = {
        (b - a) / (s1 - s0)
        for (a, b), (s0, s1) in zip(pairwise(sampler), pairwise(seqs), strict=True)
    }
    # one slope (within float rounding of the division): no seqs^2 term anywhere
    assert max(slopes) - min(slopes) < 1e-6 * max(slopes)
    # the slope is the path's bytes per element over the vocabulary (+ two held hidden rows)
    expected = SAMPLER_BYTES_PER_ELEMENT[path] * 151936 + 2 * 4096 * 2
    assert min(slopes) == pytest.approx(expected)


# Bounds from the physics, per (sequences, batched tokens): every path keeps at least the
# model-dtype logits and their fp32 copy (6 B per sequence x vocab element); none keeps more
# than the sort path's 38 B, the MNBT + 2S held hidden rows, or one dense layer's widest point.
@pytest.mark.parametrize("seqs", [64, 128, 256, 512, 1024, 2048])
@pytest.mark.parametrize("mnbt", [2048, 4096, 8192, 16384, 32768])
@pytest.mark.parametrize("model", [QWEN3_8B, LLAMA_70B], ids=["qwen3-8b", "llama-70b"])
def test_activation_is_sane_from_64_to_2048_seqs_and_2k_to_32k_tokens(
    seqs: int, mnbt: int, model: ModelGeometry
) -> None:
    vocab, hidden, inter = (
        model.vocab_size or 0,
        model.hidden_size or 0,
        model.intermediate_size or 0,
    )
    rows = min(seqs, mnbt)
    lower = 6 * rows * vocab
    upper = max(38 * rows * vocab + 2 * hidden * (mnbt + 2 * rows), 6 * mnbt * (hidden + inter))
    for path in (SamplerPath.SORT, SamplerPath.FLASHINFER, SamplerPath.TRITON, SamplerPath.V2):
        peak = _peak(model, path, seqs, mnbt).peak_bytes
        assert lower <= peak <= upper
        # and never a GPU's worth: even 2,048 sort rows of a 152k vocabulary stay < 12 GiB
        assert peak < 12 * GIB


@pytest.mark.parametrize("mnbt", [2048, 4096, 8192, 16384, 32768])
def test_forward_grows_linearly_with_batched_tokens_and_shrinks_with_tp(mnbt: int) -> None:
    one = _peak(LLAMA_70B, SamplerPath.V2, 1, mnbt, tp=1).forward_bytes
    double = _peak(LLAMA_70B, SamplerPath.V2, 1, 2 * mnbt).forward_bytes
    assert double == 2 * one
    tp4 = _peak(LLAMA_70B, SamplerPath.V2, 1, mnbt, tp=4).forward_bytes
    assert 6 * mnbt * 8192 < tp4 < one  # the intermediate is split over ranks, hidden is not


def test_the_triton_buffer_is_one_fp32_row_per_program_capped_by_the_compute_units() -> None:
    # apply_top_k_top_p_triton launches min(SMs, rows) programs and caches
    # min(next_pow2(programs), SMs) rows of vocab in fp32: grows with the rows up to the SM
    # count, then stays; an unknown device is charged the bound over every device.
    units = H100.compute_units
    assert units is not None and units > 64
    vocab = QWEN3_8B.vocab_size or 0

    def extra(rows: int, compute_units: int | None = units) -> int:
        triton = sampler_peak_bytes(SamplerPath.TRITON, rows, vocab, hidden=4096, mnbt=8192,
                                    dtype_bytes=2, compute_units=compute_units)  # fmt: skip
        plain = SAMPLER_BYTES_PER_ELEMENT[SamplerPath.TRITON] * rows * vocab
        return triton - plain - 2 * 4096 * (8192 + 2 * rows)

    assert extra(64) == 4 * 64 * vocab  # 64 programs, a power of two already
    assert extra(100) == 4 * 128 * vocab  # rounded up to the next power of two...
    assert extra(units) == extra(1024) == 4 * units * vocab  # ...never past the SM count
    assert extra(1024, compute_units=None) == 4 * 1024 * vocab > extra(1024)
    for path in (SamplerPath.SORT, SamplerPath.FLASHINFER, SamplerPath.V2):
        assert sampler_peak_bytes(path, 1024, vocab, hidden=4096, mnbt=8192, dtype_bytes=2,
                                  compute_units=units) == sampler_peak_bytes(
            path, 1024, vocab, hidden=4096, mnbt=8192, dtype_bytes=2, compute_units=None
        )  # fmt: skip


GEMMA3_27B = find_model("google/gemma-3-27b-it")  # SigLIP tower, text hidden 5376


def _activation(model: ModelGeometry, version: str, mnbt: int = 8192) -> int:
    request = PlanRequest(model=model, gpu=H100, engine_version=version,
                          max_model_len_tokens=8192, max_num_batched_tokens=mnbt)  # fmt: skip
    return plan_capacity(request).activation_bytes


def test_v1_holds_the_dummy_encoder_outputs_of_a_multimodal_model_through_the_sampler() -> None:
    # profile_run keeps the encoder outputs (MNBT embeddings of the LM's hidden size at most)
    # in the encoder cache until after the dummy sampler: on top of the larger peak, V1 only.
    assert GEMMA3_27B.is_multimodal and not QWEN3_8B.is_multimodal
    text_only = replace(GEMMA3_27B, is_multimodal=False)
    hidden = GEMMA3_27B.hidden_size or 0
    for mnbt in (2048, 8192):
        held = _activation(GEMMA3_27B, "0.19.0", mnbt) - _activation(text_only, "0.19.0", mnbt)
        assert held == mnbt * hidden * 2
    assert _activation(GEMMA3_27B, "0.6.4") == _activation(text_only, "0.6.4")  # V0: none


def test_fewer_than_eight_rows_take_the_sort_path_on_triton_releases() -> None:
    small = _peak(QWEN3_8B, SamplerPath.TRITON, seqs=4, mnbt=8192)
    as_sort = _peak(QWEN3_8B, SamplerPath.SORT, seqs=4, mnbt=8192)
    assert small.sampler_bytes == as_sort.sampler_bytes


QWEN3_30B_A3B = find_model("Qwen/Qwen3-30B-A3B")  # 128 experts, 8 per token, 768 wide
MIXTRAL = find_model("mistralai/Mixtral-8x7B-Instruct-v0.1")  # 8 experts, 2 per token


def _plan(model: ModelGeometry, version: str, tp: int = 1) -> int:
    request = PlanRequest(
        model=model, gpu=H100, engine_version=version, tensor_parallel=tp,
        max_model_len_tokens=8192, max_num_batched_tokens=8192, gpu_memory_utilization=0.95,
    )  # fmt: skip
    return plan_capacity(request).activation_bytes


def test_moe_geometry_comes_from_the_config() -> None:
    assert (QWEN3_30B_A3B.experts_per_token, QWEN3_30B_A3B.expert_intermediate_size) == (8, 768)
    assert (MIXTRAL.experts_per_token, MIXTRAL.expert_intermediate_size) == (2, 14336)
    assert QWEN3_8B.experts_per_token is None and QWEN3_8B.expert_intermediate_size is None


@pytest.mark.parametrize("model", [QWEN3_30B_A3B, MIXTRAL], ids=["qwen3-30b-a3b", "mixtral"])
def test_the_moe_workspace_arrives_in_0_13_and_is_linear_in_batched_tokens(
    model: ModelGeometry,
) -> None:
    # 0.12.0 allocates the fused-MoE scratch per call (freed before the sampler runs); 0.13.0
    # keeps it in the persistent workspace: the same plan charges more, a dense model does not.
    assert _plan(model, "0.13.0") > _plan(model, "0.12.0")
    assert _plan(QWEN3_8B, "0.13.0") == _plan(QWEN3_8B, "0.12.0")
    shape = MoeShape(model.experts_per_token or 0, model.expert_intermediate_size or 0)
    hidden = model.hidden_size or 0
    sizes = [moe_workspace_bytes(shape, mnbt=m, hidden=hidden, tp=1, dtype_bytes=2)
             for m in (2048, 4096, 8192)]  # fmt: skip
    assert sizes[2] - sizes[1] == pytest.approx(2 * (sizes[1] - sizes[0]), rel=1e-6)
    # TP splits the experts' width, never the hidden size: a quarter of the ranks' share
    tp4 = moe_workspace_bytes(shape, mnbt=8192, hidden=hidden, tp=4, dtype_bytes=2)
    assert 8192 * hidden * 2 < tp4 <= sizes[2]


def test_before_the_workspace_moe_scratch_widens_the_forward_peak_only() -> None:
    # fused_experts (0.6.4) holds [M, topk, 2I/TP] + [M x topk, I/TP] + [M, topk, K] at once,
    # M = min(tokens, chunk): Mixtral's two routed experts need more than a dense layer of the
    # same width, the charge grows linearly up to the chunk and by the hidden states beyond it.
    shape = MoeShape(MIXTRAL.experts_per_token or 0, MIXTRAL.expert_intermediate_size or 0)
    hidden, inter = MIXTRAL.hidden_size or 0, MIXTRAL.expert_intermediate_size or 0

    def forward(mnbt: int, tp: int = 1) -> int:
        return moe_forward_bytes(shape, mnbt=mnbt, hidden=hidden, tp=tp, dtype_bytes=2)

    assert forward(8192) > forward_peak_bytes(8192, hidden, inter, 1, 2)
    assert forward(16384) - forward(8192) == forward(8192) - forward(0)
    chunk = FUSED_MOE_CHUNK_TOKENS
    beyond = forward(2 * chunk) - forward(chunk)
    assert beyond == 2 * chunk * hidden * 2  # only the two hidden tensors grow, 2 B each
    assert forward(8192, tp=2) < forward(8192)
    # Within the profile: the forward (not the sampler) sets V0's peak at a 32k prefill
    batch = {"max_num_seqs": 256, "mnbt": 32768, "vocab": MIXTRAL.vocab_size or 0}
    layer = {"hidden": hidden, "intermediate": inter, "tp": 1, "dtype_bytes": 2}
    peak = activation_peak(SamplerPath.SORT, **batch, **layer, moe=shape)
    assert peak.forward_bytes == forward(32768) and peak.moe_workspace_bytes == 0
    persistent = activation_peak(SamplerPath.SORT, **batch, **layer, moe=shape, moe_workspace=True)
    assert persistent.forward_bytes == forward_peak_bytes(32768, hidden, inter, 1, 2)
    assert persistent.moe_workspace_bytes > 0


@pytest.mark.parametrize(
    ("model", "tp", "logged_gib"),
    # llm-d-planner's vLLM 0.19.0 H100 logs ("PyTorch activation peak memory"), MNBT 8192
    [(QWEN3_30B_A3B, 1, 2.68), (MIXTRAL, 2, 1.21)],
    ids=["qwen3-30b-a3b-tp1", "mixtral-tp2"],
)
def test_moe_activation_meets_the_engines_logged_peak(
    model: ModelGeometry, tp: int, logged_gib: float
) -> None:
    assert _plan(model, "0.19.0", tp) / GIB == pytest.approx(logged_gib, rel=0.05)


def test_mxfp4_scratch_is_marlins_on_the_padded_widths() -> None:
    # gpt-oss-like: 4 routed experts of width 2880, hidden 2880, Marlin's pads (128, 256):
    # N' = 2944, K' = 3072, M = 8,192 tokens, M x topk = 32,768 rows, bf16.
    shape = MoeShape(4, 2880, mxfp4_pads=(128, 256))
    rows = 8192 * 4
    # per call (fused_marlin_moe, 0.10.1.1): cache13 [rows x max(2N', K')], cache2 [rows, N'],
    # the [M, K'] output, beside the residual and the hidden states (2 x M x hidden) and the
    # input padded from K = 2880 to K' (F.pad, [M, K'])
    per_call = rows * 5888 + rows * 2944 + 8192 * 3072 + 2 * 8192 * 2880 + 8192 * 3072
    assert moe_forward_bytes(shape, mnbt=8192, hidden=2880, tp=1, dtype_bytes=2) == 2 * per_call
    # a hidden size already a multiple of 256 is not padded: no copy
    unpadded = rows * 5888 + rows * 2944 + 8192 * 3072 + 2 * 8192 * 3072
    assert moe_forward_bytes(shape, mnbt=8192, hidden=3072, tp=1, dtype_bytes=2) == 2 * unpadded
    # the persistent workspace (MarlinExperts.workspace_shapes, 0.19.0): [rows, max(N', K')],
    # [rows x max(2N', K')] and the [M, K'] output apart
    workspace = rows * 3072 + rows * 5888 + 8192 * 3072
    assert moe_workspace_bytes(shape, mnbt=8192, hidden=2880, tp=1, dtype_bytes=2) == 2 * workspace
    # TP 2 halves the expert width before padding: 1440 -> 1536
    assert shape.marlin_dims(2880, 2) == (1536, 3072)
