"""`PrometheusSource` against a real Prometheus scraping real /metrics endpoints.

The fake pods speak vLLM (new and old names) and SGLang metric names; Prometheus scrapes them
every second with the namespace/llmd labels the operator's scrape config adds. The adapter's
readings then feed the real policy, including while pods vanish and after Prometheus stops.
"""

from __future__ import annotations

import http.server
import json
import math
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from promfixture import (
    SGLANG,
    VLLM_OLD,
    VLLM_V1,
    EnginePod,
    StartFrozenPod,
    StartPod,
    StartPrometheus,
    iter_targets,
    wait_until,
)

from kvscale.metrics import DeploymentTarget, PrometheusSource, Quality, SignalsReading
from kvscale.scaling import Observation, ReplicaCounts, ScalerState, ScalingConfig, decide, reasons

pytestmark = pytest.mark.integration

WINDOW_S = 10  # rate / quantile window: 10 scrapes at 1 s


@contextmanager
def engines_stepping(plan: list[tuple[EnginePod, dict[str, float]]]) -> Iterator[None]:
    """Every 0.25 s each pod 'serves' a request with the given latencies (and preemptions)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.25):
            for pod, step in plan:
                pod.serve_requests(
                    ttft_s=step["ttft"],
                    itl_s=step["itl"],
                    queue_s=step["queue"],
                    preempt=int(step.get("preempt", 0)),
                )

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def fetch_one(source: PrometheusSource, target: DeploymentTarget) -> SignalsReading:
    return source.fetch([target])[target.key]


def test_fleet_signals_quality_and_batching(
    start_pod: StartPod, start_frozen_pod: StartFrozenPod, start_prometheus: StartPrometheus
) -> None:
    chat = [
        start_pod(VLLM_V1, namespace="team-a", llmd="chat", pod="chat-0").set_state(
            kv_usage=0.5, running=10, waiting=3, num_gpu_blocks=3800
        ),
        start_pod(VLLM_V1, namespace="team-a", llmd="chat", pod="chat-1").set_state(
            kv_usage=0.7, running=12, waiting=4, num_gpu_blocks=3600
        ),
    ]
    code = start_pod(VLLM_OLD, namespace="team-b", llmd="code", pod="code-0").set_state(
        kv_usage=0.9, running=5, num_gpu_blocks=2000
    )
    sgl = start_pod(SGLANG, namespace="team-c", llmd="sgl", pod="sgl-0").set_state(
        kv_usage=0.42, waiting=2, capacity_tokens=120_000
    )
    part = start_pod(VLLM_V1, namespace="team-d", llmd="part", pod="part-0").set_state(kv_usage=0.3)
    nan = start_pod(VLLM_V1, namespace="team-e", llmd="nanny", pod="nanny-0").set_state(
        kv_usage=math.nan
    )
    frozen = start_frozen_pod(
        {"vllm:num_requests_running": 1.0, "vllm:kv_cache_usage_perc": 0.5},
        age_s=120,
        namespace="team-f",
        llmd="frozen",
    )
    pods = [*chat, code, sgl, part, nan]
    server = start_prometheus(list(iter_targets([*pods, frozen])))
    targets = {
        "chat": DeploymentTarget("team-a", "chat", "vllm", "0.11.0", 2),
        "code": DeploymentTarget("team-b", "code", "vllm", "0.10.2", 1),
        "sgl": DeploymentTarget("team-c", "sgl", "sglang", "0.5.23", 1),
        "part": DeploymentTarget("team-d", "part", "vllm", "0.11.0", 2),
        "nanny": DeploymentTarget("team-e", "nanny", "vllm", "0.11.0", 1),
        "frozen": DeploymentTarget("team-f", "frozen", "vllm", "0.11.0", 1),
    }
    source = PrometheusSource(server.url, window_s=WINDOW_S, stale_after_s=30, timeout_s=3)
    step = {"ttft": 0.3, "itl": 0.04, "queue": 0.02, "preempt": 1}
    plan = [
        (chat[0], step),
        (chat[1], step),
        (code, {"ttft": 0.3, "itl": 0.2, "queue": 0.02}),
        (sgl, {"ttft": 0.06, "itl": 0.02, "queue": 0.02, "preempt": 1}),
    ]
    with engines_stepping(plan):
        readings: dict[str, SignalsReading] = {}

        def ready() -> bool:
            fetched = source.fetch(list(targets.values()))
            readings.update({name: fetched[t.key] for name, t in targets.items()})
            chat_now, sgl_now = readings["chat"].signals, readings["sgl"].signals
            # steady state: the rate window holds ~4 preemptions/s per stepping pod
            return (
                chat_now is not None
                and chat_now.pods_reporting == 2
                and (chat_now.preemptions_per_s or 0.0) > 4.0
                and chat_now.ttft_p95_s is not None
                and sgl_now is not None
                and (sgl_now.preemptions_per_s or 0.0) > 2.0
            )

        assert wait_until(ready, timeout_s=25), {k: r.error for k, r in readings.items()}
        queries_for_six = source.queries_sent
        many = [
            DeploymentTarget(f"ns-{i}", f"x-{i}", "vllm", ("0.10.2", "0.11.0")[i % 2], 1)
            for i in range(60)
        ]
        source.fetch([*targets.values(), *many])
        assert source.queries_sent == queries_for_six  # one query per signal per family

    chat_signals = readings["chat"].signals
    assert chat_signals is not None
    assert chat_signals.kv_usage_frac == pytest.approx(0.6)  # mean of 0.5 and 0.7
    assert chat_signals.num_requests_waiting == 7  # 3 + 4
    # the smaller of the two pools (3800 and 3600 blocks) is the live capacity
    assert (chat_signals.num_gpu_blocks, chat_signals.block_size_tokens) == (3600, 16)
    assert chat_signals.preemptions_per_s is not None and chat_signals.preemptions_per_s < 12.0
    # every TTFT observed is 0.3 s: the p95 lies in its bucket (0.25, 0.5]
    assert chat_signals.ttft_p95_s is not None and 0.25 < chat_signals.ttft_p95_s <= 0.5
    assert readings["chat"].quality_of("kv_usage_frac") is Quality.OK
    assert readings["chat"].quality_of("rejections_per_s") is Quality.UNSUPPORTED

    code_signals = readings["code"].signals  # old vLLM names
    assert code_signals is not None
    assert code_signals.kv_usage_frac == pytest.approx(0.9)
    assert code_signals.itl_p95_s is not None and 0.1 < code_signals.itl_p95_s <= 0.25

    sgl_signals = readings["sgl"].signals
    assert sgl_signals is not None
    assert sgl_signals.kv_usage_frac == pytest.approx(0.42)
    assert (sgl_signals.num_gpu_blocks, sgl_signals.block_size_tokens) == (120_000, 1)
    assert sgl_signals.preemptions_per_s is not None and sgl_signals.preemptions_per_s < 6.0
    assert sgl_signals.ttft_p95_s is not None and 0.05 < sgl_signals.ttft_p95_s <= 0.1

    part_reading = readings["part"]  # 1 of the 2 expected pods exists
    assert part_reading.signals is not None and part_reading.signals.pods_reporting == 1
    assert part_reading.quality_of("kv_usage_frac") is Quality.PARTIAL

    nan_reading = readings["nanny"]
    assert nan_reading.signals is not None and nan_reading.signals.kv_usage_frac is None
    assert nan_reading.quality_of("kv_usage_frac") is Quality.NAN

    frozen_reading = readings["frozen"]  # samples 120 s old, limit 30 s
    assert frozen_reading.signals is not None and frozen_reading.signals.pods_reporting == 0
    assert frozen_reading.quality_of("kv_usage_frac") is Quality.STALE

    # the policy acts on what the adapter read: 7 waiting at 2 per replica need 4 replicas,
    # more than the +1 the preemptions ask for
    decision, _ = decide(
        ScalingConfig(), ScalerState(), Observation(ReplicaCounts(2, 2, 0), chat_signals), 0.0
    )
    assert (decision.replicas, decision.reason) == (4, reasons.QUEUE)
    assert {s.step: s.reason for s in decision.steps}["allocation_failure"] == (
        reasons.ALLOCATION_FAILURE
    )


def test_lost_pod_is_partial_and_policy_does_not_scale_down(
    start_pod: StartPod, start_prometheus: StartPrometheus
) -> None:
    pods = [
        start_pod(VLLM_V1, namespace="team-a", llmd="chat", pod=f"chat-{i}").set_state(kv_usage=0.2)
        for i in range(2)
    ]
    server = start_prometheus(list(iter_targets(pods)))
    target = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", 2)
    source = PrometheusSource(server.url, window_s=WINDOW_S, timeout_s=3)

    def reporting(count: int) -> bool:
        signals = fetch_one(source, target).signals
        return signals is not None and signals.pods_reporting == count

    assert wait_until(lambda: reporting(2), timeout_s=15)
    pods[1].stop()  # the pod dies; Prometheus marks its series stale on the failed scrape
    assert wait_until(lambda: reporting(1), timeout_s=15)
    reading = fetch_one(source, target)
    assert reading.quality_of("kv_usage_frac") is Quality.PARTIAL
    assert reading.error == "1 of 2 pods reporting"
    # KV 0.2 on the one reporting pod would shrink 2 -> 1; the missing pod counts as busy
    decision, _ = decide(
        ScalingConfig(scale_down_stabilization_s=0),
        ScalerState(),
        Observation(ReplicaCounts(2, 2, 0), reading.signals),
        0.0,
    )
    assert (decision.replicas, decision.reason) == (2, reasons.METRICS_PARTIAL_HOLD)


def test_prometheus_stopped_mid_test_reads_missing_not_zero(
    start_pod: StartPod, start_prometheus: StartPrometheus
) -> None:
    pod = start_pod(VLLM_V1, namespace="team-a", llmd="chat", pod="chat-0").set_state(
        kv_usage=0.2, waiting=0
    )
    server = start_prometheus(list(iter_targets([pod])))
    target = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", 1)
    source = PrometheusSource(server.url, window_s=WINDOW_S, timeout_s=2)
    assert wait_until(
        lambda: fetch_one(source, target).quality_of("kv_usage_frac") is Quality.OK, timeout_s=15
    )

    server.stop()
    reading = fetch_one(source, target)
    assert reading.signals is None  # not a Signals full of zeros
    assert reading.error is not None and "unreachable" in reading.error
    assert all(
        reading.quality_of(name) is Quality.MISSING
        for name in ("kv_usage_frac", "num_requests_waiting")
    )
    assert source.queries_sent == 1  # the first refusal ends the cycle

    # the policy holds through the outage, then applies the declared fallback (as a floor)
    config = ScalingConfig(
        fallback_replicas=4, failed_reads_before_fallback=3, scale_down_stabilization_s=0
    )
    state, outcomes = ScalerState(), []
    for tick in range(3):
        observation = Observation(ReplicaCounts(2, 2, 0), fetch_one(source, target).signals)
        decision, state = decide(config, state, observation, float(tick))
        outcomes.append((decision.replicas, decision.reason))
    assert outcomes == [
        (2, reasons.METRICS_MISSING_HOLD),
        (2, reasons.METRICS_MISSING_HOLD),
        (4, reasons.FALLBACK),
    ]


def _make_tls_files(workdir: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not on PATH: cannot make a test certificate")
    cert, key = workdir / "ca.pem", workdir / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_custom_ca_verifies_tls(
    start_pod: StartPod, start_prometheus: StartPrometheus, tmp_path: Path
) -> None:
    cert, key = _make_tls_files(tmp_path)
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        json.dumps({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}})
    )
    pod = start_pod(VLLM_V1, namespace="team-a", llmd="chat", pod="chat-0").set_state(kv_usage=0.55)
    server = start_prometheus(list(iter_targets([pod])), web_config=web_config)
    target = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", 1)
    trusted = PrometheusSource(server.url, ca_file=str(cert), window_s=WINDOW_S, timeout_s=3)
    assert wait_until(
        lambda: fetch_one(trusted, target).quality_of("kv_usage_frac") is Quality.OK, timeout_s=15
    )
    signals = fetch_one(trusted, target).signals
    assert signals is not None and signals.kv_usage_frac == pytest.approx(0.55)
    untrusted = fetch_one(PrometheusSource(server.url, window_s=WINDOW_S, timeout_s=3), target)
    assert untrusted.signals is None
    assert untrusted.error is not None and "SSLError" in untrusted.error


class _TokenCheckingHandler(http.server.BaseHTTPRequestHandler):
    """Answers the Prometheus query API with an empty vector, only for the right bearer token."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer s3cret":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def token_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenCheckingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_bearer_token_is_sent(token_server: str, tmp_path: Path) -> None:
    target = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", 1)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    from_file = PrometheusSource(token_server, bearer_token_file=str(token_file), timeout_s=3)
    for source in (PrometheusSource(token_server, bearer_token="s3cret", timeout_s=3), from_file):
        reading = fetch_one(source, target)
        assert reading.signals is not None, reading.error  # authorised: an empty, valid answer
        assert reading.error == "no series for this deployment"
    token_file.write_text("rotated-and-wrong\n")  # a rotated token is picked up next cycle
    assert fetch_one(from_file, target).signals is None
    refused = fetch_one(PrometheusSource(token_server, bearer_token="wrong", timeout_s=3), target)
    assert refused.signals is None
    assert refused.error is not None and "401" in refused.error
