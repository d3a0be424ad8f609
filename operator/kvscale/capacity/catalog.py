"""The model and GPU catalogs shipped as package data (`kvscale/data/catalog`).

Loads are lazy and cached: the CLI must answer in well under a second, and the operator
plans on every reconcile.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import re
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from kvscale.capacity.errors import CapacityInputError
from kvscale.capacity.geometry import model_from_config
from kvscale.capacity.types import GIB, GpuSpec, ModelGeometry, PeerLink

TERA = 1e12
# torch.cuda.mem_get_info() reports ~0.5 GiB less than the driver total (H100 79.65 -> 79.18,
# A10 22.49 -> 21.99, L40S 44.99 -> 44.5); used only where the catalog has no torch figure.
DRIVER_TO_CUDA_GAP_GIB = 0.5

# friendly names -> catalog id (keys are normalised with `normalise_gpu_name`)
GPU_ALIASES: Mapping[str, str] = {
    "h100": "h100_sxm_80gb",
    "h100sxm": "h100_sxm_80gb",
    "h10080gb": "h100_sxm_80gb",
    "h100sxm5": "h100_sxm_80gb",
    "h100pcie": "h100_pcie_80gb",
    "h100nvl": "h100_nvl_94gb",
    "h200": "h200_141gb",
    "h20": "h20_96gb",
    "a100": "a100_sxm_80gb",
    "a10080gb": "a100_sxm_80gb",
    "a100sxm": "a100_sxm_80gb",
    "a100sxm80gb": "a100_sxm_80gb",
    "a10040gb": "a100_sxm_40gb",
    "a100sxm40gb": "a100_sxm_40gb",
    "a100pcie": "a100_pcie_80gb",
    "a100pcie80gb": "a100_pcie_80gb",
    "rtx4090": "rtx_4090",
    "4090": "rtx_4090",
    "rtx3090": "rtx_3090",
    "3090": "rtx_3090",
    "rtx5090": "rtx_5090",
    "5090": "rtx_5090",
    "a6000": "rtx_a6000",
    "rtxa6000": "rtx_a6000",
    "rtx6000ada": "rtx_6000_ada",
    "v100": "v100_sxm2_32gb",
    "v10016gb": "v100_sxm2_16gb",
    "v10032gb": "v100_sxm2_32gb",
}

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def normalise_gpu_name(name: str) -> str:
    """Case-, vendor- and punctuation-insensitive key: 'NVIDIA-H100-NVL' -> 'h100nvl'."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for prefix in ("nvidiageforce", "nvidia", "tesla", "geforce", "amdinstinct", "amd"):
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix) :]
            break
    return key


def _missing(cell: str | None) -> bool:
    """A catalog cell that states no value: blank, 'n/a', 'not …', 'unknown'."""
    text = (cell or "").strip().lower()
    return not text or text.startswith(("n/a", "not ", "unknown"))


def parse_number(cell: str | None) -> float | None:
    """First number in a messy catalog cell: '79.11-79.19' -> 79.11, '~22' -> 22, 'n/a' -> None.

    Ranges give their lower end (the conservative device), annotated cells their first figure.
    """
    if _missing(cell):
        return None
    text = (cell or "").strip()
    match = _NUMBER.search(text.replace(",", ""))
    return float(match.group()) if match else None


def _catalog_dir() -> Traversable:
    return resources.files("kvscale").joinpath("data", "catalog")


# --- GPUs ------------------------------------------------------------------------------------


def _memory_bytes(row: Mapping[str, str]) -> int | None:
    torch_gib = parse_number(row.get("mem_torch_total_GiB_observed"))
    if torch_gib is not None:
        return int(torch_gib * GIB)
    driver_gib = parse_number(row.get("mem_driver_total_GiB_computed"))
    if driver_gib is None:
        return None
    return int((driver_gib - DRIVER_TO_CUDA_GAP_GIB) * GIB)


def peer_link(cell: str | None) -> PeerLink:
    """The catalog's `scaleup_interconnect` cell as a link kind. A bridge the SKU may lack
    ("optional", "supported") and anything unrecognised are UNKNOWN, which plans as the
    costliest link; "none" means the GPUs meet over PCIe."""
    text = (cell or "").strip().lower()
    if not text or "optional" in text or "supported" in text:
        return PeerLink.UNKNOWN
    if text.startswith("none"):
        return PeerLink.PCIE
    if "nvlink" in text or "nvswitch" in text:
        return PeerLink.NVLINK
    if "infinity fabric" in text or "xgmi" in text:
        return PeerLink.XGMI
    return PeerLink.UNKNOWN


def _whole(cell: str | None) -> int | None:
    value = parse_number(cell)
    return int(value) if value else None


def _arch(cell: str | None) -> str:
    return "" if _missing(cell) else (cell or "").strip()


def _gpu_from_row(row: Mapping[str, str]) -> GpuSpec | None:
    memory = _memory_bytes(row)
    bandwidth = parse_number(row.get("mem_bw_TBps"))
    if memory is None or bandwidth is None:
        return None  # not plannable (e.g. a SKU with no published memory figure)
    bf16 = parse_number(row.get("bf16_dense_TFLOPS")) or parse_number(row.get("fp16_dense_TFLOPS"))
    fp8 = parse_number(row.get("fp8_dense_TFLOPS"))
    labels = tuple(v.strip() for v in (row.get("k8s_label_value") or "").split("|") if v.strip())
    return GpuSpec(
        id=row["id"],
        name=row.get("marketing_name") or row["id"],
        vendor=row.get("vendor") or "",
        label_key=row.get("k8s_label_key") or "",
        label_values=labels,
        memory_bytes=memory,
        hbm_bandwidth_bytes_per_s=bandwidth * TERA,
        bf16_flops=bf16 * TERA if bf16 else None,
        fp8_flops=fp8 * TERA if fp8 else None,
        fp8_kv_native=(row.get("fp8_kv_cache") or "").strip().lower().startswith("native"),
        price_usd_per_hour=parse_number(row.get("price_usd_per_gpu_hr_indicative")),
        peer_link=peer_link(row.get("scaleup_interconnect")),
        compute_units=_whole(row.get("compute_units")),
        fp4_native=(row.get("fp4_support") or "").strip().lower().startswith("yes"),
        arch=_arch(row.get("compute_capability_or_gfx")),
    )


