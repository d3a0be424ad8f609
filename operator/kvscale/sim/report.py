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
from matplotlib.ticker import MaxNLocator

from kvscale.sim.replay import ReplayResult, TickSample
from kvscale.sim.traces import Trace

if TYPE_CHECKING:
    from kvscale.sim.setup import SimSetup

SampleValue = Callable[[TickSample], float | None]


STYLES = (("-", 2.2), ("--", 1.8), (":", 2.2), ("-.", 1.6), ((0, (5, 1, 1, 1)), 1.4))


def _style(index: int) -> dict[str, Any]:
    """A distinct colour, dash pattern and width per policy, so no line hides another."""
    dash, width = STYLES[index % len(STYLES)]
    return {"color": f"C{index}", "linestyle": dash, "linewidth": width}


def _minutes(samples: tuple[TickSample, ...]) -> list[float]:
    return [s.t_s / 60.0 for s in samples]


def _label(name: str, result: ReplayResult) -> str:
    """The policy with the table's totals (the same numbers the table prints)."""
    return f"{name}: {result.gpu_hours:.2f} GPU-h, {result.slo_attainment * 100:.2f} % SLO"


def _time_axis(ax: Any, warmup_s: float) -> None:
    note = f" (after a {warmup_s / 60:g}-min pre-roll, not scored)" if warmup_s > 0 else ""
    ax.set_xlabel(f"time (min){note}")


def _plot_series(
    ax: Any, results: Mapping[str, ReplayResult], value: SampleValue, warmup_s: float
) -> None:
    for index, (name, res) in enumerate(results.items()):
        xs, ys = [], []
        for s in res.samples:
            v = value(s)
            if v is not None:
                xs.append(s.t_s / 60.0)
                ys.append(v)
        ax.plot(xs, ys, label=_label(name, res), **_style(index))
    _time_axis(ax, warmup_s)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_replicas(path: Path, results: Mapping[str, ReplayResult], warmup_s: float = 0.0) -> None:
    """One panel per policy (shared axes): replicas as integer steps over the arrival rate."""
    fig, axes = plt.subplots(
        len(results), 1, figsize=(10, 1.9 * len(results) + 0.8), sharex=True, sharey=True,
        squeeze=False,
    )  # fmt: skip
    top = max((s.desired for r in results.values() for s in r.samples), default=1)
    for index, (name, res) in enumerate(results.items()):
        ax = axes[index][0]
        load = ax.twinx()
        load.fill_between(_minutes(res.samples), [s.arrivals_per_s for s in res.samples],
                          step="post", color="0.85", linewidth=0)  # fmt: skip
        load.set_ylabel("req/s", fontsize=8, color="0.45")
        load.tick_params(labelsize=7, colors="0.45")
        ax.set_zorder(load.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.step(_minutes(res.samples), [s.desired for s in res.samples], where="post",
                label=_label(name, res), **_style(index))  # fmt: skip
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, top + 1)
        ax.set_ylabel("replicas")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    _time_axis(axes[-1][0], warmup_s)
    fig.suptitle("Replicas per policy (steps) over the arrival rate (grey)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metric(
    path: Path, results: Mapping[str, ReplayResult], value: SampleValue, ylabel: str, title: str,
    *, log: bool = False, limit: float | None = None, limit_label: str = "",
    warmup_s: float = 0.0,
) -> None:  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 4))
    if limit is not None:
        ax.axhline(limit, color="black", linewidth=1.0, linestyle=(0, (2, 2)), label=limit_label)
    _plot_series(ax, results, value, warmup_s)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        f"- static baseline: {static_n} replica{'' if static_n == 1 else 's'}"
        " (smallest fixed count meeting the SLO)",
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
    *,
    warmup_s: float = 0.0,
) -> Path:
    """Write replicas.png, kv_usage.png, ttft_p95.png, preemptions.png, summary.md/.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_replicas(out_dir / "replicas.png", results, warmup_s)
    plot_metric(
        out_dir / "kv_usage.png", results, lambda s: s.kv_usage_frac,
        "mean KV-cache usage (0-1)", "KV-cache utilisation",
        limit=setup.scaling.target_kv_utilization_frac, limit_label="kvscale's KV target",
        warmup_s=warmup_s,
    )  # fmt: skip
    per_minute = {name: replace(r, samples=r.samples[3::4]) for name, r in results.items()}
    plot_metric(
        out_dir / "ttft_p95.png", per_minute, lambda s: s.ttft_p95_s,
        "TTFT p95 over the last minute (s)", "TTFT p95 per minute", log=True,
        limit=setup.slo.ttft_p95_s, limit_label="SLO: TTFT target", warmup_s=warmup_s,
    )  # fmt: skip
    _plot_preemptions(out_dir / "preemptions.png", results, warmup_s)
    (out_dir / "summary.md").write_text(format_summary(trace, setup, results, static_n))
    payload = {name: r.to_json() for name, r in results.items()}
    (out_dir / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    return out_dir


def _plot_preemptions(path: Path, results: Mapping[str, ReplayResult], warmup_s: float) -> None:
    """Cumulative preemptions from minute 0; the legend gives the table's total (which also
    counts those while the last requests drain after the trace ends)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for index, (name, res) in enumerate(results.items()):
        total, xs, ys = 0, [0.0], [0]
        for sample in res.samples[1:]:  # the first sample's count is from before minute 0
            total += sample.preemptions
            xs.append(sample.t_s / 60.0)
            ys.append(total)
        label = f"{name}: {res.preemptions} preemptions"
        ax.step(xs, ys, where="post", label=label, **_style(index))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _time_axis(ax, warmup_s)
    ax.set_ylabel("preemptions (cumulative)")
    ax.set_title("Preemptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
