"""Catalog lookups: GPU aliases and label values, messy CSV cells, model ids."""

from __future__ import annotations

import pytest

from kvscale.capacity import (
    GIB,
    CapacityInputError,
    PeerLink,
    find_gpu,
    find_model,
    list_gpus,
    list_models,
)
from kvscale.capacity.catalog import catalog_config, parse_number, peer_link
from kvscale.capacity.geometry import model_from_config


@pytest.mark.parametrize(
    ("name", "gpu_id"),
    [
        ("NVIDIA-H100-80GB-HBM3", "h100_sxm_80gb"),  # nvidia.com/gpu.product label value
        ("NVIDIA-H100-NVL", "h100_nvl_94gb"),
        ("NVIDIA-L40S", "l40s"),
        ("H100", "h100_sxm_80gb"),
        ("h100-sxm", "h100_sxm_80gb"),
        ("l40s", "l40s"),
        ("A100-80GB", "a100_sxm_80gb"),
        ("a100_sxm_40gb", "a100_sxm_40gb"),  # catalog id
        ("NVIDIA-A100-SXM4-80GB", "a100_sxm_80gb"),
        ("rtx 4090", "rtx_4090"),
    ],
)
def test_gpu_resolution_is_case_and_punctuation_insensitive(name: str, gpu_id: str) -> None:
    assert find_gpu(name).id == gpu_id


def test_unknown_gpu_lists_close_matches() -> None:
    with pytest.raises(CapacityInputError) as info:
        find_gpu("H1000")
    assert info.value.field == "gpu" and "h100" in info.value.fix.lower()


@pytest.mark.parametrize(
    ("cell", "value"),
    [("79.11-79.19", 79.11), ("~22", 22.0), ("n/a", None), ("419 (see notes)", 419.0),
     ("not supported", None), ("", None), ("1,979", 1979.0), ("44.99 / 47.99", 44.99)],
)  # fmt: skip
def test_parse_messy_cells(cell: str, value: float | None) -> None:
    assert parse_number(cell) == value


def test_gpu_facts_from_the_catalog() -> None:
    h100 = find_gpu("H100")
    assert h100.memory_bytes == int(79.11 * GIB)  # torch-observed total, lower end of range
    assert h100.hbm_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert h100.bf16_flops == pytest.approx(989e12) and h100.fp8_kv_native
    l4 = find_gpu("L4")  # no torch figure: driver total 22.49 GiB less the 0.5 GiB CUDA gap
    assert l4.memory_bytes == int((22.49 - 0.5) * GIB)
    assert not find_gpu("A100-80GB").fp8_kv_native
    assert {g.id for g in list_gpus()} >= {"h100_sxm_80gb", "l40s", "a100_sxm_80gb"}


@pytest.mark.parametrize(
    ("gpu", "link"),
    [
        ("H100", PeerLink.NVLINK),  # "NVLink 4 (18 links)"
        ("B200", PeerLink.NVLINK),  # "NVLink 5 / NVSwitch (NV18)"
        ("L4", PeerLink.PCIE),  # "none (PCIe)"
        ("H100 PCIe", PeerLink.PCIE),  # "none by default (PCIe)"
        ("RTX 4090", PeerLink.PCIE),  # "none"
        ("MI300X", PeerLink.XGMI),  # "Infinity Fabric (7 x xGMI links, 8-GPU mesh)"
        ("A100 PCIe", PeerLink.UNKNOWN),  # "optional 2-GPU NVLink bridge": may be absent
    ],
)
def test_gpu_peer_link_from_the_catalog(gpu: str, link: PeerLink) -> None:
    assert find_gpu(gpu).peer_link is link


@pytest.mark.parametrize(
    "cell", [None, "", "  ", "24 x 100GbE RoCE on-die", "2-way NVLink bridge supported", "n/a"]
)
def test_unrecognised_or_optional_links_are_unknown(cell: str | None) -> None:
    assert peer_link(cell) is PeerLink.UNKNOWN


def test_model_lookup_by_hf_id() -> None:
    model = find_model("qwen/QWEN3-8B")
    assert (model.name, model.num_layers, model.num_kv_heads) == ("Qwen/Qwen3-8B", 36, 8)
    assert model.weights_bytes == 16381470720  # checkpoint bytes from the catalog
    assert "Qwen/Qwen3-8B" in list_models()
    with pytest.raises(CapacityInputError):
        find_model("bigcode/starcoder2-15b")  # in the catalog but without geometry


@pytest.mark.parametrize(
    ("hf_id", "base_id"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "Qwen/Qwen2.5-14B-Instruct"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "Qwen/Qwen2.5-32B-Instruct"),
        ("Qwen/QwQ-32B", "Qwen/Qwen2.5-32B-Instruct"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "meta-llama/Llama-3.3-70B-Instruct"),
    ],
)
def test_a_scraped_entry_lays_out_its_weights_with_the_width_of_its_base(
    hf_id: str, base_id: str
) -> None:
    # Only the MLP width is taken from the base; the scraped geometry and the parameter count
    # are the entry's own, and the geometry's parameter estimate with that width lands on the
    # count (one multiple of 128 off in the width would miss it by >= 0.6 %).
    model, base = find_model(hf_id), find_model(base_id)
    assert model.intermediate_size == base.intermediate_size
    assert model.weight_tensors and len(model.weight_tensors) == len(base.weight_tensors)
    estimate = model_from_config(catalog_config(hf_id), name="estimate").params
    assert model.params is not None and estimate is not None
    assert abs(estimate - model.params) / model.params < 0.001
