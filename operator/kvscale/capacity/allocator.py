"""What PyTorch's caching allocator counts for the weights: whole blocks, not tensor sizes.

vLLM measures the weights it loaded with the allocator's `allocated_bytes` statistic ("Model
loading took": `get_current_memory_usage` → `max_memory_allocated` after `empty_cache`,
platforms/cuda.py of the 0.19.0 wheel; `DeviceMemoryProfiler` in 0.6.4's V0 too), and that
statistic adds the size of the *block* handed out, which is larger than the tensor when the
allocator keeps the rest of its segment in the block (c10/cuda/CUDACachingAllocator.cpp:
`alloc_found_block` adds `block->size`; `should_split`; the constants below are PyTorch's
kMinBlockSize, kSmallSize, kMinLargeAlloc and kRoundLarge):

- every request is rounded up to 512 bytes;
- a request of 10 MiB or more gets a segment of its own, rounded up to 2 MiB; the segment's
  tail is split off (free, uncounted) only when it is larger than 1 MiB, so a tail of 1 MiB or
  less stays in the block and counts;
- smaller requests are carved from 2 MiB and 20 MiB segments and split: only the 512-byte
  rounding counts.

So a 231 MiB down projection (Qwen2.5-72B at TP 2) counts 232 MiB, 80 MiB over 80 layers;
a 12.5 MiB one (phi-2's dense) counts 12.5. Nothing here is fitted: on the bench's logs the
loaded weights exceed the parameter bytes by what this predicts (Qwen2.5-72B TP 2 +0.079 GiB
logged, +0.078 predicted; Qwen2-7B +0.056 / +0.056; gemma-3-12b +0.047 / +0.047; Llama dims,
all multiples of 2 MiB, +0.000 / 0). docs/adr/0012-physical-non-kv-model.md §9.

`weights_padding_bytes` adds the tensors every rank holds whole at TP > 1 (the KV heads when
TP exceeds their number, the MoE routers) and the mxfp4 MoE kernel's layout (weights.py,
ADR 0012 §9-§10): together, what loading holds beyond the checkpoint's even share, which the
vLLM budget charges.

`blas_workspace_bytes` is the cuBLAS (hipBLAS) workspace PyTorch takes from this allocator on
the first matrix multiply and keeps: the profile run's first GEMM allocates it, so the
activation peak vLLM measures includes it (ADR 0012 §11).
"""

from __future__ import annotations

from kvscale.capacity.types import GpuSpec, ModelGeometry, WeightTensor
from kvscale.capacity.weights import QUANT_BITS, mxfp4_expert_tensors, mxfp4_padding_bytes

MIN_BLOCK_BYTES = 512
SMALL_SIZE_BYTES = 1024 * 1024
MIN_LARGE_ALLOC_BYTES = 10 * 1024 * 1024
ROUND_LARGE_BYTES = 2 * 1024 * 1024

# PyTorch's default cuBLAS workspace per (handle, stream), aten/src/ATen/cuda/CublasHandlePool.cpp
# `parseChosenWorkspaceSize`: CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8" (2 x 4096 KiB + 8 x 16 KiB)
# on CUDA, ":4096:8" (32 MiB) from compute capability 9 (Hopper; later PyTorch releases add 10,
# 11 and 12, Blackwell, which the planner charges 32 MiB on every release: the safe side); on
# ROCm 32 MiB, 128 MiB on gfx942/gfx950 (MI300/MI325/MI355). Handed out by
# `getNewWorkspace` through the caching allocator, so `allocated_bytes` counts it.
CUBLAS_WORKSPACE_BYTES = (2 * 4096 + 8 * 16) * 1024
CUBLAS_WORKSPACE_LARGE_BYTES = 8 * 4096 * 1024
CUBLAS_WORKSPACE_LARGE_SINCE_MAJOR = 9
HIPBLAS_WORKSPACE_BYTES = 32 * 1024 * 1024
HIPBLAS_WORKSPACE_LARGE_BYTES = 128 * 1024 * 1024
HIPBLAS_WORKSPACE_LARGE_ARCHS = ("gfx942", "gfx950")


