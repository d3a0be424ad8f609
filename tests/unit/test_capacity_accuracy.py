"""Gate: the planner reproduces real engine startup logs (bench/capacity_accuracy.py).

Mode (a) (layout, given the logged available KV memory) within 1 % on every gated V1 row;
end to end with samplerPath auto, leave one source out: median |err| <= 3 % and p90 <= 8 %
(the issue's targets, met). The issue's worst over-prediction, 2 %, is held on the releases
kvscale deploys (vLLM >= 0.9.0, where it is met); on all gated rows the worst over-prediction
may not grow past a ratchet above what the bench measures (+9.3 %, a vLLM ~0.3 start: the bench
prints the 2 % as missed there and docs/adr/0012 says which rows and why). Engines that failed
to start are predicted to fail. LOSO pools non-torch measurements only within one GPU link
class at TP > 1.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kvscale.capacity import PlanRequest, find_gpu, find_model

BENCH = Path(__file__).resolve().parents[2] / "bench" / "capacity_accuracy.py"
# The p90 target, and a ratchet at the worst over-prediction measured on the 84-row
# bench (+4.58 % since the legacy releases' reserved slack, ADR 0012 §12; lower it as the
# model improves).
LOSO_P90_TARGET = 0.08
LOSO_MAX_OVER_RATCHET = 0.05
# On the releases kvscale deploys (renders flags for: vLLM >= 0.9.0) the issue's own target:
# every row there is within it since the mxfp4 layout of ADR 0012 §10 (worst +1.92 %).
DEPLOYED_MAX_OVER_TARGET = 0.02


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


def _assert_within(summary: Any, max_over: float) -> None:
    """The issue's median and p90 targets, and a ratchet on the worst over-prediction."""
    assert summary.median_abs <= 0.03
    assert summary.p90_abs <= LOSO_P90_TARGET
    assert summary.max_over <= max_over


def test_end_to_end_leave_one_source_out(bench: ModuleType, results: list) -> None:
    loso = bench.sized_gated(bench.leave_one_source_out(results))
    assert len(loso) >= 60 and len({r.source for r in loso}) >= 10
    _assert_within(bench.summarise(loso), LOSO_MAX_OVER_RATCHET)


def test_loso_on_the_releases_kvscale_deploys(bench: ModuleType, results: list) -> None:
    loso = bench.sized_gated(bench.leave_one_source_out(results))
    deployed = [r for r in loso if r.renderable]
    assert 0 < len(deployed) < len(loso)  # V0 rows (< 0.9.0) are scored but not deployed
    _assert_within(bench.summarise(deployed), DEPLOYED_MAX_OVER_TARGET)


def test_loso_never_uses_the_held_out_sources_own_non_torch(
    bench: ModuleType, results: list
) -> None:
    # Moving one source's implied non-torch must not move that source's own LOSO predictions.
    source = "llm-d/llm-d-benchmark"
    shifted = [
        replace(r, implied_non_torch=r.implied_non_torch + 10 * 2**30)
        if r.source == source and r.implied_non_torch is not None
        else r
        for r in results
    ]
    before = {
        r.index: r.predicted for r in bench.leave_one_source_out(results) if r.source == source
    }
    after = {
        r.index: r.predicted for r in bench.leave_one_source_out(shifted) if r.source == source
    }
    assert before and before == after
    others = {
        r.index: r.predicted for r in bench.leave_one_source_out(shifted) if r.source != source
    }
    unshifted = {r.index: r.predicted for r in bench.leave_one_source_out(results)
                 if r.source != source}  # fmt: skip
    assert others != unshifted  # ... while the other sources' predictions do use it


def test_loso_does_not_pool_pcie_rows_into_nvlink_tp_classes(
    bench: ModuleType, results: list
) -> None:
    # Lines 83 (8x L40S) and 92 (2x L4) are PCIe TP > 1 starts; moving their implied non-torch
    # must not move any NVLink (H100) TP > 1 row's LOSO prediction.
    pcie_lines = {83, 92}
    shifted = [
        replace(r, implied_non_torch=r.implied_non_torch + 10 * 2**30)
        if r.index in pcie_lines and r.implied_non_torch is not None
        else r
        for r in results
    ]
    h100_tp = [r for r in bench.leave_one_source_out(results)
               if "H100" in r.label and not r.label.endswith("tp1")]  # fmt: skip
    assert len(h100_tp) >= 10
    after = {r.index: r.predicted for r in bench.leave_one_source_out(shifted)}
    assert {r.index: r.predicted for r in h100_tp} == {r.index: after[r.index] for r in h100_tp}


def test_non_torch_class_splits_tp_by_link_not_tp1(bench: ModuleType) -> None:
    model = find_model("Qwen/Qwen3-8B")

    def klass(gpu: str, tp: int) -> str:
        request = PlanRequest(model=model, gpu=find_gpu(gpu), engine_version="0.19.0",
                              tensor_parallel=tp)  # fmt: skip
        return str(bench._non_torch_class(request))

    assert klass("L4", 2) != klass("H100", 2) != klass("MI300X", 2) != klass("L4", 2)
    assert klass("L40S", 2) == klass("L4", 2)  # both PCIe-only NVIDIA cards
    assert klass("L4", 1) == klass("H100", 1)  # no peer traffic at TP 1


def test_mode_b_predicts_failed_starts(bench: ModuleType, results: list) -> None:
    failed = [r for r in bench.leave_one_source_out(results) if r.gated and r.observed < 0]
    assert failed, "the CSV has engines that failed to start"
    assert all(r.predicted <= 0 for r in failed)


def test_quick_mode_prints_the_summaries_only(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.main(["--quick"])
    out = capsys.readouterr().out
    assert "leave one source out (gated)" in out and "per path:" in out
    assert "== mode (a)" not in out  # no per-row table
