"""Vision tower + multimodal projector parameters of a `*ForConditionalGeneration` model.

vLLM builds and loads the vision encoder of a multimodal checkpoint (unless it is run
language-model-only), so its "Model loading took" includes it; a text-only estimate misses
it. Counted from `vision_config` only where the layout is known; an unknown layout counts 0
(the text-only estimate, as before).

Layouts follow vLLM 0.19.0, vllm/model_executor/models/: siglip.py (SigLIP, the gemma-3
tower), gemma3_mm.py (its projector), mllama4.py (the Llama 4 tower, pixel-shuffle adapter
and projector), pixtral.py (PixtralHFVisionModel) and mistral3.py (its projector). A key
absent from `vision_config` takes the transformers 4.57.1 default of that config class
(models/siglip/configuration_siglip.py, models/llama4/configuration_llama4.py,
models/pixtral/configuration_pixtral.py, models/mistral3/configuration_mistral3.py).

Vision weights stay in the model dtype: vLLM builds the Llama 4 tower and projector with
`quant_config=None`, and quantized gemma-3 / Mistral-3 checkpoints keep their towers in
bf16. A tensor-parallel engine shards the tower like the LM (`mm_encoder_tp_mode` defaults
to "weights"), so it is spread over the ranks with the rest of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kvscale.capacity.configkeys import Config, optional_int


def _int(cfg: Config, key: str, default: int) -> int:
    return optional_int(cfg, key) or default


def _flag(cfg: Config, key: str) -> bool:
    return cfg.get(key) is True


def _encoder_layer(hidden: int, inter: int, *, bias: bool, gated: bool, norm: int) -> int:
    """One pre-norm ViT block: q/k/v/o, the MLP and two norms of `norm` params per channel."""
    attn = 4 * hidden * hidden + (4 * hidden if bias else 0)
    mlp = (3 if gated else 2) * hidden * inter + ((inter + hidden) if bias else 0)
    return attn + mlp + 2 * norm * hidden


# --- towers (keyed by vision_config.model_type) --------------------------------------------


def _siglip_tower(vcfg: Config) -> int:
    """siglip.py: conv patch embedding with bias, learned positions, biased q/k/v/out and
    fc1/fc2, two LayerNorms per layer, post-LayerNorm (all layers are used)."""
    hidden = _int(vcfg, "hidden_size", 768)
    inter = _int(vcfg, "intermediate_size", 3072)
    layers = _int(vcfg, "num_hidden_layers", 12)
    patch = _int(vcfg, "patch_size", 16)
    positions = (_int(vcfg, "image_size", 224) // patch) ** 2
    embed = _int(vcfg, "num_channels", 3) * patch * patch * hidden + hidden + positions * hidden
    block = _encoder_layer(hidden, inter, bias=True, gated=False, norm=2)
    return embed + layers * block + 2 * hidden


def _llama4_tower(vcfg: Config) -> int:
    """mllama4.py Llama4VisionModel: unbiased unfold-linear patch embedding, class token,
    positions for the patches + class token, pre/post LayerNorm, biased q/k/v/o and fc1/fc2,
    then the pixel-shuffle adapter MLP (intermediate_size -> projector_input_dim ->
    projector_output_dim, biased only with multi_modal_projector_bias)."""
    hidden = _int(vcfg, "hidden_size", 768)
    inter = _int(vcfg, "intermediate_size", 5632)
    layers = _int(vcfg, "num_hidden_layers", 34)
    patch = _int(vcfg, "patch_size", 14)
    positions = (_int(vcfg, "image_size", 448) // patch) ** 2 + 1
    embed = _int(vcfg, "num_channels", 3) * patch * patch * hidden + hidden + positions * hidden
    block = _encoder_layer(hidden, inter, bias=True, gated=False, norm=2)
    p_in = _int(vcfg, "projector_input_dim", 4096)
    p_out = _int(vcfg, "projector_output_dim", 4096)
    adapter = inter * p_in + p_in * p_out
    if _flag(vcfg, "multi_modal_projector_bias"):
        adapter += p_in + p_out
    return embed + 2 * 2 * hidden + layers * block + adapter


def _pixtral_tower(vcfg: Config) -> int:
    """pixtral.py PixtralHFVisionModel: unbiased conv patch embedding, RMSNorm ln_pre,
    unbiased q/k/v/o, gated (gate/up/down) MLP, two RMSNorms per layer, no post-norm."""
    hidden = _int(vcfg, "hidden_size", 1024)
    inter = _int(vcfg, "intermediate_size", 4096)
    layers = _int(vcfg, "num_hidden_layers", 24)
    patch = _int(vcfg, "patch_size", 16)
    embed = _int(vcfg, "num_channels", 3) * patch * patch * hidden + hidden
    return embed + layers * _encoder_layer(hidden, inter, bias=False, gated=True, norm=1)


TOWERS: Mapping[str, Callable[[Config], int]] = {
    "siglip_vision_model": _siglip_tower,
    "llama4_vision_model": _llama4_tower,
    "pixtral": _pixtral_tower,
}

# --- projectors into the text model (keyed by the top-level model_type) -------------------


def _gemma3_projector(config: Config, vcfg: Config, text_hidden: int) -> int:
    """gemma3_mm.py: one (vision hidden x text hidden) matrix + the vision-side RMSNorm."""
    vision = _int(vcfg, "hidden_size", 768)
    return vision * text_hidden + vision


def _llama4_projector(config: Config, vcfg: Config, text_hidden: int) -> int:
    """mllama4.py Llama4MultiModalProjector: unbiased vision_output_dim -> text hidden."""
    return _int(vcfg, "vision_output_dim", 7680) * text_hidden


def _mistral3_projector(config: Config, vcfg: Config, text_hidden: int) -> int:
    """mistral3.py: RMSNorm, the patch merger (merge**2 * hidden -> hidden, unbiased),
    linear_1 (vision -> text) and linear_2 (text -> text), biased per the config."""
    vision = _int(vcfg, "hidden_size", 1024)
    merge = _int(config, "spatial_merge_size", 2)
    linears = vision * text_hidden + text_hidden * text_hidden
    if _flag(config, "multimodal_projector_bias"):
        linears += 2 * text_hidden
    return vision + merge * merge * vision * vision + linears


PROJECTORS: Mapping[str, Callable[[Config, Config, int], int]] = {
    "gemma3": _gemma3_projector,
    "llama4": _llama4_projector,
    "mistral3": _mistral3_projector,
}


def vision_params(config: Config, text_hidden: int | None) -> int:
    """Vision tower + projector parameters of a multimodal config.json (the unflattened
    top level, which holds `vision_config`); 0 when there is none or its layout is unknown."""
    vcfg = config.get("vision_config")
    if not isinstance(vcfg, Mapping):
        return 0
    tower = TOWERS.get(str(vcfg.get("model_type", "")))
    if tower is None:
        return 0
    projector = PROJECTORS.get(str(config.get("model_type", "")))
    extra = projector(config, vcfg, text_hidden) if projector and text_hidden else 0
    return tower(vcfg) + extra
