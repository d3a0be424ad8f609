"""The simulated engine server over real HTTP (aiohttp test server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from kvscale.sim.server import SimServer, build_server, main

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _argv(engine: str, version: str, *engine_args: str, time_scale: float = 1.0) -> list[str]:
    return [
        "--engine", engine, "--engine-version", version, "--time-scale", str(time_scale),
        "--sim-gpu", "h100_sxm_80gb", "--", *engine_args,
    ]  # fmt: skip


async def _client(argv: list[str]) -> AsyncIterator[tuple[SimServer, TestClient]]:
    server, _ = build_server(argv)
    client = TestClient(TestServer(server.build_app(), host="127.0.0.1"))
    await client.start_server()
    try:
        yield server, client
    finally:
        await client.close()


async def _metrics(client: TestClient) -> dict[str, tuple[str, dict[str, float]]]:
    """family name -> (type, {sample name: value}) for the unlabelled-by-le samples."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for fam in text_string_to_metric_families(text):
        samples = {s.name: s.value for s in fam.samples if "le" not in s.labels}
        out[fam.name] = (fam.type, samples)
    return out


@pytest.mark.parametrize(
    ("engine", "version", "args", "kv_name", "preempt_family"),
    [
        ("vllm", "0.11.0", ["vllm", "serve", MODEL, "--max-model-len", "8192"],
         "vllm:kv_cache_usage_perc", "vllm:num_preemptions"),
        ("vllm", "0.10.2", ["--model", MODEL, "--max-model-len", "8192"],
         "vllm:gpu_cache_usage_perc", "vllm:num_preemptions"),
        ("sglang", "0.5.23", ["--model-path", MODEL, "--context-length", "8192"],
         "sglang:token_usage", "sglang:num_retracted_requests"),
    ],
)  # fmt: skip
async def test_metrics_parse_and_carry_the_versions_names(
    engine: str, version: str, args: list[str], kv_name: str, preempt_family: str
) -> None:
    async for _server, client in _client(_argv(engine, version, *args)):
        families = await _metrics(client)
        assert families[kv_name][0] == "gauge"
        kind, samples = families[preempt_family]
        assert kind == "counter" and f"{preempt_family}_total" in samples
        ttft = f"{engine}:time_to_first_token_seconds"
        assert families[ttft][0] == "histogram"
        assert {f"{ttft}_count", f"{ttft}_sum"} <= set(families[ttft][1])


@pytest.mark.parametrize(("util", "more_blocks_than_half"), [("0.9", True), ("0.5", False)])
async def test_gpu_memory_utilization_flag_sizes_the_pool(
    util: str, more_blocks_than_half: bool
) -> None:
    argv = _argv("vllm", "0.11.0", "vllm", "serve", MODEL, "--gpu-memory-utilization", util)
    async for server, client in _client(argv):
        resp = await client.get("/metrics")
        info = next(
            fam for fam in text_string_to_metric_families(await resp.text())
            if fam.name == "vllm:cache_config_info"
        )  # fmt: skip
        blocks = int(info.samples[0].labels["num_gpu_blocks"])
        assert blocks == server.plan.num_blocks == server.engine.pool.num_blocks
        assert (blocks > 20000) is more_blocks_than_half


async def test_completion_non_streaming_returns_max_tokens() -> None:
    argv = _argv("vllm", "0.11.0", "vllm", "serve", MODEL, time_scale=20.0)
    async for _server, client in _client(argv):
        resp = await client.post("/v1/completions", json={"prompt": [1] * 300, "max_tokens": 7})
        assert resp.status == 200
        body = await resp.json()
        assert body["usage"] == {"prompt_tokens": 300, "completion_tokens": 7, "total_tokens": 307}
        assert body["choices"][0]["finish_reason"] == "length"
        families = await _metrics(client)
        assert families["vllm:generation_tokens"][1]["vllm:generation_tokens_total"] == 7


async def test_completion_streams_one_event_per_token() -> None:
    argv = _argv("vllm", "0.11.0", "vllm", "serve", MODEL, time_scale=20.0)
    async for _server, client in _client(argv):
        resp = await client.post(
            "/v1/completions", json={"prompt": "x" * 400, "max_tokens": 5, "stream": True}
        )
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in (await resp.text()).split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert len(chunks) == 5
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]


async def test_prompt_longer_than_max_model_len_is_refused() -> None:
    argv = _argv("vllm", "0.11.0", "vllm", "serve", MODEL, "--max-model-len", "1024")
    async for _server, client in _client(argv):
        resp = await client.post("/v1/completions", json={"prompt": [1] * 2000, "max_tokens": 5})
        assert resp.status == 400
        assert "1024" in (await resp.json())["message"]


@pytest.mark.parametrize(("max_num_seqs", "running", "waiting"), [("1", 1, 1), ("2", 2, 0)])
async def test_max_num_seqs_makes_the_second_request_wait(
    max_num_seqs: str, running: int, waiting: int
) -> None:
    argv = _argv("vllm", "0.11.0", "vllm", "serve", MODEL, "--max-num-seqs", max_num_seqs)
    async for _server, client in _client(argv):
        body = {"prompt": [1] * 100, "max_tokens": 150}
        tasks = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(2)]
        seen = None
        for _ in range(100):
            await asyncio.sleep(0.02)
            fam = await _metrics(client)
            now = (
                fam["vllm:num_requests_running"][1]["vllm:num_requests_running"],
                fam["vllm:num_requests_waiting"][1]["vllm:num_requests_waiting"],
            )
            if sum(now) == 2:
                seen = now
                break
        assert seen == (running, waiting)
        for task in tasks:
            (await task).close()


def test_a_model_outside_the_catalog_is_planned_from_its_config(tmp_path: Path) -> None:
    catalog = resources.files("kvscale") / "data" / "catalog" / "models" / "Qwen__Qwen3-8B.json"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(json.loads(catalog.read_text())["config"]))
    argv = ["--sim-model-config", str(config), "--", "vllm", "serve", "my-org/custom"]
    server, _ = build_server([*argv[:2], *_argv("vllm", "0.11.0", *argv[3:])])
    assert server.args.served_model_name == "my-org/custom"
    assert server.engine.pool.num_blocks == server.plan.num_blocks > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--", "vllm", "serve", "no/such-model"],
        ["--engine", "sglang", "--", "--context-length", "9"],
    ],
)
def test_unusable_engine_args_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("kvscale.sim.server: ")
