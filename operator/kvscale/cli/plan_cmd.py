"""`kvscale plan`: plan one engine instance from flags, or an LLMDeployment across GPU types.

Every bad input becomes one CliError line naming the field and the fix (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvscale.api.quantization import online_quantization_for
from kvscale.capacity import (
    GIB,
    CapacityPlan,
    EngineVersion,
    PlanRequest,
    SamplerPath,
    find_gpu,
    find_model,
    model_from_config,
    plan_capacity,
    plan_to_json,
)
from kvscale.capacity.errors import InputError, field_key
from kvscale.capacity.types import ModelGeometry, OnlineQuantization
from kvscale.capacity.weights import DECLARED_QUANT_BITS, with_quantization
from kvscale.cli.common import CliError
from kvscale.engines.defaults import DEFAULT_ENGINE_VERSION

if TYPE_CHECKING:
    from kvscale.api.status import GpuPlanStatus
    from kvscale.api.validation import DocumentResult

ENGINES = ("vllm", "sglang", "tgi", "trtllm")
KV_POOL_CHOICES = ("profiled", "pinned")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe one engine instance (shared with `kvscale flags`)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model-config", metavar="FILE", help="the model's HF config.json")
    model.add_argument("--model", metavar="HF_ID", help="a catalog model, e.g. Qwen/Qwen3-8B")
    model.add_argument("--weights-gib", metavar="W", help="checkpoint size in GiB (all ranks)")
    model.add_argument(
        "--quantization", choices=tuple(DECLARED_QUANT_BITS),
        help="the served checkpoint's weight quantization, when the model or config does not "
        "say it (weights re-estimated from the parameter count); fp8 on a 16-bit catalog "
        "--model the engine loads itself is applied by the engine as it loads (vLLM/SGLang "
        "--quantization, TGI --quantize), and the plan checks that load's peak",
    )  # fmt: skip
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
    engine.add_argument(
        "--sampler-path", choices=[p.value for p in SamplerPath], default="auto",
        help="vLLM top-k/top-p path of the profile run (default auto: the costliest the "
        "release can run, so the plan never over-predicts)",
    )  # fmt: skip
    engine.add_argument(
        "--kv-pool", choices=KV_POOL_CHOICES, default="profiled",
        help="pinned: render the planned KV bytes as --kv-cache-memory-bytes (vLLM >= 0.10.2)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-unfit",
        action="store_true",
        help="exit 0 even when one request at --max-model-len does not fit (default: exit 2)",
    )


def check_fits(plan: CapacityPlan, args: argparse.Namespace) -> None:
    """A plan that does not fit is an error (exit 2, the reason and fix) unless --allow-unfit:
    an engine started with it would refuse to start or preempt every long request."""
    if not plan.fits and not args.allow_unfit:
        raise CliError(f"does not fit: {plan.reason} (or pass --allow-unfit to print it anyway)")


MAX_GIB = 2**20  # a GiB figure above 1 PiB is a typo (and `inf` or `nan` is never a size)


def _number(value: str | None, field: str, kind: type[int] | type[float]) -> Any:
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise CliError(f"{field}: {value!r} is not a number; fix: pass e.g. 8192") from None
    if not math.isfinite(number):
        raise CliError(f"{field}: {value!r} is not a finite number; fix: pass e.g. 0.9")
    return number


def _gib_bytes(value: str | None, field: str) -> int | None:
    """A size given in GiB, as bytes; within (0, MAX_GIB]."""
    gib = _number(value, field, float)
    if gib is None:
        return None
    if not 0 < gib <= MAX_GIB:
        raise CliError(f"{field}: {value} GiB is outside (0, {MAX_GIB}]; fix: pass the size in GiB")
    return int(gib * GIB)


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


def _base_model(args: argparse.Namespace, weights_bytes: int | None) -> ModelGeometry:
    """The model as its config or the catalog describes it, before `--quantization`."""
    if args.model_config:
        config = _load_json(args.model_config)
        name = args.model or str(config.get("_name_or_path") or Path(args.model_config).stem)
        model = model_from_config(config, name=name, weights_bytes=weights_bytes)
    elif args.model:
        model = find_model(args.model)
    else:
        raise CliError("--model: missing; fix: pass --model HF_ID or --model-config config.json")
    return model


def _online_quantization(
    args: argparse.Namespace, base: ModelGeometry, release: str
) -> OnlineQuantization | None:
    """`--quantization fp8` on a 16-bit catalog `--model` the engine loads itself (no other
    `--model-ref`): the engine quantizes as it loads, as a managed LLMDeployment's would."""
    model_ref = getattr(args, "model_ref", None)  # `kvscale flags` only
    return online_quantization_for(
        args.quantization,
        base,
        args.engine,
        release,
        loads_base_checkpoint=bool(args.model)
        and not args.model_config
        and model_ref in (None, args.model),
    )


