"""Extra fake GPU nodes the scenarios need beyond the six of the base cluster.

Several examples select H200 (`nvidia.com/gpu.product=NVIDIA-H200`), which the base cluster
does not have, and 100 LLMDeployments need about 100 GPUs. The nodes are copies of the base
cluster's node manifests (e2e/nodes/) with another name, product and GPU count, created with
the same helper and readiness wait as the base nodes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient

from cluster import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    NODES_DIR,
    create_nodes,
    load_node_manifests,
    wait_until_schedulable,
)


@dataclass(frozen=True)
class NodeShape:
    """What distinguishes one fake GPU node from the template it is copied from."""

    template_product: str  # a product of the base cluster whose manifest is copied
    product: str
    gpus: int
    memory_mib: int


H200 = NodeShape("NVIDIA-H100-80GB-HBM3", "NVIDIA-H200", 8, 143771)
L4_X8 = NodeShape("NVIDIA-L4", "NVIDIA-L4", 8, 23034)


def build_node(template: dict[str, Any], name: str, shape: NodeShape) -> dict[str, Any]:
    node = copy.deepcopy(template)
    meta, status = node["metadata"], node["status"]
    meta["name"] = name
    meta["labels"].update(
        {
            "kubernetes.io/hostname": name,
            GPU_PRODUCT_LABEL: shape.product,
            "nvidia.com/gpu.count": str(shape.gpus),
            "nvidia.com/gpu.memory": str(shape.memory_mib),
        }
    )
    for key in ("capacity", "allocatable"):
        status[key][GPU_RESOURCE] = str(shape.gpus)
    for key in ("bootID", "machineID", "systemUUID"):
        status["nodeInfo"][key] = name
    return node


def add_nodes(api: ApiClient, prefix: str, shape: NodeShape, count: int) -> list[str]:
    """Create `count` nodes named `<prefix>-<i>` and wait until they are Ready."""
    base = load_node_manifests(NODES_DIR)
    templates = {m["metadata"]["labels"][GPU_PRODUCT_LABEL]: m for m in base}
    manifests = [
        build_node(templates[shape.template_product], f"{prefix}-{i}", shape) for i in range(count)
    ]
    create_nodes(api, manifests)
    names = [m["metadata"]["name"] for m in manifests]
    wait_until_schedulable(api, names)
    return names
