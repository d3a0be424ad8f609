"""Autoscaling replay benchmark: every policy on five real traces, against the hindsight optimum.

    .venv/bin/python bench/autoscale_replay.py [--quick] [--only conv,code,mooncake,ramp,diurnal]

Scenarios (all Llama-3.1-8B-Instruct, vLLM 0.11.0, one H100 SXM per replica, planned by
kvscale's capacity planner; SLO TTFT p95 2 s / ITL 100 ms, 5 s TTFT for the 128k deployment):

* Azure 2023 conversation, full hour, arrivals x8 (superposed time-shifted copies): at its
  native ~5.5 req/s a single H100 serves the whole trace, so nothing would scale.
* Azure 2023 code, full hour, arrivals x8 (bursty).
* Mooncake conversation, full hour, native rate, 128k-context deployment (prefix reuse via
  hash_ids).
* Rising load: 20 minutes of Azure conv at 1x -> 8x -> 1x its native rate (linear ramps).
* ServeGen m-large, days 2 and 3 (48 h), rates scaled so the peak is ~5 req/s, request lengths
  drawn from the Mooncake trace (without its prefix hashes): the forecast learns day 2's
  profile and uses it on day 3.

`static` is the smallest fixed replica count that meets the SLO for >= 99 % of requests (found
by replay, i.e. provisioning sized by a load test of the whole trace); every autoscaler starts
from that count. `peak-static` is what a platform team provisions for the trace's peak: the
busiest window's need, all along. `optimal` is the hindsight-optimal schedule
(`kvscale.sim.optimal`): per-window needs found by replay, then the cheapest schedule with the
same start (the static count), cold start and scale-down step limit; every policy's GPU-hours
are also given as a ratio to it. Also prints the speed check: one hour of Azure conv (native)
x 4 policies.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from kvscale.cli.simulate_cmd import (  # noqa: E402
    default_deployment_path,
    load_deployment,
    run_policies,
)
from kvscale.sim.optimal import OptimalSchedule, hindsight_optimal  # noqa: E402
from kvscale.sim.policies import POLICIES, StaticPolicy  # noqa: E402
from kvscale.sim.replay import (  # noqa: E402
    ReplayOptions,
    ReplayResult,
    run_replay,
    size_static_replicas,
)
from kvscale.sim.traces import (  # noqa: E402
    Trace,
    default_azure_path,
    generate_servegen,
    load_azure,
    load_mooncake,
    ramp_trace,
    scale_trace,
    slice_trace,
)

TRACES = REPO / "data" / "traces"
SERVEGEN_PEAK_RPS = 5.0
DAY_S = 86400.0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    deployment: str
    load: Callable[[bool], Trace]
    window_s: float  # the hindsight optimum's window (needs are found per window by replay)
    # What the policies' pre-roll replays (None: the trace's own first minutes)
    preroll: Callable[[bool], Trace] | None = None


def _azure(kind: str, rate: float) -> Callable[[bool], Trace]:
    def load(quick: bool) -> Trace:
        trace = load_azure(default_azure_path(kind))
        trace = slice_trace(trace, 0.0, 900.0 if quick else None)
        return scale_trace(trace, 1.0, rate, seed=0)

    return load


def _mooncake(quick: bool) -> Trace:
    trace = load_mooncake(TRACES / "mooncake" / "conversation_trace.jsonl")
    return slice_trace(trace, 0.0, 900.0 if quick else None)


def _ramp(quick: bool) -> Trace:
    trace = load_azure(default_azure_path("conv"))
    half_s = 300.0 if quick else 600.0
    trace = slice_trace(trace, 0.0, 2 * half_s)
    return ramp_trace(trace, ((0.0, 1.0), (half_s, 8.0), (2 * half_s, 1.0)), seed=0)


def _native_conv(quick: bool) -> Trace:
    """The ramp's pre-roll: Azure conv at its native rate, the steady 1x the service ran at
    before the rise (the ramp's own first minutes would replay a rise to ~4.5x and then a drop
    back to 1x at t = 0 that no running service sees)."""
    return load_azure(default_azure_path("conv"))


def _servegen(quick: bool) -> Trace:
    import numpy as np

    from kvscale.sim.traces import fill_missing_rates, load_servegen_rates

    path = TRACES / "servegen" / "m-large_rate_per_10min.csv"
    starts, rates = load_servegen_rates(path)
    days = (starts >= DAY_S) & (starts < 3 * DAY_S)
    peak = float(np.max(fill_missing_rates(rates)[days]))
    lengths = load_mooncake(TRACES / "mooncake" / "conversation_trace.jsonl")
    return generate_servegen(
        path,
        lengths,
        start_s=DAY_S,
        duration_s=7200.0 if quick else 2 * DAY_S,
        rate_scale=SERVEGEN_PEAK_RPS / peak,
        seed=0,
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("conv", "Azure conv 1h x8", "llama-3.1-8b-h100.yaml", _azure("conv", 8.0), 300.0),
    Scenario("code", "Azure code 1h x8", "llama-3.1-8b-h100.yaml", _azure("code", 8.0), 300.0),
    Scenario("mooncake", "Mooncake conv 1h", "llama-3.1-8b-h100-128k.yaml", _mooncake, 300.0),
    Scenario(
        "ramp", "Azure conv 1x-8x-1x 20min", "llama-3.1-8b-h100.yaml", _ramp, 120.0, _native_conv
    ),
    Scenario("diurnal", "ServeGen m-large 48h", "llama-3.1-8b-h100-128k.yaml", _servegen, 1800.0),
)


@dataclass(frozen=True)
class Outcome:
    results: dict[str, ReplayResult]  # every policy, peak-static included
    static_n: int
    optimal: OptimalSchedule
    requests: int
    wall_s: float


def run_scenario(sc: Scenario, quick: bool) -> Outcome:
    setup = load_deployment(default_deployment_path(sc.deployment)).setup
    trace = sc.load(quick)
    started = time.perf_counter()
    print("sizing the static baseline (smallest fixed count meeting the SLO)…", file=sys.stderr)
    options = ReplayOptions(preroll=sc.preroll(quick) if sc.preroll else None)
    static_n = size_static_replicas(trace, setup, options)
    print("hindsight optimum: per-window needs by replay…", file=sys.stderr)
    optimal = hindsight_optimal(trace, setup, sc.window_s, initial=static_n)
    results, _ = run_policies(trace, setup, POLICIES, options, static_replicas=static_n)
    peak = run_replay(trace, setup, StaticPolicy(optimal.peak_need), options)
    results["peak-static"] = replace(peak, policy="peak-static")
    return Outcome(results, static_n, optimal, len(trace), time.perf_counter() - started)


def format_rows(label: str, outcome: Outcome) -> list[str]:
    static = outcome.results["static"].gpu_hours or 1.0
    best = outcome.optimal.gpu_hours or 1.0
    rows = []
    for name, r in outcome.results.items():
        rows.append(
            f"| {label} ({outcome.requests:,} req) | {name} | {r.gpu_hours:.2f}"
            f" | {r.gpu_hours / best:.2f} | {r.gpu_hours / static:.2f} |"
            f" {r.slo_attainment * 100:.2f} % | {r.ttft_p95_s:.2f} | {r.itl_p95_s * 1000:.0f} |"
            f" {r.preemptions} | {r.rejected} | {r.scale_events} | {r.peak_replicas} |"
        )
    rows.append(
        f"| {label} ({outcome.requests:,} req) | optimal | {outcome.optimal.gpu_hours:.2f}"
        f" | 1.00 | {outcome.optimal.gpu_hours / static:.2f} | ≥ 99 % per window | | | | |"
        f" {sum(1 for a, b in pairwise(outcome.optimal.replicas) if a != b)}"
        f" | {max(outcome.optimal.replicas)} |"
    )
    return rows


def measure_speed() -> tuple[int, float, float]:
    """One hour of native Azure conv x 4 policies (static count given), wall seconds."""
    setup = load_deployment(default_deployment_path()).setup
    trace = load_azure(default_azure_path("conv"))
    started = time.perf_counter()
    run_policies(trace, setup, POLICIES, ReplayOptions(), static_replicas=1, show_progress=False)
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    size_static_replicas(trace, setup, ReplayOptions())
    return len(trace), replay_s, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke size: 15 min / 10 min ramp / 2 h slices"
    )
    parser.add_argument("--only", default=",".join(s.key for s in SCENARIOS))
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    lines = [
        "| trace | policy | GPU-h | vs optimal | vs static | SLO met | TTFT p95 s | ITL p95 ms |"
        " preempt | rejected | scale events | peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for sc in SCENARIOS:
        if sc.key not in wanted:
            continue
        print(f"== {sc.label}", file=sys.stderr)
        outcome = run_scenario(sc, args.quick)
        lines.extend(format_rows(sc.label, outcome))
        notes.append(
            f"{sc.label}: static = {outcome.static_n}, peak-static = {outcome.optimal.peak_need}"
            f" replicas; optimal per {sc.window_s:.0f} s window ="
            f" {' '.join(map(str, outcome.optimal.replicas))} (needs"
            f" {' '.join(map(str, outcome.optimal.needs))}); wall {outcome.wall_s:.0f} s"
        )
        print("\n".join(lines), flush=True)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(notes))
    if not args.no_speed:
        n, replay_s, sizing_s = measure_speed()
        print(
            f"\nspeed: Azure conv 1h ({n:,} requests) x 4 policies = {replay_s:.1f} s wall"
            f" (+ {sizing_s:.1f} s to size the static baseline)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
