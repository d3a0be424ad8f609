"""Sample LLMDeployments shared by the test tiers and the benchmarks (one definition, variants
by keyword), so a change to the API's required fields is made once."""

from __future__ import annotations

import copy
from typing import Any

from kvscale.scaling.types import Signals

API_VERSION = "kvscale.dev/v1alpha1"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHAT_WORKLOAD: dict[str, Any] = {
    "inputTokensP50": 500,
    "inputTokensP95": 2000,
    "outputTokensP50": 200,
    "outputTokensP95": 1000,
    "peakRequestsPerSecond": 5,
}


def llama8b_spec(*gpu_types: str, **fields: Any) -> dict[str, Any]:
    """Llama-3.1-8B, 8k context, a chat workload, on `gpu_types` (default l40s); `fields`
    (camelCase spec keys) are added or replace the defaults, e.g. `placement=`, `scaling=`."""
    spec: dict[str, Any] = {
        "model": {"name": MODEL},
        "maxContextLength": 8192,
        "workload": dict(CHAT_WORKLOAD),
        "placement": {"gpuTypes": list(gpu_types or ("l40s",))},
    }
    spec.update(copy.deepcopy(fields))
    return spec


def llmd_object(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The whole LLMDeployment object around a spec (deep-copied)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "LLMDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(spec),
    }


def signals(pods: int, reporting: int | None = None, **values: float | int | None) -> Signals:
    """Scaling signals from `pods` expected pods, all reporting unless `reporting` says.

    A steady load unless told otherwise: given a latency, the last minute's TTFT p95 reads
    what the SLO's window reads (or a fast first token when only ITL is given)."""
    observed = pods if reporting is None else reporting
    if "ttft_p95_recent_s" not in values and {"ttft_p95_s", "itl_p95_s"} & values.keys():
        values["ttft_p95_recent_s"] = values.get("ttft_p95_s") or 0.0
    return Signals(pods_expected=pods, pods_reporting=observed, **values)  # type: ignore[arg-type]
