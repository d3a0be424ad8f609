"""Read what a serving engine said about its KV cache at start-up (vLLM and SGLang logs).

The lines read, by engine (wording from the engines' own log calls; engines.md §1, §2):

vLLM: "vLLM API server version X" / "Initializing a V1 LLM engine (vX)", the engine config
(`model=`, `max_seq_len=`, `tensor_parallel_size=`, `kv_cache_dtype=`, `quantization=`, …) and the
"non-default args" dict, "max_num_batched_tokens=N", "Model loading took X GiB",
"Available KV cache memory: X GiB", "GPU KV cache size: N tokens", "Maximum concurrency for
L tokens per request: Cx", and the sampler line ("Using FlashInfer for top-p & top-k
sampling" / "Falling back to the PyTorch-native implementation").
SGLang: `ServerArgs(model_path=…, tp_size=…, mem_fraction_static=…, chunked_prefill_size=…)`,
"KV Cache is allocated. #tokens: N, K size: a GB, V size: b GB", "max_total_num_tokens=N …
context_len=L", "Load weight end. … mem usage=W GB".

Pure text in, a `StartupLog` out; nothing here decides whether the log is complete enough —
the caller asks `missing()` for the fields it needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from kvscale.capacity.nonkv import SamplerPath

_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class StartupLog:
    """The capacity facts one start-up log states (None: the log does not say)."""

    engine: str | None = None  # vllm | sglang
    release: str | None = None
    model: str | None = None
    gpu: str | None = None  # device name as the log prints it
    gpu_memory_utilization: float | None = None  # vLLM util or SGLang mem_fraction_static
    max_num_batched_tokens: int | None = None  # vLLM MNBT / SGLang chunked_prefill_size
    max_num_seqs: int | None = None
    tensor_parallel: int | None = None
    max_model_len_tokens: int | None = None
    kv_cache_dtype: str | None = None
    block_size_tokens: int | None = None
    weights_gib: float | None = None  # per rank, as loaded
    available_kv_gib: float | None = None  # per rank
    kv_cache_tokens: int | None = None
    gpu_blocks: int | None = None  # V0 / early V1 "# GPU blocks: N"
    max_concurrency: float | None = None
    sampler_path: SamplerPath | None = None  # the path the log says ran
    quantization: str | None = None  # the --quantization the engine was started with

    def missing(self, required: tuple[str, ...]) -> list[str]:
        """Names of the `required` fields the log left empty."""
        return [name for name in required if getattr(self, name) is None]

    def with_overrides(self, **values: object) -> StartupLog:
        """A copy with the given fields set (None values are ignored)."""
        known = {f.name for f in fields(self)}
        given = {k: v for k, v in values.items() if v is not None and k in known}
        return StartupLog(**{**self.__dict__, **given})


# (field, pattern, converter): the first match in the log wins, so a later restatement with a
# different spelling cannot override what the engine printed first.
_Rule = tuple[str, re.Pattern[str], type[int] | type[float] | type[str]]


def _rules(*rows: tuple[str, str, type[int] | type[float] | type[str]]) -> tuple[_Rule, ...]:
    return tuple((name, re.compile(pattern), kind) for name, pattern, kind in rows)


_VLLM_RULES = _rules(
    ("release", r"vLLM API server version v?([0-9][0-9A-Za-z.+]*)", str),
    ("release", r"LLM engine \(v([0-9][0-9A-Za-z.+]*)\)", str),
    ("release", r"[█▀▄]\s+version v?([0-9][0-9A-Za-z.+]*)", str),  # the start-up banner (0.1x+)
    ("model", r"non-default args: \{[^}]*'model': '([^']+)'", str),
    ("model", r"\bmodel='([^']+)'", str),
    ("model", r"[█▀▄]\s+model (\S+)", str),
    ("gpu_memory_utilization", r"'gpu_memory_utilization': ([0-9.]+)", float),
    ("gpu_memory_utilization", r"\bgpu_memory_utilization=([0-9.]+)", float),
    ("max_num_batched_tokens", r"'max_num_batched_tokens': ([0-9]+)", int),
    ("max_num_batched_tokens", r"\bmax_num_batched_tokens=([0-9]+)", int),
    ("max_num_seqs", r"'max_num_seqs': ([0-9]+)", int),
    ("max_num_seqs", r"\bmax_num_seqs=([0-9]+)", int),
    ("tensor_parallel", r"'tensor_parallel_size': ([0-9]+)", int),
    ("tensor_parallel", r"\btensor_parallel_size=([0-9]+)", int),
    ("max_model_len_tokens", r"'max_model_len': ([0-9]+)", int),
    ("max_model_len_tokens", r"\bmax_seq_len=([0-9]+)", int),
    ("max_model_len_tokens", r"Maximum concurrency for ([0-9,]+) tokens per request", int),
    ("kv_cache_dtype", r"'kv_cache_dtype': '([a-z0-9_]+)'", str),
    ("kv_cache_dtype", r"\bkv_cache_dtype=([a-z0-9_]+)", str),
    ("block_size_tokens", r"'block_size': ([0-9]+)", int),
    ("quantization", r"'quantization': '([a-z0-9_-]+)'", str),
    ("quantization", r"\bquantization=([a-z0-9_-]+)[,)]", str),  # "quantization=None" is silent
    ("weights_gib", r"Model loading took " + _NUM + r" ?GiB", float),
    ("weights_gib", r"Loading model weights took " + _NUM + r" ?GB", float),  # V0, GiB units
    ("available_kv_gib", r"Available KV cache memory: " + _NUM + r" ?GiB", float),
    ("available_kv_gib", r"\bkv_cache_size=" + _NUM + r" ?GiB", float),  # V0 profiling line
    ("gpu_blocks", r"GPU blocks: " + _NUM, int),
    ("kv_cache_tokens", r"GPU KV cache size: " + _NUM + r" tokens", int),
    (
        "max_concurrency",
        r"Maximum concurrency for [0-9,]+ tokens per request: " + _NUM + "x",
        float,
    ),
)
_SGLANG_RULES = _rules(
    ("release", r"sglang(?: version|==| v)\s*v?([0-9][0-9A-Za-z.+]*)", str),
    ("model", r"model_path='([^']+)'", str),
    ("gpu_memory_utilization", r"mem_fraction_static=([0-9.]+)", float),
    ("max_num_batched_tokens", r"chunked_prefill_size=([0-9]+)", int),
    ("max_num_seqs", r"max_running_requests=([0-9]+)", int),
    ("tensor_parallel", r"\btp_size=([0-9]+)", int),
    ("max_model_len_tokens", r"context_len=([0-9]+)", int),
    ("kv_cache_dtype", r"kv_cache_dtype='([a-z0-9_]+)'", str),
    ("quantization", r"\bquantization='([a-z0-9_-]+)'", str),
    ("weights_gib", r"Load weight end\..*?mem usage=" + _NUM + r" ?GB", float),
    ("kv_cache_tokens", r"KV Cache is allocated\. #tokens: " + _NUM, int),
)
_SGLANG_KV_SIZES = re.compile(r"K size: " + _NUM + r" ?GB, V size: " + _NUM + r" ?GB")
_SGLANG_MLA_SIZE = re.compile(r"KV Cache is allocated\..*?KV size: " + _NUM + r" ?GB")
# Device names as nvidia-smi / collect_env / torch print them ("NVIDIA H100 80GB HBM3").
_GPU = re.compile(
    r"\b(?:NVIDIA|Tesla)\s+([A-Za-z0-9][A-Za-z0-9 \-]*?)(?=\s*(?:[,()|]|$|\s{2}|with\b|GPU\b))",
    re.MULTILINE,
)
_SAMPLER_LINES: tuple[tuple[str, SamplerPath], ...] = (
    ("Using FlashInfer for top-p & top-k sampling", SamplerPath.FLASHINFER),
    ("Falling back to the PyTorch-native implementation of top-p & top-k", SamplerPath.SORT),
)


def _engine_of(text: str) -> str | None:
    if "KV Cache is allocated" in text or "ServerArgs(" in text or "max_total_num_tokens" in text:
        return "sglang"
    if any(mark in text for mark in ("vLLM", "KV cache", "GPU blocks", "top-p & top-k")):
        return "vllm"
    return None


def _apply(text: str, rules: tuple[_Rule, ...]) -> dict[str, object]:
    found: dict[str, object] = {}
    for name, pattern, kind in rules:
        if name in found:
            continue
        match = pattern.search(text)
        if match:
            raw = match.group(1)
            found[name] = kind(_number(raw)) if kind in (int, float) else raw
    return found


def parse_startup_log(text: str) -> StartupLog:
    """Everything `text` states about the engine's KV cache (missing facts stay None)."""
    engine = _engine_of(text)
    values: dict[str, object] = {"engine": engine}
    if engine == "sglang":
        values |= _apply(text, _SGLANG_RULES)
        sizes = _SGLANG_KV_SIZES.search(text)
        mla = _SGLANG_MLA_SIZE.search(text)
        if sizes:
            values["available_kv_gib"] = _number(sizes.group(1)) + _number(sizes.group(2))
        elif mla:
            values["available_kv_gib"] = _number(mla.group(1))
    elif engine == "vllm":
        values |= _apply(text, _VLLM_RULES)
        for line, path in _SAMPLER_LINES:
            if line in text:
                values["sampler_path"] = path
                break
    gpu = _GPU.search(text)
    if gpu:
        values["gpu"] = "NVIDIA " + gpu.group(1).strip()
    return StartupLog(**values)  # type: ignore[arg-type]
