"""The simulated engines report what the real one reports (issue 14, deliverable 3).

The simulated server (`kvscale.sim.server`, which the e2e harness starts for every simulated
pod) is built from the very flags the real engine of the pressure run started with; its
/metrics must have every series kvscale queries with the real engine's metric type and label
names, and `cache_config_info` must carry the real engine's KV-sizing labels with the real
engine's values — the token figure with the release's semantics included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pressure_run import PRESSURE_CASE, PressureRun
from prometheus_client.parser import text_string_to_metric_families

from harness.realvllm import KV_SIZING_LABELS, simulated_metrics_text

pytestmark = pytest.mark.engine


def test_simulator_exports_what_the_real_engine_exports(
    pressure: PressureRun, tiny_models: dict[str, Path]
) -> None:
    model_dir = tiny_models[PRESSURE_CASE.geometry]
    real = {f.name: f for f in text_string_to_metric_families(pressure.metrics_text)}
    sim_text = simulated_metrics_text(pressure.flags, model_dir, pressure.names.version)
    sim = {f.name: f for f in text_string_to_metric_families(sim_text)}
    m = pressure.names
    contract = [
        m.kv_usage, m.num_requests_running, m.num_requests_waiting, m.preemptions,
        m.ttft_seconds, m.itl_seconds, m.queue_time_seconds, m.e2e_latency_seconds,
        m.cache_config_info, m.request_success, m.prompt_tokens, m.generation_tokens,
    ]  # fmt: skip
    for name in filter(None, contract):
        family = name.removesuffix("_total") if name.endswith("_total") else name
        assert family in sim, f"the simulator does not export {name}"
        assert sim[family].type == real[family].type, name
        real_labels = {k for s in real[family].samples for k in s.labels if k != "le"}
        sim_labels = {k for s in sim[family].samples for k in s.labels if k != "le"}
        if name == m.cache_config_info:
            real_labels = real_labels & {*KV_SIZING_LABELS, "enable_prefix_caching", "engine"}
        assert sim_labels >= real_labels, (name, sorted(real_labels - sim_labels))
    (real_info,) = real[str(m.cache_config_info)].samples
    (sim_info,) = sim[str(m.cache_config_info)].samples
    for label in (*KV_SIZING_LABELS, "enable_prefix_caching", "gpu_memory_utilization"):
        assert sim_info.labels[label] == real_info.labels[label], label
