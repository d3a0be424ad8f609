"""Quantized weights the engine cannot start with: the method missing from the release, the
GPU's compute capability, and the peak of a quantization the engine applies as it loads a
16-bit checkpoint.

All are checked before any KV arithmetic, from the engines' sources:

- **The method and the compute capability** (`METHOD_SUPPORT`). vLLM (`config/vllm.py`,
  0.11.2) and SGLang (`model_loader/loader.py`, 0.5.21) refuse a quantization whose
  `get_min_capability()` is above the device's, and vLLM a method its release does not list
  (`QuantizationMethods`). For a checkpoint vLLM picks the Marlin kernel when the device runs
  it and falls back to the method's own otherwise (`override_quantization_method`), so the
  device needs the smaller of the two: read in the 0.9.2, 0.10.0, 0.10.1, 0.10.1.1, 0.11.2,
  0.13.0, 0.14.0, 0.16.0, 0.19.0, 0.24.0, 0.27.0, 0.28.0 and 0.33.0 wheels
  (`layers/quantization/*.py`; `auto_awq.py` and `auto_gptq.py` from 0.24.0). SGLang's
  `Fp8Config` asks 80 (0.4.10.post2, 0.5.9, 0.5.21; its other methods moved between those
  releases and are not checked). TGI checks nothing at start-up but its fp8 matmul needs the
  device: v2.0.0-v2.1.x run `torch._scaled_mm` (`Fp8Linear.forward`, utils/layers.py), which
  takes capability 8.9; from v2.2.0 `get_fp8_linear` (layers/fp8.py) runs the Marlin fp8
  kernel on capability 8.x and `_scaled_mm` from 9.0, so 8.0. A ROCm device reports its gfx
  target as the capability (gfx942: 94), so the check passes there; the plan checks NVIDIA
  devices whose capability the catalog states.
- **Where an online quantization holds the 16-bit weights.** vLLM before 0.16.0 creates every
  linear layer's weight in the checkpoint's dtype when it builds the model and quantizes it
  once loaded (`Fp8LinearMethod.create_weights`, 0.11.2; `Fp8OnlineLinearMethod`, 0.15.0:
  `torch.empty(..., dtype=params_dtype)`): the whole 16-bit checkpoint is on the GPU at once.
  From 0.16.0 the weights are created on the meta device and materialised layer by layer
  (`device="meta"`, `model_loader/reload/layerwise.py`). SGLang creates them in the checkpoint's
  dtype too (`weight_dtype = params_dtype` when the checkpoint is not fp8; 0.4.10.post2 to
  0.5.21). TGI quantizes each tensor as it loads it (`Fp8Weight.get_linear`, `fp8_quantize`).
  The load may use all the device's memory, not only the utilisation budget; what else holds
  memory then is the plan's non-torch charge (NCCL and runtime buffers) and the CUDA context,
  where that charge does not hold it already (`Budget.load_runtime_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity.release import EngineVersion, latest_since
from kvscale.capacity.types import GIB, PlanRequest

FP8 = "fp8"
# What an engine applies to any 16-bit checkpoint as it loads it (the others need a checkpoint
# quantized ahead of time: AWQ, GPTQ, mxfp4 ...).
ONLINE_QUANTIZATION_METHODS = frozenset({FP8})
VLLM_LAYERWISE_ONLINE_QUANT_SINCE = EngineVersion.parse("0.16.0")


@dataclass(frozen=True)
class MethodSupport:
    """From release `since` on (until the next row), the compute capability (major x 10 +
    minor) a quantization method needs; None: the release cannot load it."""

    since: EngineVersion
    min_capability: int | None

    def runs_on(self, capability: int) -> bool:
        """The release loads the method on a device of `capability`."""
        return self.min_capability is not None and self.min_capability <= capability


def _rows(*rows: tuple[str, int | None]) -> tuple[MethodSupport, ...]:
    return tuple(MethodSupport(EngineVersion.parse(since), cap) for since, cap in rows)


# engine -> method -> rows ascending by `since` (module docstring for the sources). vLLM:
# fp8 80, 75 from 0.14.0 (Fp8Config); awq 75 (AWQConfig; awq_marlin 80, 75 from 0.14.0); gptq
# 60 (GPTQConfig); mxfp4 from 0.10.1, 80 (Mxfp4Config, absent in 0.10.0); nvfp4 80, 75 from
# 0.14.0 (ModelOptNvFp4Config); bitsandbytes 70, gone from `QuantizationMethods` in 0.28.0.
# A method or engine not listed is not checked (compressed-tensors: each scheme its own).
METHOD_SUPPORT: dict[str, dict[str, tuple[MethodSupport, ...]]] = {
    "vllm": {
        FP8: _rows(("0", 80), ("0.14.0", 75)),
        "awq": _rows(("0", 75)),
        "gptq": _rows(("0", 60)),
        "mxfp4": _rows(("0", None), ("0.10.1", 80)),
        "nvfp4": _rows(("0", 80), ("0.14.0", 75)),
        "bnb-4bit": _rows(("0", 70), ("0.28.0", None)),
    },
    "sglang": {FP8: _rows(("0", 80))},
    "tgi": {FP8: _rows(("0", 89), ("2.2.0", 80))},  # torch._scaled_mm; Marlin fp8 on 8.x
}


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


# A device whose capability the plan does not check (ROCm, or not in the catalog) runs every
# method its release lists.
UNKNOWN_DEVICE_CAPABILITY = 1000


def method_support(engine: str, version: EngineVersion, method: str) -> MethodSupport | None:
    """The row of `METHOD_SUPPORT` for `method` on `engine` `version`; None: not checked."""
    return latest_since(METHOD_SUPPORT.get(engine, {}).get(method, ()), version)


def device_capability(arch: str) -> int | None:
    """ "8.9" -> 89; None for a gfx target or an unknown architecture."""
    major, _, minor = arch.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return int(major) * 10 + int(minor)


def holds_whole_checkpoint(engine: str, version: EngineVersion) -> bool:
    """An online quantization that holds the whole 16-bit checkpoint on the GPU before it
    quantizes (vLLM < 0.16.0, SGLang); TGI and vLLM >= 0.16.0 quantize layer by layer.
    TensorRT-LLM does not quantize at load: charged the whole checkpoint (the safe side)."""
    if engine == "vllm":
        return version < VLLM_LAYERWISE_ONLINE_QUANT_SINCE
    return engine != "tgi"


def load_peak_bytes(request: PlanRequest) -> int | None:
    """Per rank, the 16-bit weights an online quantization holds at once, or None when the
    engine holds no more than the quantized weights plus one layer."""
    online = request.online_quantization
    if online is None or not holds_whole_checkpoint(request.engine, request.engine_version):
        return None
    return online.checkpoint_weights_bytes // request.tensor_parallel


def _version_fix(engine: str, version: EngineVersion, method: str, capability: int) -> str:
    """The nearest other release of `engine` that loads `method` on a device of `capability`
    ("" when none does)."""
    runs = [row for row in METHOD_SUPPORT[engine][method] if row.runs_on(capability)]
    later = [row for row in runs if row.since > version]
    if later:
        return f"{engine} >= {later[0].since}"
    if runs:  # only earlier releases do: the method was dropped after them
        rows = METHOD_SUPPORT[engine][method]
        dropped = next(r.since for r in rows if r.since > runs[-1].since)
        return f"{engine} < {dropped}"
    return ""


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _capability_refusal(request: PlanRequest) -> str:
    engine, version, gpu = request.engine, request.engine_version, request.gpu
    method = request.model.quantization
    row = method_support(engine, version, method) if method is not None else None
    if row is None or method is None:  # not quantized, or a method the table does not check
        return ""
    capability = None if gpu.rocm else device_capability(gpu.arch)
    if row.min_capability is None:
        problem, fixes = f"{engine} {version} cannot load {method} checkpoints", []
    elif capability is None or capability >= row.min_capability:
        return ""
    else:
        needed = f"{row.min_capability / 10:.1f}"
        problem = (
            f"{engine} {version} runs {method} weights from compute capability {needed}; "
            f"{gpu.name} has {capability / 10:.1f}"
        )
        fixes = [f"a GPU type of capability {needed} or more"]
    device = capability if capability is not None else UNKNOWN_DEVICE_CAPABILITY
    if release := _version_fix(engine, version, method, device):
        fixes.append(release)
    runnable = [
        other
        for other in METHOD_SUPPORT[engine]
        if other != method
        and (alt := method_support(engine, version, other)) is not None
        and alt.runs_on(device)
    ]
    fixes.append(f"a {_either(['16-bit', *runnable])} checkpoint")
    return f"{problem}; fix: {'; or '.join(fixes)}"


def weights_refusal(request: PlanRequest, runtime_bytes: int, total_bytes: int) -> str:
    """Why the engine cannot start with these weights on this GPU ("" when it can);
    `runtime_bytes`: what else holds device memory while it loads (Budget.load_runtime_bytes)."""
    refusal = _capability_refusal(request)
    peak = load_peak_bytes(request)
    online = request.online_quantization
    if refusal or peak is None or online is None or peak + runtime_bytes <= total_bytes:
        return refusal
    ranks = -(-online.checkpoint_weights_bytes // max(1, total_bytes - runtime_bytes))
    later = (
        f"vLLM >= {VLLM_LAYERWISE_ONLINE_QUANT_SINCE} (quantizes layer by layer), "
        if request.engine == "vllm"
        else ""
    )
    return (
        f"{request.engine} {request.engine_version} quantizes to {online.method} after loading "
        f"the whole 16-bit checkpoint: {_gib(peak)} per GPU at TP {request.tensor_parallel} "
        f"plus {_gib(runtime_bytes)} of runtime memory exceeds the GPU's {_gib(total_bytes)}; "
        f"fix: --tensor-parallel-size {ranks} or more, {later}or a pre-quantized "
        f"{online.method} checkpoint"
    )
