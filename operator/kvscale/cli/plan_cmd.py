"""`kvscale plan`: plan one engine instance from flags, or an LLMDeployment across GPU types.

Every bad input becomes one CliError line naming the field and the fix (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from kvscale.capacity import (
    GIB,
    CapacityInputError,
    CapacityPlan,
    ConcurrencyVerdict,
    PlanRequest,
    SloTargets,
    WorkloadProfile,
    estimate_safe_concurrency,
    find_gpu,
    find_model,
    model_from_config,
    plan_capacity,
    plan_to_json,
)
from kvscale.capacity.types import ModelGeometry
from kvscale.cli.common import CliError

ENGINES = ("vllm", "sglang", "tgi", "trtllm")
DEFAULT_ENGINE_VERSION = {"vllm": "0.11.0", "sglang": "0.5.0", "tgi": "3.3.7", "trtllm": "1.2.0"}


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe one engine instance (shared with `kvscale flags`)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model-config", metavar="FILE", help="the model's HF config.json")
    model.add_argument("--model", metavar="HF_ID", help="a catalog model, e.g. Qwen/Qwen3-8B")
    model.add_argument("--weights-gib", metavar="W", help="checkpoint size in GiB (all ranks)")
    gpu = parser.add_argument_group("hardware")
    gpu.add_argument("--gpu", metavar="NAME", help="catalog id, gpu.product label or alias")
    gpu.add_argument("--gpu-memory-gib", metavar="X", help="override the device memory (GiB)")
    gpu.add_argument(
        "--tensor-parallel", "--tensor-parallel-size", "-tp", dest="tensor_parallel",
        metavar="N", default="1", help="GPUs per replica (default 1)",
    )  # fmt: skip
    engine = parser.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINES, default="vllm")
    engine.add_argument("--engine-version", metavar="V", help="release, e.g. 0.11.0")
    engine.add_argument("--gpu-memory-utilization", metavar="U", help="default: the version's")
    engine.add_argument("--max-model-len", metavar="L", help="max context tokens per request")
    engine.add_argument("--kv-cache-dtype", metavar="D", default="auto")
    engine.add_argument("--block-size", metavar="B")
    engine.add_argument("--max-num-batched-tokens", metavar="T")
    engine.add_argument("--max-num-seqs", metavar="S")
    engine.add_argument("--kv-cache-memory-bytes", metavar="N")


def _number(value: str | None, field: str, kind: type[int] | type[float]) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise CliError(f"{field}: {value!r} is not a number; fix: pass e.g. 8192") from None


def _load_json(path: str) -> Mapping[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(
            f"--model-config: cannot read {path} ({exc.strerror}); fix: check the path"
        ) from None
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--model-config: {path} is not JSON ({exc.msg}); fix: pass config.json"
        ) from None
    if not isinstance(data, Mapping):
        raise CliError("--model-config: not a JSON object; fix: pass the model's config.json")
    return data


def _resolve_model(args: argparse.Namespace, weights_bytes: int | None) -> ModelGeometry:
    if args.model_config:
        config = _load_json(args.model_config)
        name = args.model or str(config.get("_name_or_path") or Path(args.model_config).stem)
        return model_from_config(config, name=name, weights_bytes=weights_bytes)
    if args.model:
        return find_model(args.model)
    raise CliError("--model: missing; fix: pass --model HF_ID or --model-config config.json")


def _build_request(args: argparse.Namespace) -> PlanRequest:
    weights_gib = _number(args.weights_gib, "--weights-gib", float)
    weights = int(weights_gib * GIB) if weights_gib is not None else None
    model = _resolve_model(args, weights)
    if not args.gpu:
        raise CliError("--gpu: missing; fix: pass --gpu NAME (e.g. H100, NVIDIA-L40S)")
    gpu = find_gpu(args.gpu)
    memory_gib = _number(args.gpu_memory_gib, "--gpu-memory-gib", float)
    max_len = _number(args.max_model_len, "--max-model-len", int)
    util = _number(args.gpu_memory_utilization, "--gpu-memory-utilization", float)
    if util is not None and not 0 < util <= 1:
        raise CliError(f"--gpu-memory-utilization: {util} is outside (0, 1]; fix: use e.g. 0.9")
    return PlanRequest(
        model=model,
        gpu=gpu,
        engine=args.engine,
        engine_version=args.engine_version or DEFAULT_ENGINE_VERSION[args.engine],
        tensor_parallel=_number(args.tensor_parallel, "--tensor-parallel", int),
        max_model_len_tokens=max_len if max_len is not None else model.max_position_embeddings,
        gpu_memory_utilization=util,
        gpu_memory_bytes=int(memory_gib * GIB) if memory_gib is not None else None,
        kv_cache_dtype=args.kv_cache_dtype,
        block_size_tokens=_number(args.block_size, "--block-size", int),
        max_num_batched_tokens=_number(
            args.max_num_batched_tokens, "--max-num-batched-tokens", int
        ),
        max_num_seqs=_number(args.max_num_seqs, "--max-num-seqs", int),
        kv_cache_memory_bytes=_number(args.kv_cache_memory_bytes, "--kv-cache-memory-bytes", int),
        weights_bytes=weights,
    )


def plan_request_from_args(args: argparse.Namespace) -> PlanRequest:
    """A validated PlanRequest from `add_plan_arguments` flags; CliError on bad input."""
    try:
        request = _build_request(args)
        plan_capacity(request)  # validates geometry x parallelism x lengths
    except CapacityInputError as exc:
        raise CliError(f"{_flag_of(exc.field)}: {exc.problem}; fix: {exc.fix}") from None
    return request


FIELD_FLAGS = {
    "tensorParallel": "--tensor-parallel",
    "maxModelLen": "--max-model-len",
    "blockSize": "--block-size",
    "maxNumBatchedTokens": "--max-num-batched-tokens",
    "maxNumSeqs": "--max-num-seqs",
    "kvCacheMemoryBytes": "--kv-cache-memory-bytes",
    "gpuMemoryGiB": "--gpu-memory-gib",
    "gpuMemoryUtilization": "--gpu-memory-utilization",
    "weightsGiB": "--weights-gib",
    "weights": "--weights-gib",
    "kvCacheDtype": "--kv-cache-dtype",
    "engineVersion": "--engine-version",
    "gpu": "--gpu",
    "model": "--model",
}


def _flag_of(field: str) -> str:
    """The flag the user typed for a planner field (config keys are kept as they are)."""
    return FIELD_FLAGS.get(field, field)


# --- LLMDeployment YAML ------------------------------------------------------------------------


def _spec_of(path: str) -> Mapping[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"-f: cannot read {path} ({exc.strerror}); fix: check the path") from None
    except yaml.YAMLError as exc:
        raise CliError(f"-f: {path} is not valid YAML ({exc}); fix: correct the file") from None
    spec = doc.get("spec") if isinstance(doc, Mapping) else None
    if not isinstance(spec, Mapping):
        raise CliError("spec: missing; fix: give an LLMDeployment with a spec section")
    return spec


def _section(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise CliError(f"spec.{key}: must be a mapping; fix: see examples/")
    return value


def _deployment_model(spec: Mapping[str, Any]) -> ModelGeometry:
    model = _section(spec, "model")
    if isinstance(model.get("config"), Mapping):
        return model_from_config(model["config"], name=str(model.get("name") or "inline-config"))
    if model.get("name"):
        return find_model(str(model["name"]))
    raise CliError("spec.model: needs name or config; fix: set spec.model.name: Qwen/Qwen3-8B")


def _deployment_requests(spec: Mapping[str, Any]) -> list[PlanRequest]:
    model = _deployment_model(spec)
    engine, kv, placement = (_section(spec, k) for k in ("engine", "kvCache", "placement"))
    gpu_types = placement.get("gpuTypes") or []
    if not gpu_types:
        raise CliError("spec.placement.gpuTypes: empty; fix: list at least one GPU type")
    name = str(engine.get("name") or "vllm")
    if name not in ENGINES:
        raise CliError(f"spec.engine.name: unknown engine {name!r}; fix: use one of {ENGINES}")
    return [
        PlanRequest(
            model=model,
            gpu=find_gpu(str(gpu)),
            engine=name,
            engine_version=str(engine.get("version") or DEFAULT_ENGINE_VERSION[name]),
            tensor_parallel=int(placement.get("gpusPerReplica") or 1),
            max_model_len_tokens=int(spec.get("maxContextLength") or model.max_position_embeddings),
            kv_cache_dtype=str(kv.get("dtype") or "auto"),
            block_size_tokens=kv.get("blockSize"),
        )
        for gpu in gpu_types
    ]


def _deployment_profile(spec: Mapping[str, Any]) -> tuple[WorkloadProfile, SloTargets]:
    work, slo = _section(spec, "workload"), _section(spec, "slo")
    p95_in = int(work.get("p95InputTokens") or 2048)
    p95_out = int(work.get("p95OutputTokens") or 512)
    profile = WorkloadProfile(
        p50_input_tokens=int(work.get("p50InputTokens") or p95_in // 2),
        p95_input_tokens=p95_in,
        p50_output_tokens=int(work.get("p50OutputTokens") or p95_out // 2),
        p95_output_tokens=p95_out,
        peak_requests_per_s=work.get("peakRequestsPerSecond"),
    )
    return profile, SloTargets(slo.get("ttftP95Seconds"), slo.get("itlP95Seconds"))


def verdict_to_json(verdict: ConcurrencyVerdict) -> dict[str, Any]:
    return {
        "".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): val
        for k, val in asdict(verdict).items()
    }


def plan_deployment(path: str) -> list[tuple[CapacityPlan, ConcurrencyVerdict]]:
    spec = _spec_of(path)
    try:
        profile, slo = _deployment_profile(spec)
        rows = []
        for request in _deployment_requests(spec):
            plan = plan_capacity(request)
            rows.append((plan, estimate_safe_concurrency(plan, profile, slo)))
    except CapacityInputError as exc:
        raise CliError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise CliError(f"spec: {exc}; fix: use numbers where numbers are expected") from None
    return rows


TABLE_COLUMNS = (
    "GPU", "TP", "FITS", "KV GiB", "KV TOKENS", "CONC@MAX", "KV@P95", "SLO", "SAFE", "LIMIT",
    "REPLICAS", "$/H",
)  # fmt: skip


def _table_row(plan: CapacityPlan, verdict: ConcurrencyVerdict) -> list[str]:
    def show(value: object) -> str:
        return "-" if value is None else str(value)

    price = verdict.usd_per_hour_per_replica
    return [
        plan.request.gpu.id,
        str(plan.request.tensor_parallel),
        "yes" if plan.fits else "NO",
        f"{plan.available_kv_bytes / GIB:.2f}",
        f"{plan.kv_cache_tokens:,}",
        f"{plan.max_concurrency:.2f}",
        str(verdict.kv_bound_typical),
        show(verdict.slo_bound),
        str(verdict.safe_concurrency),
        verdict.limited_by,
        show(verdict.replicas_for_peak),
        "-" if price is None else f"{price:.2f}",
    ]


def format_table(rows: list[list[str]], header: tuple[str, ...]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def run_plan(args: argparse.Namespace) -> int:
    if args.file:
        results = plan_deployment(args.file)
        if (args.output or "table") == "json":
            out = [plan_to_json(p) | {"concurrency": verdict_to_json(v)} for p, v in results]
            print(json.dumps(out, indent=2))
        else:
            print(format_table([_table_row(p, v) for p, v in results], TABLE_COLUMNS))
            for plan, _ in results:
                if not plan.fits:
                    print(f"{plan.request.gpu.id}: {plan.reason}", file=sys.stderr)
        return 0
    plan = plan_capacity(plan_request_from_args(args))
    body = plan_to_json(plan)
    if (args.output or "json") == "json":
        print(json.dumps(body, indent=2))
    else:
        print(format_table([[k, json.dumps(val)] for k, val in body.items()], ("FIELD", "VALUE")))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan KV-cache capacity for one engine instance or an LLMDeployment",
        description="Plan the KV cache an engine will get: budget, blocks, tokens, concurrency.",
    )
    add_plan_arguments(parser)
    parser.add_argument("-f", "--file", metavar="FILE", help="an LLMDeployment YAML")
    parser.add_argument(
        "-o", "--output", choices=("json", "table"), help="default: json (table with -f)"
    )
    parser.set_defaults(func=run_plan)
