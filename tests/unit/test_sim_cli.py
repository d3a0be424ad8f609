"""`kvscale simulate` and `kvscale demo` on tiny windows (contract shape, errors, report files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvscale.cli import main

CONTRACT_KEYS = {
    "gpuHours", "sloAttainment", "ttftP95S", "itlP95S", "preemptions", "rejected",
    "scaleEvents", "peakReplicas",
}  # fmt: skip
FAST = ["--duration", "60", "--warmup", "0", "--static-replicas", "1", "--no-progress"]


def test_simulate_prints_one_json_object_keyed_by_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["simulate", *FAST, "--policy", "kvscale,static,queue,kv-threshold", "-o", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["kvscale", "static", "queue", "kv-threshold"]
    assert all(set(v) == CONTRACT_KEYS for v in out.values())
    assert out["static"]["peakReplicas"] == 1
    assert 0.0 <= out["kvscale"]["sloAttainment"] <= 1.0


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--policy", "hpa"], "--policy"),
        (["--trace", "no-such-file.csv"], "--trace"),
        (["--deployment", "no-such.yaml"], "--deployment"),
        (["--start", "999999"], "--start"),
    ],
)
def test_simulate_bad_input_is_one_line_naming_the_flag(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *FAST, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_servegen_needs_lengths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "rates.csv"
    trace.write_text("window_start_s,total_rate_rps,active_clients\n0,1,1\n")
    assert main(["simulate", *FAST, "--trace", str(trace)]) == 2
    assert "--lengths-from" in capsys.readouterr().err


def test_demo_writes_plots_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", *FAST, "--duration", "30", "--peak", "2", "--report", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "KV cache" in out and str(tmp_path) in out
    assert "SLO: a request meets it when its TTFT is within" in out
    assert "static = 1 replica (" in out  # one replica, not "1 replicas"
    assert all(f"- {name}: " in out for name in ("kvscale", "static", "queue", "kv-threshold"))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"replicas.png", "kv_usage.png", "ttft_p95.png", "preemptions.png"} <= names
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"kvscale", "static", "queue", "kv-threshold"}
