"""Scenario 4: a preemption burst scales up on the next decision although KV usage alone would
hold (the target utilisation is 1.0, so the KV term never asks for more replicas; the queue,
SLO and forecast terms are switched off so that the preemption term is the one that acts)."""

from __future__ import annotations

import time

import pytest
from kubernetes.client import ApiClient

from harness.fixtures import Harness
from harness.kube import get_llmd, wait_for
from harness.load import start_burst
from harness.scenario import start_llmd, wait_replicas
from harness.specs import history_of, llmd_manifest

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120.0
DECISION_INTERVAL_S = 5.0
# one decision interval, the operator's timer tick, the signal cache refresh and 2 scrapes
NEXT_TICK_BOUND_S = DECISION_INTERVAL_S + 2.5 + 2.5 + 2.0


def test_preemption_burst_scales_up_on_the_next_tick(
    e2e: Harness, api: ApiClient, namespace: str
) -> None:
    manifest = llmd_manifest(
        "preempt",
        scaling={
            "targetKvUtilization": 1.0,
            "targetWaitingPerReplica": 10000,  # the queue term abstains
            "preemptionsPerSecondThreshold": 0.1,
            # the forecast abstains: on a loaded machine the burst's KV demand rises over
            # enough ticks for its trend to fire first, and it asks for more replicas
            "forecastHorizonSeconds": 0,
        },
        slo={"ttftP95Seconds": 600, "itlP95Seconds": 10},  # the SLO terms abstain
    )
    name = start_llmd(e2e, api, namespace, manifest)
    (engine,) = e2e.engines.engines_of(namespace, name)
    # 60 requests of 500 + 400 tokens: they all start, then outgrow the 35,952-token pool
    burst = start_burst(engine.url, 60, 500, 400)
    wait_for(
        lambda: (engine.metric_sum(engine.metrics.preemptions) or 0) > 0,
        "the engine preempting",
        TIMEOUT_S,
        0.2,
    )
    first_preemption_s = time.time()
    wait_replicas(api, namespace, name, lambda n: n > 1, "scale-up", TIMEOUT_S)
    burst.join(timeout=1)
    history = history_of(get_llmd(api, namespace, name))
    up = next(h for h in history if h["toReplicas"] > h["fromReplicas"] and h["acted"])
    assert up["reason"] == "AllocationFailure", history
    assert up["t"] - first_preemption_s <= NEXT_TICK_BOUND_S, (up, first_preemption_s)
    delay_s = up["t"] - first_preemption_s
    print(f"\nscale-up {delay_s:.1f} s after the first preemption: {up['message']}")
