"""LLMDeployment manifests for the scenarios: a small real model on one L4 per replica, with
decision intervals and windows shortened so a scenario takes seconds, not the production
minutes (every value is a spec field a user can set the same way)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

BASE_SPEC: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
    "maxContextLength": 8192,
    "workload": {
        "inputTokensP50": 1000,
        "inputTokensP95": 4000,
        "outputTokensP50": 130,
        "outputTokensP95": 700,
        "peakRequestsPerSecond": 4,
    },
    "engine": {"name": "vllm", "version": "0.11.0"},
    "placement": {"gpuTypes": ["l4"], "gpusPerReplica": 1},
    "scaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetKvUtilization": 0.6,
        "intervalSeconds": 5,  # the CRD's minimum
        "warmupSeconds": 0,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 30,
        "scaleDownCooldownSeconds": 0,
        "maxScaleUpStep": 4,
        "maxScaleDownStep": 4,
        "failedReadsBeforeFallback": 100,
    },
    "rollout": {"enabled": False},
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of plain dicts (override wins; lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def llmd_manifest(name: str, **spec_overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": merge(BASE_SPEC, spec_overrides),
    }


def history_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """status.autoscaler.history, oldest first, with `time` parsed to epoch seconds."""
    entries = ((obj.get("status") or {}).get("autoscaler") or {}).get("history") or []
    parsed = [{**e, "t": datetime.fromisoformat(str(e["time"])).timestamp()} for e in entries]
    return sorted(parsed, key=lambda e: e["t"])


def autoscaler_status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("autoscaler") or {})
