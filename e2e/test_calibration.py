"""Scenario: live KV calibration on the real control plane.

The simulated engines of this scenario hold 10 % fewer KV blocks than the operator planned (a
non-KV overhead its model misses) and say so in `vllm:cache_config_info`, as vLLM does. The
operator reads that through the real Prometheus → status shows planned vs live, KvCalibrated
names the drift (and a Warning Event), the overhead goes into the cluster's calibration
ConfigMap, the deployment re-plans from it, and a second LLMDeployment of the same model and
GPU type plans from it before its first engine starts: its KV tokens are the live figure to
within a block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from harness.fixtures import Harness
from harness.install import NAMESPACE as OPERATOR_NAMESPACE
from harness.kube import condition_of, create_llmd, events_of, get_llmd, wait_for
from harness.scenario import describe_llmd, start_llmd, wait_engines
from harness.specs import llmd_manifest

pytestmark = pytest.mark.e2e

# No other scenario serves this model: the calibration entry this test writes is its own.
MODEL = "Qwen/Qwen2.5-7B-Instruct"
POOL_FRACTION = 0.9
RECORD_CONFIGMAP = "kvscale-calibration"  # the chart's default calibration.configMapName
TIMEOUT_S = 90.0


def calibration_of(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("calibration") or {})


@pytest.fixture
def record_key(api: ApiClient) -> Iterator[list[str]]:
    """The record entries the test makes are removed afterwards (the record is cluster-wide)."""
    keys: list[str] = []
    yield keys
    core = client.CoreV1Api(api)
    for key in keys:
        try:
            core.patch_namespaced_config_map(
                RECORD_CONFIGMAP, OPERATOR_NAMESPACE, {"data": {key: None}}
            )
        except ApiException as error:
            if error.status != 404:
                raise


def test_engines_short_of_the_plan_calibrate_the_next_deployment(
    e2e: Harness, api: ApiClient, namespace: str, record_key: list[str]
) -> None:
    e2e.engines.set_sim_flags(namespace, "--sim-kv-pool-fraction", f"{POOL_FRACTION:g}")
    first = start_llmd(e2e, api, namespace, llmd_manifest("calib-first", model={"name": MODEL}))
    record_key.append(calibration_of(get_llmd(api, namespace, first))["recordKey"])
    (engine,) = wait_engines(e2e, namespace, first, 1)
    labels = engine.info_labels(engine.metrics.cache_config_info)
    assert labels is not None, "the engine exports no cache_config_info"
    live_blocks, block_size = int(labels["num_gpu_blocks"]), int(labels["block_size"])

    # the drift is named, with the numbers, in a Warning Event
    drift = wait_for(
        lambda: [e for e in events_of(api, namespace, first) if e.reason == "KvDrift"],
        "a KvDrift Event",
        TIMEOUT_S,
    )[0]
    assert drift.type == "Warning"
    assert "10.0% below the plan's" in drift.message, drift.message

    # the deployment re-plans from the recorded overhead: planned = live
    calibrated = wait_for(
        lambda: (
            (c := calibration_of(get_llmd(api, namespace, first)))
            and c.get("nonKvSource") == "observed"
            and c.get("plannedNumBlocks") == c.get("liveNumBlocks")
            and c
        ),
        "calib-first planned from the observed overhead",
        TIMEOUT_S,
    )
    assert calibrated["liveNumBlocks"] == live_blocks
    modelled_blocks = calibrated["modelledKvTokens"] // block_size
    assert abs(live_blocks - POOL_FRACTION * modelled_blocks) <= 1, (live_blocks, modelled_blocks)
    assert calibrated["impliedNonKvBytes"] > calibrated["modelledNonKvBytes"]
    matched = wait_for(
        lambda: (
            (c := condition_of(get_llmd(api, namespace, first), "KvCalibrated"))
            and c["status"] == "True"
            and c
        ),
        "KvCalibrated=True on calib-first",
        TIMEOUT_S,
    )
    assert matched["reason"] == "LivePoolMatchesPlan"
    assert "planned from the non-KV overhead observed live" in matched["message"]

    # a second deployment of the same model and GPU type plans from the record at once
    create_llmd(api, namespace, llmd_manifest("calib-second", model={"name": MODEL}))
    second_plan = wait_for(
        lambda: (
            (p := (get_llmd(api, namespace, "calib-second").get("status") or {}).get("plans"))
            and p[0]
        ),
        "calib-second planned",
        TIMEOUT_S,
    )
    assert second_plan["observedNonKvBytes"] == calibrated["impliedNonKvBytes"]
    assert abs(second_plan["kvCacheTokens"] - calibrated["liveKvTokens"]) <= block_size
    assert second_plan["modelledKvCacheTokens"] == calibrated["modelledKvTokens"]
    # and its own engines, as short as the first's, match that plan
    second_matched = wait_for(
        lambda: (
            (c := condition_of(get_llmd(api, namespace, "calib-second"), "KvCalibrated"))
            and c["status"] == "True"
            and c
        ),
        "KvCalibrated=True on calib-second",
        TIMEOUT_S,
    )
    assert second_matched["reason"] == "LivePoolMatchesPlan"
    assert not [e for e in events_of(api, namespace, "calib-second") if e.reason == "KvDrift"]
    print(
        f"\n{describe_llmd(e2e, namespace, first)}\n{describe_llmd(e2e, namespace, 'calib-second')}"
    )
