"""Weight bytes: parameter estimates from the geometry and quantized checkpoint widths.

Used only when neither the user (`--weights-gib`) nor the catalog gives the checkpoint size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kvscale.capacity.configkeys import Config, get_key, moe_dims, optional_int, require_int
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.nonkv import padded_widths
from kvscale.capacity.types import GpuSpec, LayerKind, ModelGeometry, TensorSplit, WeightTensor

NON_GATED_MLP_TYPES = ("falcon", "gpt2", "opt", "phi", "gpt_bigcode", "starcoder2")
# Llama 4: every MoE layer also runs one shared expert of `intermediate_size`, and the dense
# (non-MoE) layers use `intermediate_size_mlp` (vLLM 0.19.0 model_executor/models/llama4.py,
# Llama4MoE.shared_expert and Llama4DecoderLayer); the config has no n_shared_experts key.
ONE_SHARED_EXPERT_TYPES = ("llama4", "llama4_text")
# configs that omit tie_word_embeddings take their class default: True for the Gemma family
# (transformers 4.57.1 models/gemma*/configuration_gemma*.py), False for most others
TIED_BY_DEFAULT_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text")


def _mlp_matrices(cfg: Config) -> int:
    """3 for gated MLPs (SwiGLU/GeGLU), 2 for plain up/down MLPs."""
    act = str(get_key(cfg, "mlp_hidden_act", "hidden_act") or "")
    return 2 if act == "relu2" or cfg.get("model_type") in NON_GATED_MLP_TYPES else 3


def _mamba_proj_params(cfg: Config, hidden: int) -> int:
    """In/out projections of one Mamba layer (state sizes from the Mamba2/Mamba1 keys)."""
    heads = optional_int(cfg, "mamba_num_heads", "mamba_n_heads")
    head_dim = optional_int(cfg, "mamba_head_dim", "mamba_d_head")
    state = optional_int(cfg, "ssm_state_size", "mamba_d_state") or 16
    groups = optional_int(cfg, "n_groups", "mamba_n_groups") or 1
    inner = heads * head_dim if heads and head_dim else 2 * hidden
    return hidden * (2 * inner + 2 * groups * state + (heads or 0)) + inner * hidden


@dataclass(frozen=True)
class ParamEstimate:
    total: int
    active: int  # touched per token (MoE: top-k experts)
    embed: int  # embeddings + untied lm_head
    experts: int  # routed-expert weights (what mxfp4 checkpoints quantize)
    vision: int = 0  # multimodal vision tower + projector (kept in the model dtype)


@dataclass(frozen=True)
class _DecoderLayout:
    """Where a decoder's weights sit, from its config: the attention mixers, the dense and MoE
    MLP layers and their widths, and whether the lm_head shares the embeddings."""

    hidden: int
    heads: int
    vocab: int
    matrices: int  # MLP matrices: 3 gated (gate, up, down), 2 plain (up, down)
    attention_layers: int
    dense_layers: int
    dense_inter: int
    moe_layers: int
    experts: int
    top_k: int
    moe_inter: int
    shared: int  # shared experts, run as one MLP of shared x moe_inter
    tied: bool


def _decoder_layout(cfg: Config, kinds: tuple[LayerKind, ...]) -> _DecoderLayout:
    hidden = require_int(cfg, "hidden_size", "n_embd", "d_model")
    inter = optional_int(cfg, "intermediate_size", "ffn_hidden_size") or 4 * hidden
    experts, per_token, expert_inter = moe_dims(cfg)
    shared = optional_int(cfg, "n_shared_experts") or 0
    if experts and not shared and cfg.get("model_type") in ONE_SHARED_EXPERT_TYPES:
        shared = 1
    attention_layers = len(kinds) - kinds.count(LayerKind.LINEAR)
    if isinstance(cfg.get("hybrid_override_pattern"), str):  # one block type per layer
        attention_layers -= kinds.count(LayerKind.NONE)
        mlp_layers = kinds.count(LayerKind.NONE)
    else:  # every layer has a mixer and an MLP
        mlp_layers = len(kinds)
    # Jamba / Llama 4 Maverick: only every `period`-th layer is MoE, the rest dense
    period = optional_int(cfg, "expert_layer_period", "interleave_moe_layer_step") or 1
    moe_layers = mlp_layers // period if experts else 0
    return _DecoderLayout(
        hidden=hidden,
        heads=require_int(cfg, "num_attention_heads", "n_head"),
        vocab=optional_int(cfg, "vocab_size") or 32000,
        matrices=_mlp_matrices(cfg),
        attention_layers=attention_layers,
        dense_layers=mlp_layers - moe_layers,
        dense_inter=optional_int(cfg, "intermediate_size_mlp") or inter,  # Llama 4
        moe_layers=moe_layers,
        experts=experts or 0,
        top_k=per_token or 1,
        moe_inter=expert_inter or inter,
        shared=shared,
        tied=_tied(cfg),
    )


def _tied(cfg: Config) -> bool:
    return bool(cfg.get("tie_word_embeddings", cfg.get("model_type") in TIED_BY_DEFAULT_TYPES))


# How close a parameter count must come to "estimate + one more embedding matrix" to be read
# as a checkpoint that stores a tied lm_head twice (a fraction of that matrix).
TIED_COPY_TOLERANCE = 0.01


def loaded_params(cfg: Config, est: ParamEstimate, params: int) -> int:
    """The parameters the engine holds for a checkpoint counted at `params`. A tied model's
    checkpoint may store the lm_head a second time (Qwen3-0.6B: 751.6M parameters in its
    safetensors, 596.0M in the model); vLLM loads that tensor once, the lm_head being the
    embedding (`tie_word_embeddings`; the loaders skip `lm_head.*`), so the copy is dropped
    when the count exceeds the estimate by one embedding matrix."""
    head = est.embed  # vocab x hidden when tied
    if _tied(cfg) and head and abs(params - est.total - head) <= TIED_COPY_TOLERANCE * head:
        return params - head
    return params


def estimate_params(
    cfg: Config, head_dim: int, kv_heads: int, kinds: Sequence[LayerKind] = ()
) -> ParamEstimate:
    """Parameters from the geometry; an estimate, not a count.

    Good to a few percent for dense, MoE and Mamba-hybrid decoders: it is only used when no
    checkpoint size or parameter count is known, and the planner warns when it is.
    """
    layers = require_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    kinds = tuple(kinds) or (LayerKind.FULL,) * layers
    d = _decoder_layout(cfg, kinds)
    attn = d.hidden * head_dim * (2 * d.heads + 2 * kv_heads)
    per_matrix = d.matrices * d.hidden
    mamba = kinds.count(LayerKind.LINEAR) * _mamba_proj_params(cfg, d.hidden)
    mixer = d.attention_layers * attn + mamba
    # each MoE layer's router (FusedMoE's gate: [experts, hidden] in the model dtype, run for
    # every token)
    router = d.moe_layers * d.experts * d.hidden
    moe_total = d.moe_layers * per_matrix * d.moe_inter * (d.experts + d.shared) + router
    moe_active = d.moe_layers * per_matrix * d.moe_inter * (d.top_k + d.shared) + router
    dense = d.dense_layers * per_matrix * d.dense_inter
    embed = d.vocab * d.hidden * (1 if d.tied else 2)
    return ParamEstimate(
        total=mixer + moe_total + dense + embed,
        active=mixer + moe_active + dense + embed,
        embed=embed,
        experts=per_matrix * d.moe_inter * d.experts * d.moe_layers,
    )


def weight_tensors(
    cfg: Config, head_dim: int, kv_heads: int, kinds: tuple[LayerKind, ...]
) -> tuple[WeightTensor, ...]:
    """The decoder's weight tensors as vLLM allocates them: embeddings (and an untied lm_head),
    the fused QKV and the output projection of each attention layer, the fused gate/up and
    the down projection of each MLP (fused-MoE: all experts of a layer in one w13 and one w2,
    and the layer's router). MLA and Mamba mixers, vision towers, norms and biases are left
    out, and the whole layout when the config does not give the MLP width."""
    if optional_int(cfg, "intermediate_size", "ffn_hidden_size") is None:
        return ()
    d = _decoder_layout(cfg, kinds)
    mla = kinds.count(LayerKind.MLA)
    q_rows, up = d.heads * head_dim, d.matrices - 1
    found = [
        WeightTensor(d.vocab, d.hidden, TensorSplit.VOCAB, 1 if d.tied else 2, quantized=False),
        WeightTensor(q_rows, d.hidden, TensorSplit.QKV, d.attention_layers - mla,
                     kv_heads=kv_heads, head_dim=head_dim),
        WeightTensor(d.hidden, q_rows, TensorSplit.COLS, d.attention_layers - mla),
        WeightTensor(up * d.dense_inter, d.hidden, TensorSplit.ROWS, d.dense_layers),
        WeightTensor(d.hidden, d.dense_inter, TensorSplit.COLS, d.dense_layers),
        WeightTensor(up * d.moe_inter, d.hidden, TensorSplit.ROWS, d.moe_layers, d.experts,
                     routed_experts=True),
        WeightTensor(d.hidden, d.moe_inter, TensorSplit.COLS, d.moe_layers, d.experts,
                     routed_experts=True),
        WeightTensor(up * d.shared * d.moe_inter, d.hidden, TensorSplit.ROWS,
                     d.moe_layers if d.shared else 0),
        WeightTensor(d.hidden, d.shared * d.moe_inter, TensorSplit.COLS,
                     d.moe_layers if d.shared else 0),
        # each MoE layer's router, whole on every rank and never quantized
        WeightTensor(d.experts, d.hidden, TensorSplit.REPLICATED, d.moe_layers,
                     quantized=False),
    ]  # fmt: skip
    return tuple(t for t in found if t.count > 0)


# --- weight bytes from quantization_config --------------------------------------------------

QUANT_BITS: Mapping[str, float] = {
    # effective bits per quantized weight, block scales included
    "fp8": 8.0,
    "fbgemm_fp8": 8.0,
    "mxfp4": 4.25,  # 32-element blocks with one e8m0 scale
    "nvfp4": 4.5,  # 16-element blocks with one fp8 scale
    "modelopt_fp4": 4.5,
}
GROUP_SCALE_BITS = 20.0  # AWQ/GPTQ: fp16 scale + packed zero point per group


def _quant_number(key: str, value: Any) -> float:
    """A quantization_config number (bits, group size; -1 = per channel): finite, |x| ≤ 2**20."""
    if value is None:
        return 128.0  # the AWQ/GPTQ default group size
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -(2**20) <= value <= 2**20
    ):
        raise CapacityInputError(
            f"config.quantization_config.{key}",
            f"must be a number within ±{2**20}, got {repr(value)[:40]}",
            "copy the value from the checkpoint's config.json",
        )
    return float(value)


def quantized_weight_bits(qcfg: Mapping[str, Any] | None) -> tuple[str | None, float | None]:
    """(method, effective bits per quantized weight) or (None, None) for an unquantized model."""
    if not isinstance(qcfg, Mapping):
        return None, None
    method = str(qcfg.get("quant_method", "")).lower() or None
    if method is None:
        return None, None
    if method in QUANT_BITS:
        return method, QUANT_BITS[method]
    bits = qcfg.get("bits") or qcfg.get("w_bit") or qcfg.get("weight_bits")
    if method in ("awq", "gptq", "marlin", "awq_marlin", "gptq_marlin") or bits:
        nbits = _quant_number("bits", bits or 4)
        group = _quant_number("group_size", qcfg.get("group_size") or qcfg.get("q_group_size"))
        group = group if group > 0 else 4096.0  # per-channel
        return method, nbits + GROUP_SCALE_BITS / group
    if method == "bitsandbytes":
        four = bool(qcfg.get("load_in_4bit"))
        return "bnb-4bit" if four else "bnb-8bit", 4.13 if four else 8.0
    if method == "compressed-tensors":
        for group_cfg in (qcfg.get("config_groups") or {}).values():
            weights = group_cfg.get("weights") if isinstance(group_cfg, Mapping) else None
            if isinstance(weights, Mapping) and weights.get("num_bits"):
                return method, _quant_number("config_groups.weights.num_bits", weights["num_bits"])
        return method, 8.0
    raise CapacityInputError(
        "config.quantization_config.quant_method",
        f"unknown quantization {method!r}",
        "give the checkpoint size with --weights-gib",
    )


MXFP4_BITS = 4.25  # 4-bit values and one uint8 scale per 32 (MXFP4_BLOCK)
MXFP4_BLOCK = 32


def estimate_mxfp4_moe_bytes(est: ParamEstimate, dtype_bytes: int) -> int:
    """mxfp4 checkpoints quantize only the routed experts: the checkpoint's bytes, before the
    padding the engine's MoE kernel gives them when it loads them (`mxfp4_padding_bytes`)."""
    return int(est.experts * MXFP4_BITS / 8 + (est.total - est.experts) * dtype_bytes)


# vLLM pads the mxfp4 experts' per-rank intermediate size and hidden size for the MoE backend
# it selects (`mxfp4_round_up_hidden_size_and_intermediate_size`, fused_moe/oracle/mxfp4.py,
# 0.19.0): Marlin to 128 and 256 — the largest layout a GPU without FP4 tensor cores loads
# (Ampere's only backend; Hopper's without triton_kernels, whose own layout logs smaller:
# gpt-oss-120b 64.38 GiB at TP 1 and 32.98 at TP 2, against 65.97 logged and 34.35 planned
# with Marlin) —
# and the TRT-LLM kernels of Blackwell and the ROCm path to 256 and 256. The backend depends
# on what the image installs, so the plan takes the largest the GPU can run (the safe side).
MXFP4_PAD_MARLIN = (128, 256)  # (intermediate per rank, hidden)
MXFP4_PAD_FP4_OR_ROCM = (256, 256)


@dataclass(frozen=True)
class Mxfp4ExpertTensors:
    """Bytes of one MoE layer's mxfp4 expert tensors per rank, as vLLM allocates them
    (`Mxfp4MoEMethod.create_weights`, 0.11.2 and 0.19.0 wheels): w13 [E, 2I, H/2] and w2
    [E, H, I/2] uint8 values, their uint8 scales per 32, and the bf16 biases [E, 2I] and
    [E, H], which the method allocates whether or not the checkpoint has them."""

    w13: int
    w13_scales: int
    w13_bias: int
    w2: int
    w2_scales: int
    w2_bias: int

    @classmethod
    def of(cls, experts: int, inter: int, hidden: int) -> Mxfp4ExpertTensors:
        return cls(
            w13=experts * 2 * inter * hidden // 2,
            w13_scales=experts * 2 * inter * (hidden // MXFP4_BLOCK),
            w13_bias=experts * 2 * inter * 2,
            w2=experts * hidden * inter // 2,
            w2_scales=experts * hidden * (inter // MXFP4_BLOCK),
            w2_bias=experts * hidden * 2,
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.w13, self.w13_scales, self.w13_bias, self.w2, self.w2_scales, self.w2_bias)

    @property
    def checkpoint_share(self) -> int:
        """The values and scales: the checkpoint's 4.25 bits per expert weight."""
        return self.w13 + self.w13_scales + self.w2 + self.w2_scales


@dataclass(frozen=True)
class Mxfp4MoeLayers:
    """`layers` MoE layers of one shape: their expert tensors in a GPU's layout and unpadded."""

    layers: int
    padded: Mxfp4ExpertTensors
    unpadded: Mxfp4ExpertTensors


def mxfp4_pads(gpu: GpuSpec) -> tuple[int, int]:
    """The multiples `gpu`'s largest mxfp4 layout pads (expert width per rank, hidden) to."""
    return MXFP4_PAD_FP4_OR_ROCM if gpu.rocm or gpu.fp4_native else MXFP4_PAD_MARLIN


def mxfp4_expert_tensors(model: ModelGeometry, tp: int, gpu: GpuSpec) -> tuple[Mxfp4MoeLayers, ...]:
    """Per MoE layer shape of an mxfp4 checkpoint, its per-rank expert tensors in `gpu`'s
    largest layout; () for other checkpoints."""
    if model.quantization != "mxfp4":
        return ()
    found = []
    for w13 in model.weight_tensors:  # one w13 per MoE layer; its w2 has the same widths
        if w13.routed_experts and w13.split is TensorSplit.ROWS:
            inter, hidden = w13.rows // 2 // tp, w13.cols
            padded = padded_widths(inter, hidden, mxfp4_pads(gpu))
            layout = Mxfp4ExpertTensors.of(w13.batch, *padded)
            found.append(
                Mxfp4MoeLayers(w13.count, layout, Mxfp4ExpertTensors.of(w13.batch, inter, hidden))
            )
    return tuple(found)


def mxfp4_padding_bytes(model: ModelGeometry, tp: int, gpu: GpuSpec) -> int:
    """Per rank: what the mxfp4 MoE kernel's layout on `gpu` adds to the checkpoint's share of
    the experts (4.25 bits per weight): the padded widths and the bf16 biases (0 for other
    checkpoints)."""
    return sum(
        kind.layers * (sum(kind.padded.sizes) - kind.unpadded.checkpoint_share)
        for kind in mxfp4_expert_tensors(model, tp, gpu)
    )


def estimate_weights_bytes(
    params: int, embed_params: int, dtype_bytes: int, bits: float | None
) -> int:
    """Checkpoint bytes: quantized linear layers + embeddings/lm_head kept in the model dtype."""
    if bits is None:
        return params * dtype_bytes
    linear = max(params - embed_params, 0)
    return int(linear * bits / 8 + embed_params * dtype_bytes)


# A checkpoint's quantization declared by method name only (`spec.model.quantization`,
# `kvscale plan --quantization`): the quantization_config it stands for, read by
# `quantized_weight_bits` like a checkpoint's own. AWQ/GPTQ get their 4-bit, group-128 default;
# compressed-tensors 8 bits, the larger of its common schemes (W8A8, FP8-dynamic) and so the
# safe side for a W4A16 checkpoint.
_DECLARED_CONFIGS: Mapping[str, Mapping[str, Any]] = {
    "fp8": {"quant_method": "fp8"},
    "awq": {"quant_method": "awq"},
    "gptq": {"quant_method": "gptq"},
    "mxfp4": {"quant_method": "mxfp4"},
    "nvfp4": {"quant_method": "nvfp4"},
    "bnb-4bit": {"quant_method": "bitsandbytes", "load_in_4bit": True},
    "compressed-tensors": {"quant_method": "compressed-tensors"},
}
# Effective bits per quantized weight of each declarable method (the CLI's choices).
DECLARED_QUANT_BITS: Mapping[str, float] = {
    method: bits
    for method, config in _DECLARED_CONFIGS.items()
    if (bits := quantized_weight_bits(config)[1]) is not None
}


def checkpoint_bytes(
    est: ParamEstimate, total: int, *, dtype_bytes: int, method: str | None, bits: float | None
) -> int:
    """Bytes of a checkpoint of `total` parameters quantized with `method` at `bits`: mxfp4 the
    routed experts only (when the estimate has them), any other method every parameter but
    the embeddings, an untied lm_head and a vision tower (`est.embed + est.vision`)."""
    if method == "mxfp4" and est.experts:
        return estimate_mxfp4_moe_bytes(est, dtype_bytes)
    return estimate_weights_bytes(total, est.embed + est.vision, dtype_bytes, bits)


def with_quantization(model: ModelGeometry, method: str) -> ModelGeometry:
    """`model` served from a checkpoint quantized with `method`: the weights re-estimated from
    the parameter count (linear layers at the method's bits; embeddings, an untied lm_head and
    a vision tower in the model dtype; mxfp4: the routed experts only). A model already
    quantized so, or without a parameter count, keeps its weights (relabelled)."""
    bits = DECLARED_QUANT_BITS.get(method)
    if method == model.quantization or model.params is None or bits is None:
        return replace(model, quantization=method)
    if method == "mxfp4" and not model.expert_params:
        return replace(model, quantization=method)  # nothing mxfp4 would shrink
    params = model.params
    est = ParamEstimate(params, params, model.kept_params or 0, model.expert_params or 0)
    weights = checkpoint_bytes(est, params, dtype_bytes=model.dtype_bytes, method=method, bits=bits)
    return replace(model, quantization=method, weights_bytes=weights)
