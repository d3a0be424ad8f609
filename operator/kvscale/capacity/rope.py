"""vLLM's rotary-embedding cos/sin caches: a per-rank charge the checkpoint size leaves out.

vLLM builds each rotary embedding with a `cos_sin_cache` buffer of shape
[positions, rotary_dim] (cos and sin halves side by side) while it constructs the model,
under the loader's default dtype and target device, so the buffer is on the GPU inside the
"Model loading took" measurement and counts as weights (vLLM 0.19.0
model_executor/layers/rotary_embedding/base.py `RotaryEmbeddingBase.__init__`, the
FlashInfer variant commented out so `use_flashinfer` is False and the cache is cast to the
model dtype; the same cast in 0.11.0 base.py, 0.8.3 and 0.6.4.post1 rotary_embedding.py,
and `cache.to(torch.get_default_dtype())` in 0.4.1). It is not split by tensor parallelism:
every rank holds the whole table. `get_rope` memoises the modules by their arguments
(`_ROPE_DICT`), so the layers of one model share one table per distinct rope configuration:
one for most models, two for Gemma 3 (local and global layers).

How many positions the table holds depends on the rope type (0.19.0 and 0.11.0
rotary_embedding/*.py, and the same classes in the 0.6.4.post1 and 0.8.3 single-file module):
- default, llama3, ntk, dynamic with `alpha`, Gemma 4 "proportional": max_position_embeddings;
- linear and dynamic with `factor`: max_position_embeddings x factor;
- yarn and DeepSeek's yarn: original_max_position_embeddings x factor;
- longrope (Phi-3): the short table (original length) plus the long one (max length) as one
  buffer from the 0.8.3 wheel on; 0.6.4.post1 also keeps both halves as buffers, twice that;
- multimodal rope (`mrope_section`, Qwen2-VL/2.5-VL): max_position_embeddings x 4 from the
  0.8.3 wheel on (video positions), x 1 in 0.6.4.post1; with yarn, original x 4 x factor.
Which release between 0.6.4.post1 and 0.8.3 changed the last two is not read; the rule row
from 0.8.0 on carries the newer layout (rules.ROPE_V08_LAYOUT_SINCE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kvscale.capacity.configkeys import MAX_CONFIG_INT, Config, get_key, optional_int
from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.types import LayerKind, ModelGeometry, RopeTable

# Architectures whose vLLM model asks `get_rope` for a float32 table (model_executor/models/
# gpt_oss.py and minimax_text_01.py pass `dtype=torch.float32` in 0.11.0 and 0.19.0).
FP32_ROPE_ARCHITECTURES = ("GptOssForCausalLM", "MiniMaxText01ForCausalLM")
# Families whose vLLM model has no rotary embedding at all (learned or ALiBi positions, pure
# Mamba, or attention without positions: jamba.py and nemotron_h.py call no `get_rope`).
NO_ROPE_MODEL_TYPES = (
    "gpt2", "opt", "bloom", "mpt", "gpt_bigcode", "jamba", "mamba", "mamba2", "falcon_mamba",
    "nemotron_h",
)  # fmt: skip
# The table lengths the two layouts differ in (see the module docstring).
MROPE_POSITIONS_FACTOR_V08 = 4


def _factor(params: Mapping[str, Any]) -> float:
    value = params.get("factor")
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 2**20:
        raise CapacityInputError(
            "config.rope_scaling.factor",
            f"must be a number in (0, {2**20}], got {repr(value)[:40]}",
            "copy rope_scaling from the model's config.json",
        )
    return float(value)


def _kind(params: Mapping[str, Any]) -> str:
    kind = str(params.get("rope_type") or params.get("type") or "default").lower()
    if "mrope_section" in params:
        return "mrope_yarn" if kind == "yarn" else "mrope"
    if kind == "dynamic" and params.get("factor") is None:
        return "dynamic_alpha"  # Hunyuan's `alpha` variant keeps the configured length
    return {"deepseek_yarn": "yarn", "su": "longrope", "mrope": "mrope"}.get(kind, kind)


def _table(params: Mapping[str, Any], rotary_dim: int, max_positions: int, fp32: bool) -> RopeTable:
    original = optional_int(params, "original_max_position_embeddings") or max_positions
    return RopeTable(_kind(params), rotary_dim, max_positions, _factor(params), original, fp32)


def _rotary_dim(cfg: Config, params: Mapping[str, Any], head_dim: int) -> int:
    """Columns of the table: the rotated part of one head (MLA: the rope part only)."""
    mla_rope = optional_int(cfg, "qk_rope_head_dim")
    if cfg.get("kv_lora_rank") and mla_rope:
        return mla_rope
    explicit = optional_int(cfg, "rotary_dim")
    if explicit:
        return explicit
    partial = get_key(params, "partial_rotary_factor") or get_key(
        cfg, "partial_rotary_factor", "rotary_pct"
    )
    if isinstance(partial, int | float) and not isinstance(partial, bool) and 0 < partial <= 1:
        return int(head_dim * partial)
    return head_dim


def rope_tables(
    cfg: Config, head_dim: int, kinds: tuple[LayerKind, ...], architecture: str
) -> tuple[RopeTable, ...]:
    """The distinct cos/sin tables vLLM builds for this (flattened) config."""
    if cfg.get("model_type") in NO_ROPE_MODEL_TYPES or cfg.get("alibi"):
        return ()
    if cfg.get("position_embedding_type") not in (None, "rope"):  # Granite 4: "nope"
        return ()
    max_positions = optional_int(cfg, "max_position_embeddings", "n_positions") or 4096
    fp32 = architecture in FP32_ROPE_ARCHITECTURES
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        return ()
    if params and all(isinstance(v, Mapping) for v in params.values()):
        # transformers v5: one parameter set per layer type (Gemma 3/4)
        tables = []
        for layer_type, sub in params.items():
            dim = head_dim
            if layer_type == "full_attention":
                dim = optional_int(cfg, "global_head_dim") or head_dim
            rot = dim if _kind(sub) == "proportional" else _rotary_dim(cfg, sub, dim)
            tables.append(_table(sub, rot, max_positions, fp32))
        return tuple(dict.fromkeys(tables))
    tables = [_table(params, _rotary_dim(cfg, params, head_dim), max_positions, fp32)]
    if cfg.get("rope_local_base_freq") is not None and LayerKind.SLIDING in kinds:
        # Gemma 3 (transformers v4 config): sliding layers use a plain rope of their own base
        # (vLLM gemma3.py `Gemma3Attention`), a second table
        tables.append(RopeTable("default", head_dim, max_positions, 1.0, max_positions, fp32))
    return tuple(dict.fromkeys(tables))


def table_positions(table: RopeTable, v08_layout: bool) -> int:
    """Rows of one table in a release with (True) or without the 0.8 layout."""
    kind, length = table.kind, table.max_positions
    if kind in ("linear", "dynamic"):
        rows = math.ceil(length * table.factor)
    elif kind == "yarn":
        rows = math.ceil(table.original_max_positions * table.factor)
    elif kind == "longrope":
        rows = (table.original_max_positions + length) * (1 if v08_layout else 2)
    elif kind == "mrope":
        rows = length * (MROPE_POSITIONS_FACTOR_V08 if v08_layout else 1)
    elif kind == "mrope_yarn":
        rows = math.ceil(table.original_max_positions * MROPE_POSITIONS_FACTOR_V08 * table.factor)
    else:  # default, llama3, ntk, dynamic alpha, proportional, …: the configured length
        rows = length
    return min(rows, MAX_CONFIG_INT)


def rope_cache_bytes(model: ModelGeometry, v08_layout: bool) -> int:
    """Bytes of all of the model's cos/sin tables on every rank (not split by TP)."""
    total = 0
    for table in model.rope_tables:
        width = 4 if table.fp32 else model.dtype_bytes
        total += table_positions(table, v08_layout) * table.rotary_dim * width
    return total
