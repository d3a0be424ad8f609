"""Trace loaders: Azure LLM inference 2023 (CSV), Mooncake (JSONL), ServeGen (rates only).

A `Trace` is columnar (numpy) so slicing and scaling a 19k-request hour costs milliseconds.
Arrival times are seconds from the start of the trace. Time scaling compresses the timeline
(rate and burstiness up, duration down); rate scaling keeps the timeline and thins (< 1) or
superposes time-shifted copies (> 1) of the requests.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

FORMATS: tuple[str, ...] = ("azure", "mooncake", "servegen")
SERVEGEN_WINDOW_S = 600.0
_HASH_COPY_STRIDE = 1 << 40  # hash namespace of a superposed copy (no fake prefix sharing)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival; `hashes[i]` are request i's 512-token prefix block ids."""

    name: str
    arrival_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    hashes: tuple[tuple[int, ...], ...] | None = None
    hash_block_tokens: int = 512

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0


def default_azure_path(kind: str = "conv") -> Path:
    """The Azure 2023 trace shipped as package data (`conv` or `code`)."""
    root = resources.files("kvscale") / "data" / "traces" / "azure2023"
    return Path(str(root / f"AzureLLMInferenceTrace_{kind}.csv"))


def detect_format(path: Path) -> str:
    """azure | mooncake | servegen, from the suffix and the first line."""
    try:
        with path.open() as fh:
            head = fh.readline().strip()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from exc
    if head.startswith("{"):
        return "mooncake"
    if head.upper().startswith("TIMESTAMP"):
        return "azure"
    if head.startswith("window_start_s"):
        return "servegen"
    raise TraceError(f"{path}: unknown trace format; pass --trace-format azure|mooncake|servegen")


def load_azure(path: Path) -> Trace:
    """Azure 2023 CSV: wall-clock TIMESTAMP, ContextTokens, GeneratedTokens."""
    stamps: list[str] = []
    prompts: list[int] = []
    outputs: list[int] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            stamps.append(row["TIMESTAMP"].strip().replace(" ", "T"))
            prompts.append(int(row["ContextTokens"]))
            outputs.append(int(row["GeneratedTokens"]))
    if not stamps:
        raise TraceError(f"{path}: no requests")
    ns = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    arrival = (ns - ns.min()) / 1e9
    return _sorted_trace(path.stem, arrival, prompts, outputs, None)


def load_mooncake(path: Path) -> Trace:
    """Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids."""
    arrival: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    hashes: list[tuple[int, ...]] = []
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            arrival.append(float(rec["timestamp"]) / 1000.0)
            prompts.append(int(rec["input_length"]))
            outputs.append(int(rec["output_length"]))
            hashes.append(tuple(int(h) for h in rec.get("hash_ids", ())))
    if not arrival:
        raise TraceError(f"{path}: no requests")
    arr = np.asarray(arrival)
    return _sorted_trace(path.stem, arr - arr.min(), prompts, outputs, hashes)


def load_servegen_rates(path: Path) -> tuple[FloatArray, FloatArray]:
    """(window start s, rate req/s) with windows whose rate is 0 marked missing (NaN)."""
    starts: list[float] = []
    rates: list[float] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            starts.append(float(row["window_start_s"]))
            rate = float(row["total_rate_rps"])
            rates.append(rate if rate > 0 else math.nan)
    if not starts:
        raise TraceError(f"{path}: no windows")
    return np.asarray(starts), np.asarray(rates)


def fill_missing_rates(rates: FloatArray) -> FloatArray:
    """Missing windows (gaps in the data, not idle time) take the line between neighbours."""
    idx = np.arange(rates.size)
    known = ~np.isnan(rates)
    if not known.any():
        raise TraceError("every ServeGen window is missing")
    return np.interp(idx, idx[known], rates[known])


def generate_servegen(
    path: Path,
    lengths: Trace,
    *,
    start_s: float = 0.0,
    duration_s: float = 86400.0,
    rate_scale: float = 1.0,
    seed: int = 0,
) -> Trace:
    """Poisson arrivals at each 10-minute window's rate; (prompt, output) pairs drawn jointly
    from another trace. Prefix hashes are dropped (the rate series says nothing about reuse)."""
    starts, raw = load_servegen_rates(path)
    rates = fill_missing_rates(raw) * rate_scale
    rng = np.random.default_rng(seed)
    times: list[FloatArray] = []
    end_s = start_s + duration_s
    for w_start, rate in zip(starts.tolist(), rates.tolist(), strict=True):
        lo, hi = max(w_start, start_s), min(w_start + SERVEGEN_WINDOW_S, end_s)
        if hi <= lo or rate <= 0:
            continue
        n = int(rng.poisson(rate * (hi - lo)))
        times.append(np.sort(rng.uniform(lo, hi, n)))
    arrival = np.concatenate(times) - start_s if times else np.zeros(0)
    if arrival.size == 0:
        raise TraceError(f"{path}: no arrivals in [{start_s}, {end_s}) s")
    pick = rng.integers(0, len(lengths), arrival.size)
    return Trace(
        name=f"{path.stem}+{lengths.name}",
        arrival_s=arrival,
        prompt_tokens=lengths.prompt_tokens[pick],
        output_tokens=lengths.output_tokens[pick],
    )