def _build_request(args: argparse.Namespace) -> PlanRequest:
    weights = _gib_bytes(args.weights_gib, "--weights-gib")
    base = _base_model(args, weights)
    model = with_quantization(base, args.quantization) if args.quantization else base
    if not args.gpu:
        raise CliError("--gpu: missing; fix: pass --gpu NAME (e.g. H100, NVIDIA-L40S)")
    gpu = find_gpu(args.gpu)
    max_len = _number(args.max_model_len, "--max-model-len", int)
    util = _number(args.gpu_memory_utilization, "--gpu-memory-utilization", float)
    if util is not None and not 0 < util <= 1:
        raise CliError(f"--gpu-memory-utilization: {util} is outside (0, 1]; fix: use e.g. 0.9")
    release = args.engine_version or DEFAULT_ENGINE_VERSION[args.engine]
    return PlanRequest(
        model=model,
        gpu=gpu,
        engine=args.engine,
        engine_version=EngineVersion.parse(release),
        tensor_parallel=_number(args.tensor_parallel, "--tensor-parallel", int),
        max_model_len_tokens=max_len if max_len is not None else model.max_position_embeddings,
        gpu_memory_utilization=util,
        gpu_memory_bytes=_gib_bytes(args.gpu_memory_gib, "--gpu-memory-gib"),
        kv_cache_dtype=args.kv_cache_dtype,
        block_size_tokens=_number(args.block_size, "--block-size", int),
        max_num_batched_tokens=_number(
            args.max_num_batched_tokens, "--max-num-batched-tokens", int
        ),
        max_num_seqs=_number(args.max_num_seqs, "--max-num-seqs", int),
        kv_cache_memory_bytes=_number(args.kv_cache_memory_bytes, "--kv-cache-memory-bytes", int),
        weights_bytes=weights,
        sampler_path=SamplerPath(args.sampler_path),
        pin_kv_pool=args.kv_pool == "pinned",
        online_quantization=_online_quantization(args, base, release),
    )


def plan_request_from_args(args: argparse.Namespace) -> PlanRequest:
    """A validated PlanRequest from `add_plan_arguments` flags; CliError on bad input."""
    try:
        request = _build_request(args)
        plan_capacity(request)  # validates geometry x parallelism x lengths
    except InputError as exc:
        raise CliError(f"{flag_of(exc.field)}: {exc.problem}; fix: {exc.fix}") from None
    return request


# Planner field names (any spelling: `field_key`) -> the flag the user typed.
FIELD_FLAGS = {
    field_key(name): flag
    for flag, names in {
        "--tensor-parallel": ("tensor_parallel",),
        "--max-model-len": ("max_model_len", "max_model_len_tokens"),
        "--block-size": ("block_size", "block_size_tokens"),
        "--max-num-batched-tokens": ("max_num_batched_tokens",),
        "--max-num-seqs": ("max_num_seqs",),
        "--kv-cache-memory-bytes": ("kv_cache_memory_bytes",),
        "--gpu-memory-gib": ("gpu_memory_gib", "gpu_memory_bytes"),
        "--gpu-memory-utilization": ("gpu_memory_utilization",),
        "--weights-gib": ("weights_gib", "weights", "weights_bytes"),
        "--kv-cache-dtype": ("kv_cache_dtype",),
        "--engine-version": ("engine_version",),
        "--sampler-path": ("sampler_path",),
        "--gpu": ("gpu",),
        "--model": ("model",),
    }.items()
    for name in names
}


