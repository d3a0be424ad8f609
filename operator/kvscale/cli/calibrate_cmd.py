"""`kvscale calibrate --log FILE`: the planner's prediction beside an engine's start-up log.

Reads what a vLLM or SGLang start-up log states (release, model, GPU, utilisation, batch
knobs, TP, KV tokens, available KV memory, the sampler path that ran), plans the same engine
instance, and prints the two side by side, the non-KV memory the log implies (the engine's
requested budget minus its KV pool: what `PlanRequest.observed_non_kv_bytes` takes), and one
CSV row in the bench's format (bench/data/vllm_kv_observations.csv).

A log that lacks what the comparison needs exits 2 naming the missing facts and the flag that
supplies each (e.g. `--gpu` when the log never names the device).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvscale.api.quantization import started_with
from kvscale.capacity import (
    GIB,
    CapacityInputError,
    CapacityPlan,
    EngineVersion,
    PlanRequest,
    SamplerPath,
    find_gpu,
    find_model,
    list_models,
    plan_capacity,
)
from kvscale.capacity.types import ModelGeometry
from kvscale.cli.common import CliError
from kvscale.engines.startup_log import StartupLog, parse_startup_log

# The bench's columns (bench/data/vllm_kv_observations.csv), in order.
CSV_COLUMNS = (
    "engine", "engine_version", "model", "gpu", "num_gpus", "tp", "gpu_memory_utilization",
    "max_model_len", "kv_cache_dtype", "block_size", "available_kv_gib", "kv_cache_tokens",
    "gpu_blocks", "max_concurrency", "max_concurrency_tokens", "sampler_path", "source",
    "provenance", "notes",
)  # fmt: skip
# What the comparison needs, and the flag that supplies each when the log is silent.
REQUIRED: dict[str, str] = {
    "engine": "--engine",
    "release": "--engine-version",
    "model": "--model",
    "gpu": "--gpu",
}
MEASURED = ("available_kv_gib", "kv_cache_tokens", "gpu_blocks")


def _read_log(args: argparse.Namespace) -> StartupLog:
    try:
        text = Path(args.log).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CliError(
            f"--log: cannot read {args.log} ({exc.strerror}); fix: check the path"
        ) from None
    log = parse_startup_log(text).with_overrides(
        engine=args.engine, release=args.engine_version, model=args.model, gpu=args.gpu
    )
    missing = [f"{name} (pass {flag})" for name, flag in REQUIRED.items()
               if getattr(log, name) is None]  # fmt: skip
    if all(getattr(log, name) is None for name in MEASURED):
        missing.append("the KV pool: neither 'Available KV cache memory' nor 'GPU KV cache size' "
                       "(vLLM) / 'KV Cache is allocated' (SGLang) is in the log")  # fmt: skip
    if missing:
        raise CliError(f"--log: {args.log} does not state {'; '.join(missing)}")
    return log


def catalog_model(name: str) -> ModelGeometry:
    """A catalog model by id, or by the last part of a local path ('/models/Qwen/QwQ-32B')."""
    try:
        return find_model(name)
    except CapacityInputError:
        tail = name.rstrip("/").rsplit("/", 1)[-1].lower()
        matches = [m for m in list_models() if m.rsplit("/", 1)[-1].lower() == tail]
        if len(matches) != 1:
            raise
        return find_model(matches[0])


def request_from_log(log: StartupLog) -> PlanRequest:
    """The engine instance the log describes, as the planner's input (defaults where silent)."""
    assert log.engine and log.release and log.model and log.gpu  # checked by _read_log
    model, online = started_with(
        catalog_model(log.model), log.engine, log.release, log.quantization
    )
    return PlanRequest(
        model=model,
        gpu=find_gpu(log.gpu),
        engine=log.engine,
        engine_version=EngineVersion.parse(log.release),
        tensor_parallel=log.tensor_parallel or 1,
        max_model_len_tokens=log.max_model_len_tokens or model.max_position_embeddings,
        gpu_memory_utilization=log.gpu_memory_utilization,
        kv_cache_dtype=log.kv_cache_dtype or "auto",
        block_size_tokens=log.block_size_tokens if log.engine == "vllm" else None,
        max_num_batched_tokens=log.max_num_batched_tokens,
        max_num_seqs=log.max_num_seqs if log.engine == "vllm" else None,
        sampler_path=log.sampler_path or SamplerPath.AUTO,
        online_quantization=online,
    )