def load_trace(
    path: Path, fmt: str | None = None, lengths_from: Path | None = None, seed: int = 0
) -> Trace:
    """Load any supported trace; ServeGen needs `lengths_from` (an Azure or Mooncake file)."""
    fmt = fmt or detect_format(path)
    if fmt == "azure":
        return load_azure(path)
    if fmt == "mooncake":
        return load_mooncake(path)
    if fmt == "servegen":
        if lengths_from is None:
            raise TraceError(f"{path}: ServeGen has rates only; pass --lengths-from an Azure file")
        lengths = load_trace(lengths_from, None, None, seed)
        return generate_servegen(path, lengths, seed=seed)
    raise TraceError(f"{path}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def slice_trace(trace: Trace, start_s: float, duration_s: float | None) -> Trace:
    """Requests arriving in [start, start+duration), re-based to start at 0."""
    end = math.inf if duration_s is None else start_s + duration_s
    mask = (trace.arrival_s >= start_s) & (trace.arrival_s < end)
    return _select(trace, mask, trace.arrival_s[mask] - start_s)


def scale_trace(
    trace: Trace, time_scale: float = 1.0, rate_scale: float = 1.0, seed: int = 0
) -> Trace:
    """`time_scale` > 1 plays the trace faster; `rate_scale` thins or superposes copies."""
    if time_scale <= 0 or rate_scale <= 0:
        raise TraceError("time and rate scales must be > 0")
    out = replace(trace, arrival_s=trace.arrival_s / time_scale) if time_scale != 1.0 else trace
    if rate_scale == 1.0:
        return out
    rng = np.random.default_rng(seed)
    whole = int(rate_scale)
    frac = rate_scale - whole
    duration = max(out.duration_s, 1e-9)
    parts: list[Trace] = []
    for copy in range(whole + (1 if frac > 0 else 0)):
        keep = np.ones(len(out), bool) if copy < whole else rng.random(len(out)) < frac
        shift = duration * copy / max(1.0, rate_scale)  # copies start at other phases
        arrival = (out.arrival_s[keep] + shift) % duration
        hashes = None
        if out.hashes is not None:
            off = copy * _HASH_COPY_STRIDE
            hashes = tuple(
                tuple(h + off for h in hs) for hs, k in zip(out.hashes, keep, strict=True) if k
            )
        parts.append(_select(out, keep, arrival, hashes))
    return _concat(parts, out.name)


def ramp_trace(trace: Trace, points: Sequence[tuple[float, float]], seed: int = 0) -> Trace:
    """The trace with its rate multiplied by a piecewise-linear factor of time.

    `points` are (time_s, factor) corners, e.g. ((0, 1), (600, 8), (1200, 1)) for 1x -> 8x ->
    1x in 20 minutes; the factor is held flat beyond the first and last corner. The trace is
    superposed up to the largest factor (time-shifted copies, as `scale_trace` does) and each
    request is kept with probability factor(t) / largest factor.
    """
    if not points or any(factor <= 0 for _, factor in points):
        raise TraceError("ramp: need (time_s, factor > 0) points")
    corners_s = np.array([t for t, _ in points], dtype=float)
    factors = np.array([f for _, f in points], dtype=float)
    peak = float(factors.max())
    out = scale_trace(trace, 1.0, peak, seed)
    rng = np.random.default_rng(seed + 1)
    keep = rng.random(len(out)) < np.interp(out.arrival_s, corners_s, factors) / peak
    return _select(out, keep, out.arrival_s[keep])


def _select(
    trace: Trace,
    mask: npt.NDArray[np.bool_],
    arrival: FloatArray,
    hashes: tuple[tuple[int, ...], ...] | None = None,
) -> Trace:
    if hashes is None and trace.hashes is not None:
        hashes = tuple(h for h, k in zip(trace.hashes, mask, strict=True) if k)
    return replace(
        trace,
        arrival_s=arrival,
        prompt_tokens=trace.prompt_tokens[mask],
        output_tokens=trace.output_tokens[mask],
        hashes=hashes,
    )


def _concat(parts: Sequence[Trace], name: str) -> Trace:
    arrival = np.concatenate([p.arrival_s for p in parts])
    hashes = None
    if all(p.hashes is not None for p in parts):
        hashes = [h for p in parts for h in (p.hashes or ())]
    return _sorted_trace(
        name,
        arrival,
        np.concatenate([p.prompt_tokens for p in parts]).tolist(),
        np.concatenate([p.output_tokens for p in parts]).tolist(),
        hashes,
    )


def _sorted_trace(
    name: str,
    arrival: FloatArray,
    prompts: Sequence[int],
    outputs: Sequence[int],
    hashes: Sequence[tuple[int, ...]] | None,
) -> Trace:
    order = np.argsort(arrival, kind="stable")
    return Trace(
        name=name,
        arrival_s=np.asarray(arrival, dtype=np.float64)[order],
        prompt_tokens=np.asarray(prompts, dtype=np.int64)[order],
        output_tokens=np.asarray(outputs, dtype=np.int64)[order],
        hashes=None if hashes is None else tuple(hashes[i] for i in order.tolist()),
    )
