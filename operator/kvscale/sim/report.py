"""PNG plots and a summary of a replay comparison (`--report DIR`).

Imported only when a report is asked for: matplotlib is slow to import and needs no display
(the Agg backend is selected before pyplot is loaded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from kvscale.sim.replay import ReplayResult, TickSample
from kvscale.sim.traces import Trace

if TYPE_CHECKING:
    from kvscale.sim.setup import SimSetup

SampleValue = Callable[[TickSample], float | None]


def _minutes(samples: tuple[TickSample, ...]) -> list[float]:
    return [s.t_s / 60.0 for s in samples]


def _plot_series(
    ax: Any, results: Mapping[str, ReplayResult], value: SampleValue, *, step: bool = False
) -> None:
    for name, res in results.items():
        xs, ys = [], []
        for s in res.samples:
            v = value(s)
            if v is not None:
                xs.append(s.t_s / 60.0)
                ys.append(v)
        if step:
            ax.step(xs, ys, where="post", label=name, linewidth=1.2)
        else:
            ax.plot(xs, ys, label=name, linewidth=1.0)
    ax.set_xlabel("time (min)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_replicas(path: Path, results: Mapping[str, ReplayResult]) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    _plot_series(ax, results, lambda s: float(s.desired), step=True)
    ax.set_ylabel("replicas (desired)")
    first = next(iter(results.values()))
    load = ax.twinx()
    load.plot(_minutes(first.samples), [s.arrivals_per_s for s in first.samples], color="0.6",
              linewidth=0.8, alpha=0.7)  # fmt: skip
    load.set_ylabel("arrivals (req/s, grey)")
    ax.set_title("Replicas vs load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metric(
    path: Path, results: Mapping[str, ReplayResult], value: SampleValue, ylabel: str, title: str,
    *, log: bool = False,
) -> None:  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 4))
    _plot_series(ax, results, value)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cumulative_preemptions(res: ReplayResult) -> dict[float, float]:
    total = 0.0
    out: dict[float, float] = {}
    for s in res.samples:
        total += s.preemptions
        out[s.t_s] = total
    return out


def format_summary(
    trace: Trace, setup: SimSetup, results: Mapping[str, ReplayResult], static_n: int
) -> str:
    """Markdown: what ran, then one row per policy."""
    plan = setup.plan
    lines = [
        f"# kvscale replay: {trace.name} on {setup.name}",
        "",
        f"- trace: {len(trace):,} requests over {trace.duration_s / 60:.1f} min",
        f"- replica: {plan.request.model.name} on {plan.request.gpu.id} x{setup.gpus_per_replica},"
        f" {plan.num_blocks:,} KV blocks ({plan.kv_cache_tokens:,} tokens),"
        f" max_num_seqs {plan.max_num_seqs}, cold start {setup.cold_start_s:.0f} s",
        f"- SLO per request: TTFT ≤ {setup.slo.ttft_p95_s} s, mean ITL ≤ {setup.slo.itl_p95_s} s",
        f"- static baseline: {static_n} replicas (smallest fixed count meeting the SLO)",
        "",
        "| policy | GPU-h | SLO met | TTFT p95 s | ITL p95 ms | preemptions | rejected |"
        " scale events | peak replicas |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.gpu_hours:.2f} | {r.slo_attainment * 100:.2f} % | {r.ttft_p95_s:.3f} |"
            f" {r.itl_p95_s * 1000:.1f} | {r.preemptions} | {r.rejected} | {r.scale_events} |"
            f" {r.peak_replicas} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path,
    trace: Trace,
    setup: SimSetup,
    results: Mapping[str, ReplayResult],
    static_n: int,
) -> Path:
    """Write replicas.png, kv_usage.png, ttft_p95.png, preemptions.png, summary.md/.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_replicas(out_dir / "replicas.png", results)
    plot_metric(
        out_dir / "kv_usage.png", results, lambda s: s.kv_usage_frac,
        "mean KV-cache usage (0-1)", "KV-cache utilisation",
    )  # fmt: skip
    per_minute = {name: replace(r, samples=r.samples[3::4]) for name, r in results.items()}
    plot_metric(
        out_dir / "ttft_p95.png", per_minute, lambda s: s.ttft_p95_s,
        "TTFT p95 over the last minute (s)", "TTFT p95 per minute", log=True,
    )  # fmt: skip
    cumulative = {name: _cumulative_preemptions(r) for name, r in results.items()}
    _plot_preemptions(out_dir / "preemptions.png", cumulative)
    (out_dir / "summary.md").write_text(format_summary(trace, setup, results, static_n))
    payload = {name: r.to_json() for name, r in results.items()}
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    return out_dir


def _plot_preemptions(path: Path, cumulative: Mapping[str, dict[float, float]]) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, series in cumulative.items():
        ax.step([t / 60.0 for t in series], list(series.values()), where="post", label=name)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("preemptions (cumulative)")
    ax.set_title("Preemptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