def _logged_kv_bytes(log: StartupLog, plan: CapacityPlan) -> int:
    """The pool the log states, per rank (from the tokens when only they are printed)."""
    if log.available_kv_gib is not None:
        return round(log.available_kv_gib * GIB)
    if log.gpu_blocks is not None:
        return log.gpu_blocks * plan.page_bytes * plan.group_size_layers
    assert log.kv_cache_tokens is not None
    return log.kv_cache_tokens * plan.kv_bytes_per_token


def _logged_tokens(log: StartupLog, plan: CapacityPlan) -> int | None:
    if log.kv_cache_tokens is not None:
        return log.kv_cache_tokens
    return None if log.gpu_blocks is None else log.gpu_blocks * plan.block_size_tokens


def _signed(predicted: float, observed: float) -> str:
    return f"{(predicted - observed) / observed:+.2%}" if observed else "n/a"


def compare(log: StartupLog, request: PlanRequest) -> dict[str, Any]:
    """Planned vs logged, the implied non-KV memory, and the layout check (mode a)."""
    plan = plan_capacity(request)
    logged_kv = _logged_kv_bytes(log, plan)
    implied_non_kv = plan.requested_bytes - logged_kv
    from_logged = plan_capacity(replace(request, kv_cache_memory_bytes=logged_kv))
    calibrated = plan_capacity(replace(request, observed_non_kv_bytes=implied_non_kv))
    return {
        "engine": request.engine,
        "engineVersion": str(request.engine_version),
        "model": request.model.name,
        "gpu": request.gpu.id,
        "tensorParallel": request.tensor_parallel,
        "gpuMemoryUtilization": plan.gpu_memory_utilization,
        "maxNumBatchedTokens": plan.max_num_batched_tokens,
        "maxNumSeqs": plan.max_num_seqs or plan.engine_cap_seqs,
        "maxModelLen": request.max_model_len_tokens,
        "samplerPath": plan.sampler_path.value if plan.sampler_path else None,
        "samplerPathFromLog": log.sampler_path is not None,
        "plannedKvBytes": plan.available_kv_bytes,
        "loggedKvBytes": logged_kv,
        "plannedKvTokens": plan.kv_cache_tokens,
        "loggedKvTokens": _logged_tokens(log, plan),
        "kvTokensFromLoggedMemory": from_logged.kv_cache_tokens,
        "plannedNonKvBytes": plan.non_kv_bytes,
        "observedNonKvBytes": implied_non_kv,
        "plannedWeightsBytes": plan.loaded_weights_bytes,
        "ropeCacheBytes": plan.rope_cache_bytes,
        "weightsPaddingBytes": plan.weights_padding_bytes,
        "loggedWeightsBytes": round(log.weights_gib * GIB) if log.weights_gib else None,
        "activationBytes": plan.activation_bytes,
        "nonTorchBytes": plan.non_torch_bytes,
        "cudagraphBytes": plan.cudagraph_bytes,
        "calibratedKvTokens": calibrated.kv_cache_tokens,
    }


def csv_row(log: StartupLog, result: dict[str, Any], source: str, provenance: str) -> str:
    """One bench row; numbers only where the log printed them (derived ones stay empty)."""
    util = log.gpu_memory_utilization
    notes = [] if log.weights_gib is None else [f"weights {log.weights_gib:g} GiB/rank"]
    notes += [f"--quantization {log.quantization}"] if log.quantization else []
    row = {
        "engine": result["engine"],
        "engine_version": result["engineVersion"],
        "model": result["model"],
        "gpu": result["gpu"],
        "num_gpus": log.tensor_parallel or "",
        "tp": log.tensor_parallel or 1,
        "gpu_memory_utilization": "" if util is None else f"{util:g}",
        "max_model_len": log.max_model_len_tokens or "",
        "kv_cache_dtype": log.kv_cache_dtype or "auto",
        "block_size": log.block_size_tokens or "",
        "available_kv_gib": "" if log.available_kv_gib is None else f"{log.available_kv_gib:g}",
        "kv_cache_tokens": log.kv_cache_tokens or "",
        "gpu_blocks": log.gpu_blocks or "",
        "max_concurrency": "" if log.max_concurrency is None else f"{log.max_concurrency:g}",
        "max_concurrency_tokens": log.max_model_len_tokens if log.max_concurrency else "",
        "sampler_path": log.sampler_path.value if log.sampler_path else "",
        "source": source,
        "provenance": provenance,
        "notes": "; ".join(notes),
    }
    buffer = io.StringIO()
    csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="").writerow(row)
    return buffer.getvalue()


