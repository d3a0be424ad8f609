"""The bench's observations: bench/data/vllm_kv_observations.csv rows turned into planner inputs.

One row is one engine start-up that a public source printed (provenance column: the URL). This
module only reads rows: catalog mappings for the models and GPUs the rows name, the rows shown
but not gated (with the reason), and the `PlanRequest` a row describes.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from kvscale.capacity import GIB, EngineVersion, PlanRequest, SamplerPath, find_gpu, find_model
from kvscale.capacity.allocator import weights_padding_bytes
from kvscale.capacity.budget import vllm_rope_cache_bytes
from kvscale.capacity.catalog import list_models, parse_number
from kvscale.capacity.weights import with_quantization

CSV_PATH = Path(__file__).parent / "data" / "vllm_kv_observations.csv"
CATALOG_IDS = frozenset(model.lower() for model in list_models())

# Rows whose model is a catalog id are planned on it as they are; this maps the others (a
# quantized or renamed checkpoint) to the catalog model and the quantization they serve.
MODEL_MAP: dict[str, tuple[str, str | None]] = {
    "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": ("meta-llama/Llama-3.3-70B-Instruct", "fp8"),
    "meta-llama/Llama-2-7b": ("meta-llama/Llama-2-7b-hf", None),
    "meta-llama/Llama-2-70b": ("meta-llama/Llama-2-70b-hf", None),
    "Qwen/Qwen2.5-32B-Instruct-AWQ": ("Qwen/Qwen2.5-32B-Instruct", "awq"),
    "Qwen/Qwen3-235B-A22B-FP8": ("Qwen/Qwen3-235B-A22B", "fp8"),
    "BatsResearch/bonito-v1 (Mistral-7B arch)": ("mistralai/Mistral-7B-Instruct-v0.3", None),
    "teknium/OpenHermes-2.5-Mistral-7B": ("mistralai/Mistral-7B-Instruct-v0.3", None),
    "TheBloke/Llama-2-7B-GPTQ": ("meta-llama/Llama-2-7b-hf", "gptq"),
    "TheBloke/zephyr-7B-beta-AWQ": ("mistralai/Mistral-7B-Instruct-v0.3", "awq"),
    "microsoft/phi-4 (bnb 4-bit, Unsloth)": ("microsoft/phi-4", "bnb-4bit"),
    "Qwen/Qwen1.5-7B-Chat-GPTQ-Int4": ("Qwen/Qwen1.5-7B-Chat", "gptq"),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16": (
        "meta-llama/Llama-3.1-8B-Instruct",
        "gptq",
    ),
    "RedHatAI/Llama-3.3-70B-Instruct-fp8-dynamic": ("meta-llama/Llama-3.3-70B-Instruct", "fp8"),
    "deepseek-ai/DeepSeek-V2-Lite-Chat": ("deepseek-ai/DeepSeek-V2-Lite", None),
    "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": ("Qwen/Qwen3-235B-A22B", "fp8"),
    "Qwen/Qwen3-14B-AWQ": ("Qwen/Qwen3-14B", "awq"),
    "meta-llama/Llama-2-7b-chat-hf": ("meta-llama/Llama-2-7b-hf", None),
    "meta-llama/Llama-3.1-405B-Instruct": ("meta-llama/Llama-3.1-405B", None),
    "mgoin/phi-2-super-marlin": ("microsoft/phi-2", "gptq"),
    "meta-llama/Meta-Llama-3.1-8B-Instruct": ("meta-llama/Llama-3.1-8B-Instruct", None),
    "NousResearch/Meta-Llama-3-8B": ("meta-llama/Meta-Llama-3-8B", None),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": ("Qwen/Qwen3-30B-A3B", None),
    # the model is "not stated"; the notes identify a Qwen3-30B-A3B geometry (48 KiB/token fp8)
    "not stated (weights 29.09 GiB; 48 KiB/token fp8 = Qwen3-30B-A3B-like)": (
        "Qwen/Qwen3-30B-A3B",
        None,
    ),
}

# A refreshed checkpoint that differs from its catalog model only in the positions it serves
# (and so in vLLM's rotary table): the 2507 refresh serves 262,144 (its model card); its logged
# load (56.93 GiB) is the base model's 56.88 plus the larger table.
MODEL_POSITIONS: dict[str, int] = {"Qwen/Qwen3-30B-A3B-Instruct-2507": 262_144}

GPU_MAP: dict[str, str] = {
    "A100-80GB": "a100_sxm_80gb",
    "A100-40GB": "a100_sxm_40gb",
    "H100-80GB": "h100_sxm_80gb",
    "H100-80GB HBM3": "h100_sxm_80gb",
    "L40S": "l40s",
    "L40S 46GB": "l40s",
    "L4 24GB": "l4",
    "MI300X 192GB": "mi300x",
    "RTX 3090": "rtx_3090",
    "RTX 3090 24GB": "rtx_3090",
    "RTX A6000": "rtx_a6000",
    "RTX A6000 48GB": "rtx_a6000",
    "RTX 4090": "rtx_4090",
    "A10G (g5.8xlarge)": "a10g",
    "L4 (g6.12xlarge)": "l4",
    "80GB-class": "a100_sxm_80gb",
    "A10G": "a10g",
    "L4": "l4",
    "H200": "h200_141gb",
}
# Mode (a) needs no GPU facts (the available KV memory is given); rows that do not state the
# GPU are planned on this stand-in, and mode (b) skips them (their utilisation is unknown too).
MODE_A_STANDIN_GPU = "h100_sxm_80gb"

# A `--dtype float32` start: shown in both modes, gated in neither.
FP32_ROW = (
    "llm-d-incubation/llm-d-planner accuracy/results/v0.19.0/logs/"
    "meta-llama-llama-3--h100-80gb--tp1pp1dp1--8192-dtf32.log",
    "meta-llama/Llama-3.1-8B-Instruct",
)
FP32_REASON = (
    "--dtype float32: the planner serves 16-bit models (fp32 weights and a 4-byte KV cache "
    "are not modelled)"
)

# Mode (a) rows shown but not gated, with the reason.
MODE_A_EXCLUDED: dict[tuple[str, str], str] = {
    FP32_ROW: FP32_REASON,
    (
        "vllm-project/vllm#21348",
        "Qwen/Qwen3-235B-A22B-FP8",
    ): "the 8.11 GiB is one TP rank's log line; the engine sizes the pool by the smallest of 4 "
    "ranks (178,880 tokens = 8.02 GiB)",
    (
        "vllm-project/vllm#13061",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    ): "V0; the tokens are the minimum over 2 ranks (error text), the 8.69 GiB one rank's",
}

# Rows that are shown but not gated in mode (b), with the reason (keyed by source + model).
MODE_B_EXCLUDED: dict[tuple[str, str], str] = {
    FP32_ROW: FP32_REASON,
    (
        "llm-d/llm-d-benchmark config_explorer/empirical-vllm-memory-results.md",
        "openai/gpt-oss-120b",
    ): "row inconsistent: its own figures sum at util 0.95, not the stated 0.9 "
    "(79.18*0.95-64.38-7.38-0.13 = 3.33)",
    (
        "vllm-project/vllm#27508",
        "openai/gpt-oss-120b",
    ): "weights not logged, version approximate (~0.11); gpt-oss-120b loads 64.38 GiB in "
    "0.11.0 but 65.97 GiB in 0.10.1, a spread as large as the 1.71 GiB KV budget",
    (
        "vllm-project/vllm PR#2031",
        "meta-llama/Llama-2-70b",
    ): "v0.2.4 charged each TP rank's NCCL/cupy buffers (~13 GiB/rank here) to the profile; "
    "that pre-0.3 accounting is not modelled",
    (
        "vllm-project/vllm#21348",
        "Qwen/Qwen3-235B-A22B-FP8",
    ): "weights of the FP8 variant are not logged; the estimate from the BF16 parameter count "
    "misses them by ~1.8 GiB/rank (SGLang's log of the same checkpoint implies 56.8 GiB/rank)",
    (
        "seungrokj/ll3.1_test README.md",
        "meta-llama/Llama-3.1-405B",
    ): "profiled batch not stated (a ROCm fork's image): the pool implies 44 GiB of non-KV "
    "beyond the weights per rank, which 0.4.3's default profile for max_model_len 8192 (8,192 "
    "tokens, ~1 GiB) cannot reach and a 131,072-token one (the Hot Aisle 405B row's) would",
}


def first_int(cell: str) -> int | None:
    value = parse_number(cell)
    return int(value) if value is not None else None


def _version(cell: str) -> str | None:
    """The release a row names, with its dev or post phase: a development build of 0.6.4
    ("0.6.4.dev9") precedes the 0.6.4 release and plans with the rules before it (PEP 440)."""
    match = re.search(r"\d+\.\d+(?:\.\d+)*(?:\.(?:dev|post)\d+)?", cell.replace("~", ""))
    return match.group() if match else None


def notes_weights_gib(notes: str) -> float | None:
    match = re.search(r"weights(?: \(Marlin\))? ([\d.]+)(?: GiB)?", notes)
    return float(match.group(1)) if match else None


def source_of(row: dict[str, str]) -> str:
    """The independent source a row comes from (one issue, one repository, one document)."""
    return row["source"].split(" ")[0] if " PR#" not in row["source"] else row["source"]


def logged_path(row: dict[str, str]) -> SamplerPath | None:
    """The sampler path the row's log names (None: not printed)."""
    cell = row.get("sampler_path", "").strip()
    return SamplerPath(cell) if cell else None


