"""fp8 weights the engine cannot start with: the GPU's compute capability, and the peak of a
quantization the engine applies as it loads a 16-bit checkpoint.

Both are checked before any KV arithmetic, from the engines' sources:

- **Compute capability.** vLLM (`config/vllm.py`, 0.11.2) and SGLang (`model_loader/loader.py`,
  0.5.21) refuse a quantization whose `get_min_capability()` is above the device's. vLLM's
  `Fp8Config` asks 80 up to 0.13 and 75 from 0.14.0 (`layers/quantization/fp8.py` in the
  0.12.0 to 0.19.0 wheels); SGLang's asks 80 (0.4.10.post2, 0.5.9, 0.5.21). TGI checks nothing
  at start-up but its fp8 matmul needs the device: v2.0.0-v2.1.x run `torch._scaled_mm`
  (`Fp8Linear.forward`, utils/layers.py), which takes capability 8.9; from v2.2.0
  `get_fp8_linear` (layers/fp8.py) runs the Marlin fp8 kernel on capability 8.x and
  `_scaled_mm` from 9.0, so 8.0. A ROCm device reports its gfx target as the capability
  (gfx942: 94), so the check passes there; the plan checks NVIDIA devices whose capability
  the catalog states.
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

from kvscale.capacity.release import EngineVersion
from kvscale.capacity.types import GIB, PlanRequest

FP8 = "fp8"
# What an engine applies to any 16-bit checkpoint as it loads it (the others need a checkpoint
# quantized ahead of time: AWQ, GPTQ, mxfp4 ...).
ONLINE_QUANTIZATION_METHODS = frozenset({FP8})
VLLM_FP8_MIN_CAPABILITY = 80
VLLM_FP8_MIN_CAPABILITY_V014 = 75
VLLM_FP8_LOWER_CAPABILITY_SINCE = EngineVersion.parse("0.14.0")
SGLANG_FP8_MIN_CAPABILITY = 80
TGI_FP8_MIN_CAPABILITY = 89  # torch._scaled_mm
TGI_FP8_MIN_CAPABILITY_MARLIN = 80  # Marlin fp8 on 8.x
TGI_FP8_MARLIN_SINCE = EngineVersion.parse("2.2.0")
VLLM_LAYERWISE_ONLINE_QUANT_SINCE = EngineVersion.parse("0.16.0")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def fp8_min_capability(engine: str, version: EngineVersion) -> int | None:
    """The compute capability (major x 10 + minor) the engine's fp8 method needs; None: the
    plan knows no such check for this engine."""
    if engine == "vllm":
        if version >= VLLM_FP8_LOWER_CAPABILITY_SINCE:
            return VLLM_FP8_MIN_CAPABILITY_V014
        return VLLM_FP8_MIN_CAPABILITY
    if engine == "sglang":
        return SGLANG_FP8_MIN_CAPABILITY
    if engine == "tgi":
        if version >= TGI_FP8_MARLIN_SINCE:
            return TGI_FP8_MIN_CAPABILITY_MARLIN
        return TGI_FP8_MIN_CAPABILITY
    return None


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


def _capability_refusal(request: PlanRequest) -> str:
    engine, version, gpu = request.engine, request.engine_version, request.gpu
    needed = fp8_min_capability(engine, version) if request.model.quantization == FP8 else None
    capability = None if gpu.rocm else device_capability(gpu.arch)
    if needed is None or capability is None or capability >= needed:
        return ""
    fixes = [f"a GPU type of capability {needed / 10:.1f} or more", "a 16-bit or int4 checkpoint"]
    if engine == "vllm" and capability >= VLLM_FP8_MIN_CAPABILITY_V014:
        fixes.append(f"vLLM >= {VLLM_FP8_LOWER_CAPABILITY_SINCE}")
    if engine == "tgi" and capability >= TGI_FP8_MIN_CAPABILITY_MARLIN:
        fixes.append(f"TGI >= {TGI_FP8_MARLIN_SINCE}")
    return (
        f"{engine} {version} runs fp8 weights from compute capability {needed / 10:.1f}; "
        f"{gpu.name} has {capability / 10:.1f}; fix: {', '.join(fixes)}"
    )


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
