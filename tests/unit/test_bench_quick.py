"""Every benchmark takes `--quick` (its smoke size), which `make bench-quick` runs in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
# A benchmark is a script (it runs as __main__); bench/observations.py and the like are modules.
BENCHES = sorted(p for p in BENCH_DIR.glob("*.py") if "__main__" in p.read_text())


def test_there_are_benchmarks_to_check() -> None:
    assert len(BENCHES) >= 3


@pytest.mark.parametrize("bench", BENCHES, ids=[b.stem for b in BENCHES])
def test_each_benchmark_accepts_quick(bench: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(bench), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_make_bench_quick_runs_every_benchmark_with_quick() -> None:
    makefile = (BENCH_DIR.parent / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nbench-quick:", 1)[1].split("\n\n", 1)[0]
    # the same selection as BENCHES: every script under bench/ that runs as __main__
    assert "grep -l '__main__' bench/*.py" in recipe and "$$bench --quick" in recipe
