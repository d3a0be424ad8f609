"""Histograms the simulated engines keep: vLLM's bucket layouts, and a fine one for exact p95s.

The coarse histograms mirror what a real engine exports (so `/metrics` and the policy signals
carry the same quantisation error Prometheus' `histogram_quantile` has in production); the fine
log-spaced one is what the replay's reported `itlP95S` comes from (error well under 1 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# Bucket upper bounds (seconds) of vLLM's latency histograms (engines.md §1.3).
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FloatArray = npt.NDArray[np.float64]


class Histogram:
    """Per-bucket counts (last bucket is +Inf), running sum and count.

    Single observations are buffered and binned in one vectorised pass when the counts are
    read: the simulator observes millions of token gaps and a per-value numpy call dominated.
    """

    def __init__(self, bounds: Sequence[float] | FloatArray) -> None:
        self.bounds: FloatArray = np.asarray(bounds, dtype=np.float64)
        self._counts: FloatArray = np.zeros(len(bounds) + 1, dtype=np.float64)
        self._sum = 0.0
        self._count = 0.0
        self._pending: list[float] = []

    def observe(self, value: float) -> None:
        self._pending.append(value)
        if len(self._pending) >= 4096:
            self._flush()

    def observe_many(self, values: FloatArray, weight: float = 1.0) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        self._counts += np.bincount(idx, minlength=self._counts.size) * weight
        self._sum += float(values.sum()) * weight
        self._count += values.size * weight

    def _flush(self) -> None:
        if self._pending:
            values = np.asarray(self._pending, dtype=np.float64)
            self._pending = []
            self.observe_many(values)

    @property
    def counts(self) -> FloatArray:
        self._flush()
        return self._counts

    @property
    def sum(self) -> float:
        self._flush()
        return self._sum

    @property
    def count(self) -> float:
        self._flush()
        return self._count

    def cumulative(self) -> FloatArray:
        """Counts as Prometheus exposes them: `le` buckets, the last one being +Inf."""
        return np.cumsum(self.counts)


def estimate_histogram_quantile(q: float, bounds: FloatArray, counts: FloatArray) -> float | None:
    """Prometheus `histogram_quantile` on per-bucket (non-cumulative) counts.

    Linear interpolation inside the bucket, lower bound 0 for the first bucket, and the highest
    finite bound when the quantile falls in +Inf — the same rules Prometheus applies, so the
    policies see the error a real deployment sees. None when there are no observations.
    """
    total = float(counts.sum())
    if total <= 0:
        return None
    rank = q * total
    cum = np.cumsum(counts)
    idx = int(np.searchsorted(cum, rank, side="left"))
    if idx >= bounds.size:
        return float(bounds[-1])
    lower = 0.0 if idx == 0 else float(bounds[idx - 1])
    below = 0.0 if idx == 0 else float(cum[idx - 1])
    in_bucket = float(counts[idx])
    if in_bucket <= 0:
        return float(bounds[idx])
    return lower + (float(bounds[idx]) - lower) * (rank - below) / in_bucket


def build_fine_bounds_s(
    low_s: float = 1e-4, high_s: float = 1e4, per_decade: int = 200
) -> FloatArray:
    """Log-spaced bounds, ~1.2 % apart: fine enough that a p95 read from them is exact to ~1 %."""
    decades = math.log10(high_s / low_s)
    return np.logspace(math.log10(low_s), math.log10(high_s), int(decades * per_decade) + 1)


FINE_BOUNDS_S: FloatArray = build_fine_bounds_s()
