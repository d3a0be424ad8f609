"""`kvscale demo`: plan the packaged deployment, replay 10 minutes of Azure conv under every
policy, print the comparison and write plots. Needs no cluster, no GPU and no network.

The Azure conversation trace arrives at ~5.5 req/s, which one H100 serves alone; the demo plays
it at 4x the rate (superposed, time-shifted copies) so that the fleet has to scale.
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
from kvscale.sim.traces import default_azure_path, load_azure, scale_trace, slice_trace

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
        "--duration", type=finite_float, default=600.0, metavar="S", help="trace seconds"
    )
    parser.add_argument(
        "--rate-scale", type=finite_float, default=4.0, help="multiply the arrival rate"
    )
    add_replay_arguments(parser)
    parser.set_defaults(func=run, warmup=120.0)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    names = parse_policies(args.policy)
    loaded = load_deployment(Path(args.deployment) if args.deployment else None)
    print(describe_plan(loaded))
    trace = slice_trace(load_azure(default_azure_path("conv")), 0.0, args.duration)
    trace = scale_trace(trace, 1.0, args.rate_scale, seed=args.seed)
    print(
        f"\nreplaying {len(trace):,} requests ({trace.duration_s / 60:.0f} min of Azure LLM"
        f" inference 2023 conv at {args.rate_scale:g}x rate) under {', '.join(names)}\n"
    )
    results, static_n = replay_from_args(args, trace, loaded.setup, names)
    print()
    print(format_table(results, loaded.setup))
    print(f"static = {static_n} replicas (smallest fixed count meeting the SLO)")
    from kvscale.sim.report import write_report

    out = write_report(
        Path(args.report or DEFAULT_REPORT_DIR), trace, loaded.setup, results, static_n
    )
    print(f"\nplots and summary written to {out}/ (took {time.perf_counter() - started:.0f} s)")
    return 0