def allocated_block_bytes(size_bytes: int) -> int:
    """What `allocated_bytes` grows by when a tensor of `size_bytes` gets a fresh block."""
    rounded = max(MIN_BLOCK_BYTES, -(-size_bytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)
    if rounded < MIN_LARGE_ALLOC_BYTES:
        return rounded
    segment = -(-rounded // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES
    return segment if segment - rounded <= SMALL_SIZE_BYTES else rounded


def _element_bits(model: ModelGeometry, tensor: WeightTensor) -> int | None:
    """Bits of one stored element: the model dtype, or a whole-byte quantized width (fp8);
    None for packed formats whose tensors this module does not lay out (AWQ, GPTQ, nvfp4, the
    experts of an mxfp4 checkpoint, whose other tensors stay in the model dtype)."""
    method = model.quantization
    if not tensor.quantized or method is None or (method == "mxfp4" and not tensor.routed_experts):
        return model.dtype_bytes * 8
    bits = QUANT_BITS.get(method)  # mxfp4's 4.25 is no whole byte: its experts are packed
    return int(bits) if bits is not None and bits % 8 == 0 else None


def _tensor_bytes(model: ModelGeometry, tp: int) -> list[tuple[int, int]]:
    """(count, bytes per rank at TP `tp`) of each laid-out weight tensor whose elements have a
    whole-byte width (packed formats are not laid out)."""
    found = []
    for tensor in model.weight_tensors:
        bits = _element_bits(model, tensor)
        if bits is not None:
            found.append((tensor.count, tensor.elements_per_rank(tp) * bits // 8))
    return found


def _tail_bytes(size_bytes: int) -> int:
    return allocated_block_bytes(size_bytes) - size_bytes


def weights_rounding_bytes(model: ModelGeometry, tp: int) -> int:
    """Per rank: what the allocator counts for the model's weight tensors beyond their bytes."""
    return sum(count * _tail_bytes(size) for count, size in _tensor_bytes(model, tp))


def replicated_bytes(model: ModelGeometry, tp: int) -> int:
    """Per rank at TP `tp`: what the laid-out tensors hold beyond an even share of themselves
    (the plan spreads the checkpoint evenly over the ranks): the KV heads each rank holds
    whole when TP exceeds their number (`QKVParallelLinear`: one head per rank) and the MoE
    routers every rank holds whole (`ReplicatedLinear`, gpt-oss's `torch.nn.Linear` router)."""
    if tp == 1:
        return 0
    pairs = zip(_tensor_bytes(model, tp), _tensor_bytes(model, 1), strict=True)
    total = sum(count * (per_rank - whole // tp) for (count, per_rank), (_, whole) in pairs)
    return max(total, 0)  # a width TP does not divide rounds each rank's share down


def mxfp4_rounding_bytes(model: ModelGeometry, tp: int, gpu: GpuSpec) -> int:
    """Per rank: the block tails of an mxfp4 checkpoint's expert tensors in `gpu`'s largest
    layout (weights.mxfp4_expert_tensors; gpt-oss-120b's w13 scales at TP 1 are 69 MiB each,
    counted 70)."""
    return sum(
        kind.layers * sum(_tail_bytes(size) for size in kind.padded.sizes)
        for kind in mxfp4_expert_tensors(model, tp, gpu)
    )


def layout_bytes(model: ModelGeometry, tp: int, gpu: GpuSpec) -> int:
    """Per rank: what any engine holds beyond the checkpoint's even share, block tails aside —
    the tensors every rank holds whole and the mxfp4 MoE kernel's layout."""
    return replicated_bytes(model, tp) + mxfp4_padding_bytes(model, tp, gpu)


def weights_padding_bytes(model: ModelGeometry, tp: int, gpu: GpuSpec) -> int:
    """Per rank: what vLLM's "Model loading took" holds beyond the checkpoint's even share —
    the allocator's block tails, the tensors every rank holds whole and the mxfp4 MoE
    kernel's layout (weights.py)."""
    tails = weights_rounding_bytes(model, tp) + mxfp4_rounding_bytes(model, tp, gpu)
    return tails + layout_bytes(model, tp, gpu)


def blas_workspace_bytes(gpu: GpuSpec) -> int:
    """PyTorch's default BLAS workspace on `gpu`, held from the first GEMM of the profile run.
    An unknown architecture is charged its vendor's larger figure."""
    if gpu.rocm:
        large = not gpu.arch or gpu.arch.startswith(HIPBLAS_WORKSPACE_LARGE_ARCHS)
        return HIPBLAS_WORKSPACE_LARGE_BYTES if large else HIPBLAS_WORKSPACE_BYTES
    major = gpu.arch.split(".", 1)[0]
    if not major.isdigit() or int(major) >= CUBLAS_WORKSPACE_LARGE_SINCE_MAJOR:
        return CUBLAS_WORKSPACE_LARGE_BYTES
    return CUBLAS_WORKSPACE_BYTES