@functools.lru_cache(maxsize=1)
def _gpu_table() -> tuple[tuple[GpuSpec, ...], dict[str, GpuSpec]]:
    text = _catalog_dir().joinpath("gpus.csv").read_text(encoding="utf-8")
    gpus: list[GpuSpec] = []
    index: dict[str, GpuSpec] = {}
    for row in csv.DictReader(io.StringIO(text)):
        gpu = _gpu_from_row(row)
        if gpu is None:
            continue
        gpus.append(gpu)
        names = [gpu.id, gpu.name, row.get("driver_device_name") or "", *gpu.label_values]
        for name in names:
            for part in name.split("|"):
                if part.strip():
                    index.setdefault(normalise_gpu_name(part), gpu)
    by_id = {g.id: g for g in gpus}
    for alias, gpu_id in GPU_ALIASES.items():
        if gpu_id in by_id:
            index.setdefault(alias, by_id[gpu_id])
    return tuple(gpus), index


def list_gpus() -> list[GpuSpec]:
    return list(_gpu_table()[0])


def find_gpu(name: str) -> GpuSpec:
    """Resolve a catalog id, a `nvidia.com/gpu.product` label value or a friendly alias."""
    gpus, index = _gpu_table()
    key = normalise_gpu_name(name)
    if key in index:
        return index[key]
    # Compared as the lookup compares: normalised, against every id, label value and alias
    # ('H1000' is one letter from the alias 'h100', far from the label 'NVIDIA-H100-80GB-HBM3').
    close_keys = difflib.get_close_matches(key, list(index), n=12, cutoff=0.6)
    close = list(dict.fromkeys(index[k].id for k in close_keys))[:4]
    ids = sorted(g.id for g in gpus)
    hint = f"close matches: {', '.join(close)}" if close else f"known: {', '.join(ids[:8])}, …"
    raise CapacityInputError(
        "gpu", f"unknown GPU {name!r}", f"use a catalog id or label value ({hint})"
    )


# --- models ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _model_files() -> dict[str, str]:
    """lower-cased HF id -> file name (directory listing only; JSON is read on demand)."""
    files: dict[str, str] = {}
    for entry in _catalog_dir().joinpath("models").iterdir():
        if entry.name.endswith(".json"):
            files[entry.name[: -len(".json")].replace("__", "/", 1).lower()] = entry.name
    return files


def list_models() -> list[str]:
    return sorted(_read_model_json(name)["hf_id"] for name in _model_files().values())


@functools.lru_cache(maxsize=128)
def _read_model_json(file_name: str) -> dict[str, Any]:
    text = _catalog_dir().joinpath("models", file_name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _config_of(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    config = entry.get("config")
    if isinstance(config, Mapping):
        return config
    derived = entry.get("config_from_llmfit")
    if isinstance(derived, Mapping):  # scraped geometry: enough for the KV cache
        # widths the entry derives from a base model (its sources say how), e.g. the MLP
        # width a distill shares with its base: what lays out the weight tensors
        widths = entry.get("config_derived")
        return {
            **(widths if isinstance(widths, Mapping) else {}),
            "architectures": [derived.get("architecture") or "unknown"],
            "model_type": derived.get("architecture"),
            "num_hidden_layers": derived.get("num_hidden_layers"),
            "num_attention_heads": derived.get("num_attention_heads"),
            "num_key_value_heads": derived.get("num_key_value_heads"),
            "head_dim": derived.get("head_dim"),
            "hidden_size": derived.get("hidden_size"),
            "vocab_size": derived.get("vocab_size"),
            "max_position_embeddings": derived.get("context_length"),
        }
    return None


def _model_entry(hf_id: str) -> dict[str, Any]:
    files = _model_files()
    file_name = files.get(hf_id.strip().lower())
    if file_name is None:
        close = difflib.get_close_matches(hf_id.lower(), list(files), n=3, cutoff=0.5)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise CapacityInputError(
            "model", f"{hf_id!r} is not in the catalog{hint}", "pass its config.json instead"
        )
    return _read_model_json(file_name)


def _planned_config(entry: Mapping[str, Any], hf_id: str) -> Mapping[str, Any]:
    config = _config_of(entry)
    if config is None:
        raise CapacityInputError(
            "model", f"the catalog has no geometry for {hf_id!r}", "pass its config.json instead"
        )
    return config


def catalog_config(hf_id: str) -> Mapping[str, Any]:
    """The config a catalog model is planned from: its config.json as found, or the scraped
    geometry with the widths the entry derives (`config_derived`, sources in the entry)."""
    return _planned_config(_model_entry(hf_id), hf_id)


@functools.lru_cache(maxsize=128)
def find_model(hf_id: str) -> ModelGeometry:
    """Geometry of a catalog model by its Hugging Face id (case-insensitive)."""
    entry = _model_entry(hf_id)
    config = _planned_config(entry, hf_id)
    return model_from_config(
        config,
        name=str(entry.get("hf_id", hf_id)),
        weights_bytes=entry.get("weights_total_bytes"),
        params=entry.get("params"),
    )
