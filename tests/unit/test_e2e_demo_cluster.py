"""The pure parts of `make demo-cluster` (e2e/demo_cluster.py): the load profile it replays
and the live view's rows. The stack itself is the e2e suite's, exercised there."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def demo(e2e_importable: Path) -> ModuleType:
    import demo_cluster

    return demo_cluster


PROFILE = ((0.0, 1.0), (0.5, 3.0), (1.0, 0.0))


@pytest.mark.parametrize(
    ("elapsed_frac", "expected"),
    [(-0.1, 1.0), (0.0, 1.0), (0.25, 2.0), (0.5, 3.0), (0.75, 1.5), (1.0, 0.0), (1.4, 0.0)],
)
def test_load_multiplier_interpolates_the_profile(
    demo: ModuleType, elapsed_frac: float, expected: float
) -> None:
    assert demo.load_multiplier_at(elapsed_frac, PROFILE) == pytest.approx(expected)


def test_shipped_profile_rises_above_one_replica_and_ends_quiet(demo: ModuleType) -> None:
    rates = [demo.load_multiplier_at(i / 100, demo.RATE_PROFILE) for i in range(101)]
    peak_at = rates.index(max(rates))
    assert max(rates) > 0.5  # one L4 holds ~0.3x of the trace (demo run, 2026-11-22)
    assert 0.2 < peak_at / 100 < 0.8
    assert rates[-1] < rates[0] <= 0.5  # a quiet tail for the stabilisation window


def row(demo: ModuleType, desired: int, kv: float | None, message: str = "") -> object:
    return demo.Row(10.0, 1.2, 50, 40, 1, desired, desired, kv, None, "KvDemand", message)


def test_row_shows_missing_signals_as_dashes_and_fits_the_width(demo: ModuleType) -> None:
    line = demo.format_row(row(demo, 2, None, "x" * 300), width=80)
    assert len(line) == 80 and line.endswith("…")
    fields = line.split()
    assert fields[5:8] == ["2/2", "rdy", "-"]  # replicas, then KV util missing


def test_summary_counts_replica_changes_and_peak(demo: ModuleType) -> None:
    rows = [row(demo, n, 0.5) for n in (1, 1, 3, 3, 2, 1)]
    assert demo.summarize(rows).startswith("replicas 1 -> peak 3 -> 1 (3 changes seen)")
