"""e2e with real engines: an LLMDeployment's Running pods are real vLLM processes (at most two),
started from the argv the operator rendered into the pod, scraped by the real Prometheus of the
e2e stack, and a load that exhausts the small KV pool makes the operator scale out on the real
engine's preemption and KV signals.

Adaptations (harness.realvllm.adapt_pod_args, ADR 0010): the tiny model's directory instead of
the model reference, a free loopback port, `--kv-cache-memory-bytes` for a 4,096-token pool (the
plan's GPU utilisation would size the CPU pool from the host's RAM) and `--enforce-eager`.
"""

from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from pressure_run import PRESSURE_CASE, SHAPE

from harness.fixtures import Harness
from harness.kube import create_llmd, get_llmd, has_condition, wait_for
from harness.pressure import drive_requests
from harness.realvllm import STARTUP_TIMEOUT_S, EngineEnv, RealVllmLauncher
from harness.scenario import wait_replicas
from harness.specs import autoscaler_status, history_of, llmd_manifest
from kvscale.scaling import reasons

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

SCALE_OUT_TIMEOUT_S = 900.0
KV_SIGNAL_REASONS = {reasons.KV_DEMAND, reasons.ALLOCATION_FAILURE}


def manifest(env: EngineEnv, model_dir: Path) -> dict[str, Any]:
    config = (model_dir / "config.json").read_text(encoding="utf-8")
    body = llmd_manifest(
        "real-vllm",
        maxContextLength=PRESSURE_CASE.max_model_len,
        workload={
            "inputTokensP50": SHAPE.prompt_tokens,
            "inputTokensP95": SHAPE.prompt_tokens,
            "outputTokensP50": SHAPE.output_tokens,
            "outputTokensP95": SHAPE.output_tokens,
            "peakRequestsPerSecond": 1,
        },
        engine={
            "name": "vllm",
            "version": env.version,
            "maxNumSeqs": PRESSURE_CASE.max_num_seqs,
            "maxNumBatchedTokens": PRESSURE_CASE.max_num_batched_tokens,
        },
        kvCache={"blockSize": PRESSURE_CASE.block_size},
        scaling={
            "maxReplicas": 2,
            "targetKvUtilization": 0.6,
            "preemptionsPerSecondThreshold": 0.05,
            "targetWaitingPerReplica": 10000,  # the queue term abstains: KV signals decide
        },
        slo={"ttftP95Seconds": 600, "itlP95Seconds": 10},  # the SLO terms abstain
    )
    body["spec"]["model"] = {"uri": str(model_dir), "config": config}  # not a catalog model
    return body


def pod_args(api: ApiClient, namespace: str, name: str) -> list[list[str]]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"llmd={name}")
    return [list(p.spec.containers[0].args or []) for p in pods.items]


def test_real_engines_scale_out_on_real_kv_pressure(
    e2e: Harness,
    api: ApiClient,
    namespace: str,
    engine_env: EngineEnv,
    tiny_models: dict[str, Path],
) -> None:
    model_dir = tiny_models[PRESSURE_CASE.geometry]
    launcher = RealVllmLauncher(engine_env, model_dir, PRESSURE_CASE.kv_cache_memory_bytes)
    e2e.engines.use_launcher(namespace, launcher)
    body = manifest(engine_env, model_dir)
    name = str(body["metadata"]["name"])
    create_llmd(api, namespace, body)
    (engine,) = wait_for(
        lambda: e2e.engines.engines_of(namespace, name) or None, "a real engine", 120
    )
    (server,) = launcher.servers or []
    server.wait_healthy(STARTUP_TIMEOUT_S)
    (args,) = pod_args(api, namespace, name)
    started = server.argv()
    assert all(arg in started for arg in args if arg != "8000"), (args, started)
    wait_for(
        lambda: has_condition(get_llmd(api, namespace, name), "MetricsAvailable", "True"),
        "MetricsAvailable=True from the real engine",
        120,
    )
    usages: list[dict[str, Any]] = []
    load = threading.Thread(
        target=lambda: usages.extend(drive_requests(engine.url, str(model_dir), SHAPE)),
        daemon=True,
    )
    load.start()
    wait_replicas(api, namespace, name, lambda n: n > 1, "scale-out", SCALE_OUT_TIMEOUT_S)
    history = history_of(get_llmd(api, namespace, name))
    up = next(h for h in history if h["toReplicas"] > h["fromReplicas"] and h["acted"])
    print("\ndecision trace (status.autoscaler.history):")
    for entry in history:
        print(f"  {json.dumps({k: v for k, v in entry.items() if k != 't'})}")
    print(f"signals at the end: {autoscaler_status(get_llmd(api, namespace, name)).get('signals')}")
    print(f"engine argv: {shlex.join(started)}")
    assert up["reason"] in KV_SIGNAL_REASONS, history
    engines = wait_for(  # the new replica is a real engine too
        lambda: e2e.engines.engines_of(namespace, name)[1:] and launcher.servers,
        "a second real engine",
        60,
    )
    engines[1].wait_healthy(STARTUP_TIMEOUT_S)
    load.join(timeout=SCALE_OUT_TIMEOUT_S)
    assert [u["completion_tokens"] for u in usages] == [SHAPE.output_tokens] * SHAPE.count
