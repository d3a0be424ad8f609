"""Trace loaders on small slices: timestamps, hash ids, ServeGen gaps, scaling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kvscale.sim.engine import EngineConfig, EngineSim, SimRequest
from kvscale.sim.traces import (
    TraceError,
    default_azure_path,
    detect_format,
    fill_missing_rates,
    generate_servegen,
    load_azure,
    load_mooncake,
    load_servegen_rates,
    scale_trace,
    slice_trace,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_timestamps_become_seconds_from_the_first_request(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "az.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:46.1805900,10,1\n"  # out of order: sorted on load
        "2023-11-16 18:16:50.9951690,396,109\n",
    )
    trace = load_azure(path)
    assert trace.arrival_s.tolist() == pytest.approx([0.0, 0.5, 64.814579])
    assert trace.prompt_tokens.tolist() == [10, 374, 396]
    assert trace.output_tokens.tolist() == [1, 44, 109]


def test_embedded_azure_conv_trace_loads() -> None:
    trace = load_azure(default_azure_path("conv"))
    assert len(trace) == 19366
    assert 3400 < trace.duration_s < 3600


@pytest.mark.parametrize(
    ("first_line", "fmt"),
    [
        ("TIMESTAMP,ContextTokens,GeneratedTokens", "azure"),
        ('{"timestamp": 0, "input_length": 1}', "mooncake"),
        ("window_start_s,total_rate_rps,active_clients", "servegen"),
    ],
)
def test_format_is_detected_from_the_first_line(tmp_path: Path, first_line: str, fmt: str) -> None:
    assert detect_format(_write(tmp_path, "t", first_line + "\n")) == fmt


def test_unknown_format_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="--trace-format"):
        detect_format(_write(tmp_path, "t", "a,b,c\n"))


def test_mooncake_hash_ids_give_prefix_cache_hits(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 2048, "output_length": 4, "hash_ids": [7, 8, 9, 10]},
        {"timestamp": 5000, "input_length": 2048, "output_length": 4, "hash_ids": [7, 8, 11, 12]},
        {"timestamp": 6000, "input_length": 2048, "output_length": 4, "hash_ids": [20, 21, 22, 23]},
    ]
    path = _write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    trace = load_mooncake(path)
    assert trace.arrival_s.tolist() == [0.0, 5.0, 6.0]
    assert trace.hashes == ((7, 8, 9, 10), (7, 8, 11, 12), (20, 21, 22, 23))
    config = EngineConfig(
        num_blocks=2000, block_size_tokens=16, max_num_seqs=8, max_num_batched_tokens=8192,
        max_model_len_tokens=8192, step_time_s=lambda p, d, c: 0.01 + p * 1e-5,
        blocks_for_tokens=lambda t: -(-t // 16),
    )  # fmt: skip
    engine = EngineSim(config)
    reqs = []
    for i in range(len(trace)):
        req = SimRequest(i, float(trace.arrival_s[i]), 2048, 4, trace.hashes[i])
        engine.run_until(req.arrival_s)
        engine.add_request(req)
        reqs.append(req)
    engine.run_until(math.inf)
    assert engine.pool.hit_hashes == 2  # request 1 reuses 7, 8; request 2 shares nothing
    ttfts = [r.ttft_s for r in reqs]
    assert ttfts[1] == pytest.approx(0.01 + (2048 - 1024) * 1e-5)
    assert ttfts[2] == pytest.approx(0.01 + 2048 * 1e-5)


def test_servegen_zero_windows_are_missing_not_idle(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "sg.csv",
        "window_start_s,total_rate_rps,active_clients\n0,10,1\n600,0,0\n1200,30,1\n",
    )
    _starts, rates = load_servegen_rates(path)
    assert math.isnan(rates[1])
    assert fill_missing_rates(rates).tolist() == [10.0, 20.0, 30.0]
    lengths = load_azure(default_azure_path("code"))
    trace = generate_servegen(path, lengths, duration_s=1800.0, seed=3)
    per_window = np.histogram(trace.arrival_s, bins=[0, 600, 1200, 1800])[0]
    assert per_window[1] > 0.8 * 20 * 600  # the gap window is filled, not empty
    assert per_window.tolist() == pytest.approx([6000, 12000, 18000], rel=0.05)


def test_servegen_all_zero_is_an_error() -> None:
    with pytest.raises(TraceError):
        fill_missing_rates(np.array([math.nan, math.nan]))


@pytest.mark.parametrize(
    ("time_scale", "rate_scale"), [(2.0, 1.0), (1.0, 2.0), (1.0, 0.5), (1.0, 2.5)]
)
def test_time_and_rate_scaling(time_scale: float, rate_scale: float) -> None:
    base = slice_trace(load_azure(default_azure_path("conv")), 0.0, 600.0)
    scaled = scale_trace(base, time_scale, rate_scale, seed=1)
    assert len(scaled) == pytest.approx(len(base) * rate_scale, rel=0.05)
    assert scaled.duration_s == pytest.approx(base.duration_s / time_scale, rel=0.01)
    assert np.all(np.diff(scaled.arrival_s) >= 0)