def row_request(
    row: dict[str, str], *, use_logged_path: bool = False
) -> tuple[PlanRequest | None, str]:
    """Build the request a row describes; (None, why) when the row lacks an input. The sampler
    path is `auto` unless `use_logged_path` and the row's log names the path that ran."""
    mapped = MODEL_MAP.get(row["model"])
    if mapped is None and row["model"].lower() in CATALOG_IDS:
        mapped = (row["model"], None)
    if mapped is None:
        return None, "model not in the catalog"
    version = _version(row["engine_version"])
    tp = int(row["tp"]) if row["tp"].strip().isdigit() else None
    if version is None or tp is None:
        return None, "version or TP not stated"
    gpu_cell = row["gpu"]
    gpu_key = re.sub(r"\s*\(.*\)$", "", gpu_cell).strip()
    gpu = find_gpu(GPU_MAP.get(gpu_key, MODE_A_STANDIN_GPU))
    if gpu_key not in GPU_MAP and parse_number(row["gpu_memory_utilization"]) is not None:
        return None, "GPU not stated / not in the catalog"
    stated_gib = re.search(r"\(([\d.]+) GiB\)", gpu_cell)
    online = re.search(r"--quantization (fp8)(?:_per_tensor)?\b", row["notes"])  # at load
    quant = mapped[1] or (online and online.group(1))
    model = find_model(mapped[0])
    model = with_quantization(model, quant) if quant else model  # what the CRD's field does
    if (positions := MODEL_POSITIONS.get(row["model"])) is not None:
        tables = tuple(replace(t, max_positions=positions) for t in model.rope_tables)
        model = replace(model, max_position_embeddings=positions, rope_tables=tables)
    note = ""
    weights_gib = notes_weights_gib(row["notes"])
    catalog_lacks = model.weights_bytes is None or mapped[1] is not None or model.params is None
    weights = None
    if weights_gib is not None and catalog_lacks:
        per_rank = "/rank" in row["notes"] or "GiB/rank" in row["notes"]
        weights = int(weights_gib * GIB * (tp if per_rank else 1))
        if row["engine"] == "vllm":  # the logged load holds the rope tables and the
            # padding (block tails, mxfp4 layout) on every rank
            extra = vllm_rope_cache_bytes(model, version) + weights_padding_bytes(model, tp, gpu)
            weights -= extra * tp
        note = "weights from notes"
    length = first_int(row["max_model_len"]) or model.max_position_embeddings
    batched = re.search(r"MNBT (\d+)|max-num-batched-tokens (\d+)", row["notes"])
    seqs = re.search(r"max[-_]num[-_]seqs[ =]+(\d+)", row["notes"])
    v0 = "(V0" in row["engine_version"]
    kv_dtype = row["kv_cache_dtype"].split("(")[0].strip() or "auto"
    request = PlanRequest(
        model=model,
        gpu=gpu,
        engine=row["engine"],
        engine_version=EngineVersion.parse(version),
        tensor_parallel=tp,
        max_model_len_tokens=length,
        gpu_memory_utilization=parse_number(row["gpu_memory_utilization"]),
        gpu_memory_bytes=int(float(stated_gib.group(1)) * GIB) if stated_gib else None,
        kv_cache_dtype="auto" if kv_dtype in ("", "float16") else kv_dtype,
        block_size_tokens=first_int(row["block_size"]) if row["engine"] == "vllm" else None,
        max_num_batched_tokens=int(next(g for g in batched.groups() if g)) if batched else None,
        max_num_seqs=int(seqs.group(1)) if seqs else None,
        weights_bytes=weights,
        vllm_v0=v0 or None,
        # vLLM's benchmark scripts pass chunked prefill off explicitly; their logs say so
        chunked_prefill=False if "chunked prefill off" in row["notes"] else None,
        sampler_path=(use_logged_path and logged_path(row)) or SamplerPath.AUTO,
    )
    return request, note


def observed_measures(row: dict[str, str]) -> list[tuple[str, float]]:
    out = []
    for measure, column in (("tokens", "kv_cache_tokens"), ("blocks", "gpu_blocks")):
        value = parse_number(row[column])
        if value is not None and "~" not in row[column]:
            out.append((measure, value))
    conc = parse_number(row["max_concurrency"])
    if conc is not None and row["max_concurrency_tokens"]:
        out.append(("concurrency", conc))
    return out
