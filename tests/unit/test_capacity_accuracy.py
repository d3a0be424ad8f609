"""Gate: the planner reproduces real engine startup logs (bench/capacity_accuracy.py).

Mode (a) (layout, given the logged available KV memory) within 1 % on every gated V1 row;
mode (b) (end to end) median |err| <= 5 %, p90 <= 15 %, no over-prediction above 5 %, and
engines that failed to start are predicted to fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "capacity_accuracy.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity_accuracy", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity_accuracy"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench: ModuleType) -> list:
    rows, _ = bench.evaluate()
    return rows


def test_mode_a_every_gated_v1_row_within_1_percent(results: list) -> None:
    gated = [r for r in results if r.mode == "a" and r.gated]
    assert len(gated) >= 10  # the gate must actually cover rows
    misses = [(r.label, r.measure, round(r.rel_err, 4)) for r in gated if abs(r.rel_err) > 0.01]
    assert misses == []


def test_mode_a_reproduces_gpt_oss_hybrid_log(results: list) -> None:
    rows = {r.measure: r for r in results if r.mode == "a" and "gpt-oss-120b A100" in r.label}
    assert rows["concurrency"].observed == 284.25
    assert abs(rows["concurrency"].predicted - 284.25) < 0.01
    assert abs(rows["tokens"].predicted - 2_640_144) / 2_640_144 < 0.0001


def test_mode_b_error_targets(bench: ModuleType, results: list) -> None:
    sized = [r for r in results if r.mode == "b" and r.gated and r.observed > 0]
    assert len(sized) >= 15
    summary = bench.summarise(sized)
    assert summary.median_abs <= 0.05
    assert summary.p90_abs <= 0.15
    assert summary.max_over <= 0.05


def test_mode_b_predicts_failed_starts(results: list) -> None:
    failed = [r for r in results if r.mode == "b" and r.gated and r.observed < 0]
    assert failed, "the CSV has engines that failed to start"
    assert all(r.predicted <= 0 for r in failed)


def test_bench_gate_reports_no_missed_target(bench: ModuleType, results: list) -> None:
    assert bench.failed_targets(results) == []
