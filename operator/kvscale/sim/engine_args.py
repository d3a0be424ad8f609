"""Read the vLLM / SGLang command line the operator rendered, as the real engine would.

The simulated server plans its KV pool from exactly these flags (through the capacity planner),
so a wrong `--max-model-len`, `--gpu-memory-utilization` or `--max-num-seqs` shows up as wrong
behaviour (fewer blocks, earlier preemption, queueing) instead of being ignored; a
`--quantization` that quantizes a 16-bit checkpoint as it loads gives it fp8 weights, as the
engine would (`api.quantization.started_with`, the flag row's `choices`). Flags the
simulator has no use for are accepted and listed in `ignored`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvscale.api.quantization import started_with
from kvscale.capacity import (
    EngineVersion,
    ModelGeometry,
    PlanRequest,
    find_gpu,
    find_model,
    model_from_config,
)

DEFAULT_SIM_GPU = "h100_sxm_80gb"
_PROGRAM_WORDS = frozenset({"vllm", "serve", "python", "python3", "-m", "sglang.launch_server"})


class EngineArgsError(ValueError):
    """A flag the engine would refuse; the message names it."""


@dataclass(frozen=True)
class EngineArgs:
    """The parsed flags that shape one engine instance."""

    engine: str
    version: str
    model: str
    served_model_name: str
    request: PlanRequest
    ignored: tuple[str, ...] = ()
    port: int | None = None  # the engine's own --port, if it was given one


def _vllm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("model_pos", nargs="?")
    p.add_argument("--model")
    p.add_argument("--served-model-name")
    p.add_argument("--max-model-len", dest="max_model_len_tokens", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--kv-cache-memory-bytes", type=int)
    p.add_argument("--block-size", dest="block_size_tokens", type=int)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel", type=int, default=1)
    p.add_argument("--quantization", "-q")
    p.add_argument("--enable-prefix-caching", action="store_true", default=True)
    p.add_argument("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false")
    p.add_argument("--port", type=int)
    p.add_argument("--host")
    return p


def _sglang_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--model-path", "--model", dest="model")
    p.add_argument("--served-model-name")
    p.add_argument("--context-length", dest="max_model_len_tokens", type=int)
    p.add_argument("--max-running-requests", dest="max_num_seqs", type=int)
    p.add_argument("--chunked-prefill-size", dest="max_num_batched_tokens", type=int)
    p.add_argument("--mem-fraction-static", dest="gpu_memory_utilization", type=float)
    p.add_argument("--page-size", dest="block_size_tokens", type=int)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument(
        "--tp-size", "--tensor-parallel-size", dest="tensor_parallel", type=int, default=1
    )
    p.add_argument("--disable-radix-cache", dest="enable_prefix_caching", action="store_false")
    p.add_argument("--quantization")
    p.add_argument("--enable-metrics", action="store_true")
    p.add_argument("--port", type=int)
    p.add_argument("--host")
    return p


# engine -> its flag parser; every parser stores PlanRequest field names as `dest`
_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "vllm": _vllm_parser,
    "sglang": _sglang_parser,
}
_PLAN_FIELDS: tuple[str, ...] = (
    "tensor_parallel", "gpu_memory_utilization", "kv_cache_dtype", "block_size_tokens",
    "max_num_batched_tokens", "max_num_seqs", "enable_prefix_caching",
)  # fmt: skip


def _strip_program(argv: Sequence[str]) -> list[str]:
    """Drop a leading `vllm serve` / `python3 -m sglang.launch_server` if the command is there."""
    out = list(argv)
    while out and out[0] in _PROGRAM_WORDS:
        out.pop(0)
    return out


def parse_engine_args(
    engine: str,
    version: str,
    argv: Sequence[str],
    gpu: str | None,
    model_config: Path | None = None,
) -> EngineArgs:
    """The PlanRequest one engine started with `argv` corresponds to.

    The model's geometry comes from the catalog by id, or from `model_config` (an HF
    config.json) for a model the catalog does not hold.
    """
    gpu_spec = find_gpu(gpu or DEFAULT_SIM_GPU)

    def geometry(model_id: str) -> ModelGeometry:
        if model_config is None:
            return find_model(model_id)
        try:
            config = json.loads(model_config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineArgsError(f"--sim-model-config: cannot read {model_config}: {exc}") from exc
        return model_from_config(config, name=model_id)

    make_parser = _PARSERS.get(engine)
    if make_parser is None:
        raise EngineArgsError(f"--engine: {engine!r} is not simulated; use vllm or sglang")
    ns, unknown = make_parser().parse_known_args(_strip_program(argv))
    model_id = str(ns.model or getattr(ns, "model_pos", None) or "")
    _require(model_id, "--model (vLLM: or `vllm serve MODEL`; SGLang: --model-path)")
    model, online = started_with(geometry(model_id), engine, version, ns.quantization)
    request = PlanRequest(
        model=model,
        gpu=gpu_spec,
        engine=engine,
        engine_version=EngineVersion.parse(version),
        max_model_len_tokens=ns.max_model_len_tokens or model.max_position_embeddings,
        kv_cache_memory_bytes=getattr(ns, "kv_cache_memory_bytes", None),
        online_quantization=online,
        **{name: getattr(ns, name) for name in _PLAN_FIELDS},
    )
    served = str(ns.served_model_name or model_id)
    return EngineArgs(engine, version, model_id, served, request, tuple(unknown), ns.port)


def _require(value: object, flag: str) -> None:
    if not value:
        raise EngineArgsError(f"{flag}: missing; the engine needs a model to serve")