def _gib(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / GIB:.2f}"


def format_text(result: dict[str, Any], row: str) -> str:
    path = result["samplerPath"] or "n/a"
    path_from = "from the log" if result["samplerPathFromLog"] else "auto: not in the log"
    if result["samplerPath"] is None and result["engine"] == "vllm":
        path, path_from = "sort", "V0 samples on the sort path"
    elif result["samplerPath"] is None:
        path_from = "this engine's budget has no sampler term"
    logged_tokens = result["loggedKvTokens"]
    lines = [
        f"{result['engine']} {result['engineVersion']}  {result['model']} on {result['gpu']}, "
        f"TP {result['tensorParallel']}, util {result['gpuMemoryUtilization']:g}, "
        f"MNBT {result['maxNumBatchedTokens']}, max_num_seqs {result['maxNumSeqs']}, "
        f"sampler path {path} ({path_from})",
        f"{'':<26}{'planned':>12}{'log':>12}{'error':>10}",
        f"{'KV memory GiB/rank':<26}{_gib(result['plannedKvBytes']):>12}"
        f"{_gib(result['loggedKvBytes']):>12}"
        f"{_signed(result['plannedKvBytes'], result['loggedKvBytes']):>10}",
    ]
    if logged_tokens:
        lines.append(
            f"{'KV tokens':<26}{result['plannedKvTokens']:>12,}{logged_tokens:>12,}"
            f"{_signed(result['plannedKvTokens'], logged_tokens):>10}"
        )
        lines.append(
            f"{'  from the logged memory':<26}{result['kvTokensFromLoggedMemory']:>12,}"
            f"{logged_tokens:>12,}{_signed(result['kvTokensFromLoggedMemory'], logged_tokens):>10}"
        )
    lines += [
        f"{'non-KV GiB/rank':<26}{_gib(result['plannedNonKvBytes']):>12}"
        f"{_gib(result['observedNonKvBytes']):>12}"
        f"{_signed(result['plannedNonKvBytes'], result['observedNonKvBytes']):>10}",
        f"{'  weights as loaded':<26}{_gib(result['plannedWeightsBytes']):>12}"
        f"{_gib(result['loggedWeightsBytes']):>12}",
        f"  planned weights padding {_gib(result['weightsPaddingBytes'])}, rope tables "
        f"{_gib(result['ropeCacheBytes'])}, activation "
        f"{_gib(result['activationBytes'])}, non-torch "
        f"{_gib(result['nonTorchBytes'])}, CUDA graphs {_gib(result['cudagraphBytes'])} GiB",
        f"implied non-KV overhead (budget − logged pool): "
        f"{result['observedNonKvBytes']} bytes/rank = observed_non_kv_bytes; planning with it "
        f"gives {result['calibratedKvTokens']:,} KV tokens",
        f"csv: {row}",
    ]
    return "\n".join(lines)


def run_calibrate(args: argparse.Namespace) -> int:
    log = _read_log(args)
    try:
        request = request_from_log(log)
        result = compare(log, request)
    except CapacityInputError as exc:
        raise CliError(f"--log: {exc.field}: {exc.problem}; fix: {exc.fix}") from None
    row = csv_row(log, result, args.source or Path(args.log).name, args.provenance or "")
    if args.output == "json":
        print(json.dumps(result | {"csv": row}, indent=2))
    elif args.output == "csv":
        print(row)
    else:
        print(format_text(result, row))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="compare the planner with a vLLM or SGLang start-up log",
        description="Read an engine start-up log, plan the same instance, and print both, "
        "the non-KV memory the log implies, and a CSV row for bench/data.",
    )
    parser.add_argument("--log", required=True, metavar="FILE", help="the engine's start-up log")
    parser.add_argument("--engine", choices=("vllm", "sglang"), help="when the log is ambiguous")
    parser.add_argument("--engine-version", metavar="V", help="when the log does not print it")
    parser.add_argument("--model", metavar="HF_ID", help="catalog model, when the log's differs")
    parser.add_argument("--gpu", metavar="NAME", help="the device, when the log does not name it")
    parser.add_argument("--source", help="the CSV row's source column (default: the file name)")
    parser.add_argument("--provenance", help="the CSV row's provenance column (e.g. a URL)")
    parser.add_argument("-o", "--output", choices=("text", "json", "csv"), default="text")
    parser.set_defaults(func=run_calibrate)
