"""Tiny models of several KV geometries for the real engine, made without any download.

Runs inside the engine's virtualenv (it needs torch, transformers and tokenizers, which the
kvscale environment does not have):

    <engine python> e2e/engine/tiny_models.py --out-root DIR [NAME ...]

prints one JSON object `{name: model_dir}` on stdout. Each model directory holds a
`config.json` of the named geometry, a byte-level BPE tokenizer trained on the Python standard
library's own sources (with a chat template), and random bf16 weights as safetensors. A model is
cached under `DIR/<name>-<key>`, where the key hashes this file, the geometry and the
transformers version, so a changed generator or geometry makes a new directory; a `.complete`
marker is written last, so an interrupted generation is redone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

VOCAB_SIZE = 8192
HIDDEN = 256
LAYERS = 4
MAX_POSITIONS = 8192
SEED = 1234
TOKENIZER_TEXT_BYTES = 4 * 1024 * 1024  # enough stdlib text for an 8k vocabulary, in seconds
COMPLETE_MARKER = ".complete"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_DENSE = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": LAYERS,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": MAX_POSITIONS,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}

# name -> transformers config kwargs (model_type picks the config class). Chosen to cover the
# layouts kvscale's planner distinguishes: GQA, MQA, sliding window, hybrid sliding/full,
# q/k-norm (different head_dim than hidden/heads) and MLA.
GEOMETRIES: dict[str, dict[str, Any]] = {
    "llama-gqa": {
        **_DENSE,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 32,
    },
    "llama-mqa": {
        **_DENSE,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 32,
    },
    "mistral-swa": {
        **_DENSE,
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "sliding_window": 512,
    },
    "gemma2-hybrid": {
        **_DENSE,
        "model_type": "gemma2",
        "architectures": ["Gemma2ForCausalLM"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "sliding_window": 512,
        "tie_word_embeddings": True,
    },
    "qwen3-qknorm": {
        **_DENSE,
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 128,
    },
    "deepseek-v2-mla": {
        **_DENSE,
        "model_type": "deepseek_v2",
        "architectures": ["DeepseekV2ForCausalLM"],
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": None,
        "kv_lora_rank": 64,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 32,
        "v_head_dim": 32,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 128,
        "first_k_dense_replace": 1,
        "topk_method": "greedy",
    },
}


def model_key(name: str, transformers_version: str) -> str:
    """Hash of what decides a model's bytes: this generator, the geometry, transformers."""
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update(json.dumps(GEOMETRIES[name], sort_keys=True).encode())
    digest.update(transformers_version.encode())
    return digest.hexdigest()[:12]


def _stdlib_text() -> list[str]:
    """Up to TOKENIZER_TEXT_BYTES of the standard library's top-level modules, in name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        size += len(text)
        if size >= TOKENIZER_TEXT_BYTES:
            break
    return texts


def train_tokenizer(out_dir: Path) -> None:
    """A byte-level BPE with VOCAB_SIZE entries, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|bos|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_stdlib_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|bos|>",
        pad_token="<|pad|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)


def build_model(name: str, out_dir: Path) -> None:
    """config.json + random bf16 safetensors for geometry `name`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(GEOMETRIES[name])
    model_type = kwargs.pop("model_type")
    config = AutoConfig.for_model(model_type, **kwargs)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 0, 2
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)


def ensure_model(name: str, out_root: Path) -> Path:
    """The cached model directory of `name`, generated first when missing or incomplete."""
    import transformers

    target = out_root / f"{name}-{model_key(name, transformers.__version__)}"
    if (target / COMPLETE_MARKER).exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build_model(name, partial)
    train_tokenizer(partial)
    (partial / COMPLETE_MARKER).write_text(name + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, required=True, help="cache directory")
    parser.add_argument("names", nargs="*", help=f"geometries (default all: {list(GEOMETRIES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in GEOMETRIES]
    if unknown:
        parser.error(f"unknown geometry {unknown}; choose from {list(GEOMETRIES)}")
    paths = {name: str(ensure_model(name, args.out_root)) for name in args.names or GEOMETRIES}
    json.dump(paths, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
