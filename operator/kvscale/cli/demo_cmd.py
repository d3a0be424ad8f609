"""`kvscale demo`: plan the packaged deployment, replay a rising and falling load under every
policy, print the comparison with why each policy lands where it does, and write plots. Needs
no cluster, no GPU and no network.

The load is the Azure conversation trace at its native rate (~5.5 req/s, which one H100 serves
alone), ramped to 8x over 10 minutes and back over 10 (superposed, time-shifted copies), with 5
flat minutes before and after: the case where a fixed count pays for the peak all along and a
reactive autoscaler arrives late.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from kvscale.capacity.roofline import prefill_capacity_tokens_per_s
from kvscale.cli.common import finite_float
from kvscale.cli.simulate_cmd import (
    LoadedDeployment,
    add_replay_arguments,
    format_table,
    load_deployment,
    parse_policies,
    replay_from_args,
)
from kvscale.sim.replay import ReplayResult
from kvscale.sim.traces import Trace, default_azure_path, load_azure, ramp_trace, slice_trace

SLO_TARGET_FRAC = 0.99  # the share of requests the SLO is met for (the static sizing's target)

DEFAULT_REPORT_DIR = "kvscale-demo-report"


def describe_plan(loaded: LoadedDeployment) -> str:
    setup = loaded.setup
    plan = setup.plan
    req = plan.request
    safe = setup.scaling.safe_concurrency_per_replica
    lines = [
        f"deployment  {setup.name}: {req.model.name}, {req.engine} {req.engine_version},"
        f" max context {req.max_model_len_tokens:,} tokens",
        f"GPU         {loaded.selection_reason}",
        f"KV cache    {plan.kv_bytes_per_token:,} B/token,"
        f" {plan.available_kv_bytes / 2**30:.1f} GiB"
        f" -> {plan.num_blocks:,} blocks x {plan.block_size_tokens} = {plan.kv_cache_tokens:,}"
        f" tokens ({plan.max_concurrency:.1f}x max-length requests)",
        f"concurrency safe {safe:g} requests/replica within the SLO"
        if safe is not None
        else "concurrency (no SLO bound)",
        f"prefill     ~{prefill_capacity_tokens_per_s(plan):,.0f} prompt tokens/s per replica"
        f" ({plan.max_num_batched_tokens:,}-token chunks, roofline)",
        f"SLO         TTFT p95 {setup.slo.ttft_p95_s} s, ITL p95 {setup.slo.itl_p95_s} s",
        f"cold start  {setup.cold_start_s:.0f} s per new replica (weights load + warm-up)",
        f"engine args {' '.join(loaded.engine_args)}",
    ]
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="plan + replay a real trace under kvscale and baselines", description=__doc__
    )
    parser.add_argument(
        "--duration",
        type=finite_float,
        default=1200.0,
        metavar="S",
        help="ramp seconds (up and down)",
    )
    parser.add_argument(
        "--peak", type=finite_float, default=8.0, help="rate multiplier at the top of the ramp"
    )
    add_replay_arguments(parser)
    parser.set_defaults(func=run, warmup=300.0)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    names = parse_policies(args.policy)
    loaded = load_deployment(Path(args.deployment) if args.deployment else None)
    print(describe_plan(loaded))
    trace, corners = ramp_load(args.duration, args.warmup, args.peak, args.seed)
    print(
        f"\nreplaying {len(trace):,} requests: {trace.duration_s / 60:.0f} min of Azure LLM"
        f" inference 2023 conv: 1x until minute {corners[1][0] / 60:.0f}, {args.peak:g}x at"
        f" minute {corners[2][0] / 60:.0f}, 1x again from minute {corners[3][0] / 60:.0f},"
        f" under {', '.join(names)}"
    )
    print(
        f"SLO: a request meets it when its TTFT is within {loaded.setup.slo.ttft_p95_s} s and its"
        f" mean ITL within {loaded.setup.slo.itl_p95_s} s; the target is 99 % of requests."
    )
    print(
        f"Every policy starts from the static count after a {args.warmup / 60:g}-minute pre-roll"
        " (not scored); GPU-hours count from minute 0.\n"
    )
    results, static_n = replay_from_args(args, trace, loaded.setup, names)
    print()
    print(format_table(results, loaded.setup))
    print(f"static = {replicas_text(static_n)} (smallest fixed count meeting the SLO)\n")
    print(explain_results(results, static_n, loaded.setup.slo.ttft_p95_s))
    from kvscale.sim.report import write_report

    out = write_report(
        Path(args.report or DEFAULT_REPORT_DIR), trace, loaded.setup, results, static_n,
        warmup_s=args.warmup,
    )  # fmt: skip
    print(f"\nplots and summary written to {out}/ (took {time.perf_counter() - started:.0f} s)")
    return 0


def ramp_load(
    ramp_s: float, flat_s: float, peak: float, seed: int
) -> tuple[Trace, tuple[tuple[float, float], ...]]:
    """Azure conv at 1x for `flat_s` (what the pre-roll replays, so every policy settles at
    1x), up to `peak`x and back over `ramp_s`, then 1x for `flat_s` again."""
    corners = (
        (0.0, 1.0),
        (flat_s, 1.0),
        (flat_s + ramp_s / 2, peak),
        (flat_s + ramp_s, 1.0),
        (2 * flat_s + ramp_s, 1.0),
    )
    trace = slice_trace(load_azure(default_azure_path("conv")), 0.0, corners[-1][0])
    return ramp_trace(trace, corners, seed), corners


def replicas_text(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


_WHY = {
    "kvscale": (
        "sizes for KV and prompt demand now and one cold start ahead (trend, daily profile),"
        " with SLO, queue and preemption terms as a safety net, and scales in within one cold"
        " start once the fall is sure; the prompt load one replica"
        " takes comes from the plan's roofline until an SLO breach teaches a lower one"
    ),
    "static": "holds the count that meets the SLO at the peak, also while the load is low",
    "queue": (
        "KEDA on waiting requests (> 5 per replica): it sees load only once requests queue,"
        " so it adds replicas after the queue forms and keeps them through the HPA's 5-minute"
        " scale-down window"
    ),
    "kv-threshold": (
        "HPA on mean KV usage (target 0.8): blind to prefill load and to the cold start,"
        " it adds replicas after the pool is full"
    ),
}


def explain_results(
    results: dict[str, ReplayResult], static_n: int, ttft_target_s: float | None = None
) -> str:
    """One paragraph per policy: what it does and where this run put it."""
    static = results.get("static")
    lines = ["why each policy lands where it does:"]
    for name, r in results.items():
        cost = ""
        if static is not None and name != "static" and static.gpu_hours > 0:
            cost = f", {r.gpu_hours / static.gpu_hours:.2f}x the static GPU-hours"
        verdict = "meets" if r.slo_attainment >= SLO_TARGET_FRAC else "misses"
        lines.append(
            f"- {name}: {_WHY.get(name, '')}. Here: {verdict} the 99 % target"
            f" ({r.slo_attainment * 100:.2f} %){cost}, peak {replicas_text(r.peak_replicas)},"
            f" {r.scale_events} scale events{_top_reasons(r)}.{_where_missed(r, ttft_target_s)}"
        )
    return "\n".join(lines)


def _where_missed(result: ReplayResult, ttft_target_s: float | None) -> str:
    """' TTFT p95 over the 2 s target in minutes 8-10, with 1-2 replicas serving.' or ''."""
    if ttft_target_s is None:
        return ""
    over = [s for s in result.samples if s.ttft_p95_s is not None and s.ttft_p95_s > ttft_target_s]
    if not over:
        return ""
    first, last = over[0].t_s / 60.0, over[-1].t_s / 60.0
    low, high = min(s.ready for s in over), max(s.ready for s in over)
    serving = replicas_text(low) if low == high else f"{low}-{high} replicas"
    return (
        f" TTFT p95 over the {ttft_target_s:g} s target between minutes {first:.0f} and"
        f" {last:.0f} ({len(over)} of {len(result.samples)} ticks), {serving} serving."
    )


def _top_reasons(result: ReplayResult) -> str:
    moved = [(count, reason) for reason, count in result.reasons.items() if count > 0]
    if not moved:
        return ""
    top = sorted(moved, reverse=True)[:3]
    return "; scaled by " + ", ".join(f"{reason} x{count}" for count, reason in top)