def flag_of(field: str) -> str:
    """The flag the user typed for a planner field (config keys are kept as they are)."""
    return FIELD_FLAGS.get(field_key(field), field)


# --- LLMDeployment YAML ------------------------------------------------------------------------


def plan_deployment_file(path: str) -> list[DocumentResult]:
    """Plan every LLMDeployment in `path` through the same code as `kvscale validate`."""
    from kvscale.api.validation import ManifestError, validate_text

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"-f: cannot read {path} ({exc.strerror}); fix: check the path") from None
    try:
        results = validate_text(text)
    except ManifestError as exc:
        raise CliError(f"{path}: {exc}") from None
    for result in results:
        if not result.ok:
            notes = "".join(f"; note: {note}" for note in result.notes)
            raise CliError(f"{path}: {result.name}: {result.problems[0]}{notes}")
    return results


TABLE_COLUMNS = (
    "GPU", "TP", "FITS", "KV GiB", "KV TOKENS", "CONC@MAX", "SAFE", "LIMIT", "REPLICAS", "$/H",
)  # fmt: skip


def _table_row(status: GpuPlanStatus, plan: CapacityPlan, selected: bool) -> list[str]:
    price = status.usd_per_hour
    return [
        ("*" if selected else " ") + status.gpu_type,
        str(plan.request.tensor_parallel),
        "yes" if status.fits else "NO",
        f"{plan.available_kv_bytes / GIB:.2f}",
        f"{status.kv_cache_tokens:,}",
        f"{status.max_concurrency:.2f}",
        f"{status.safe_concurrency:g}",
        status.limited_by,
        str(status.replicas_for_peak),
        "-" if price is None else f"{price:.2f}",
    ]


def format_table(rows: list[list[str]], header: tuple[str, ...]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _print_deployments(results: list[DocumentResult], output: str) -> None:
    documents: list[dict[str, Any]] = []
    for result in results:
        plan = result.plan
        if plan is None:
            continue
        pairs = list(zip(plan.plans, plan.capacity_plans, strict=True))
        if output == "json":
            documents.append(
                {
                    "name": result.name,
                    "selectedGpuType": plan.selected_gpu_type,
                    "selectionReason": plan.selection_reason,
                    "warnings": list(plan.warnings),
                    "gpuTypes": [
                        s.model_dump(by_alias=True) | {"plan": plan_to_json(c)} for s, c in pairs
                    ],
                }
            )
            continue
        selected = plan.selected_gpu_type
        rows = [_table_row(s, c, s.gpu_type == selected) for s, c in pairs]
        print(f"{result.name}:")
        print(format_table(rows, TABLE_COLUMNS))
        print(f"selected {plan.selection_reason}")
        for warning in plan.warnings:
            print(f"warning: {warning}")
        for status in plan.plans:
            for warning in status.warnings:
                print(f"warning: {status.gpu_type}: {warning}")
            if not status.fits:
                print(f"{status.gpu_type}: {status.reason}", file=sys.stderr)
    if output == "json":
        print(json.dumps(documents, indent=2))


def run_plan(args: argparse.Namespace) -> int:
    if args.file:
        _print_deployments(plan_deployment_file(args.file), args.output or "table")
        return 0
    plan = plan_capacity(plan_request_from_args(args))
    body = plan_to_json(plan)
    if (args.output or "json") == "json":
        print(json.dumps(body, indent=2))
    else:
        print(format_table([[k, json.dumps(val)] for k, val in body.items()], ("FIELD", "VALUE")))
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    check_fits(plan, args)  # after printing: the plan (fits: false, reason) is the report
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
