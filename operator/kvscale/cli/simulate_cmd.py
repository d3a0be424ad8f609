"""`kvscale simulate`: replay a trace against a deployment under several scaling policies.

Prints one JSON object keyed by policy (`-o json`, the contract) or a table; `--report DIR`
adds plots and a summary. The deployment is planned exactly as the operator plans it
(`kvscale.api.convert.plan_deployment`), and the simulated replicas use that plan.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kvscale.api.convert import (
    SpecError,
    plan_deployment,
    slo_targets_of,
)
from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.policy_config import to_scaling_config
from kvscale.cli.common import CliError, finite_float
from kvscale.sim.policies import POLICIES, Policy, build_policy
from kvscale.sim.replay import ReplayOptions, ReplayResult, run_replay, size_static_replicas
from kvscale.sim.router import ROUTERS
from kvscale.sim.setup import SimSetup, build_sim_setup
from kvscale.sim.traces import (
    FORMATS,
    Trace,
    TraceError,
    default_azure_path,
    detect_format,
    generate_servegen,
    load_trace,
    scale_trace,
    slice_trace,
)

DEFAULT_DEPLOYMENT = "llama-3.1-8b-h100.yaml"


@dataclass(frozen=True)
class LoadedDeployment:
    setup: SimSetup
    engine_args: tuple[str, ...]
    selection_reason: str


def default_deployment_path(name: str = DEFAULT_DEPLOYMENT) -> Path:
    return Path(str(resources.files("kvscale") / "data" / "examples" / name))


def load_deployment(path: Path | None) -> LoadedDeployment:
    """Plan an LLMDeployment YAML (default: the packaged example) into a SimSetup."""
    path = path or default_deployment_path()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CliError(
            f"--deployment: cannot read {path} ({exc.strerror}); fix: pass a file"
        ) from exc
    except yaml.YAMLError as exc:
        raise CliError(f"--deployment: {path} is not YAML ({exc}); fix: check the file") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise CliError(f"--deployment: {path} has no spec; fix: pass an LLMDeployment manifest")
    try:
        spec = LLMDeploymentSpec.model_validate(doc["spec"])
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CliError(f"spec.{where}: {err['msg']}; fix: run kvscale validate -f {path}") from exc
    try:
        result = plan_deployment(spec)
    except SpecError as exc:
        raise CliError(str(exc)) from exc
    plan, chosen = result.selected_capacity_plan(), result.selected_plan()
    if plan is None or chosen is None:
        raise CliError(f"spec.placement.gpuTypes: {result.selection_reason}")
    # The operator builds its ScalingConfig from the status plan (safeConcurrency,
    # kvCacheTokens, prefillTokensPerSecond of the selected GPU type); so does the replay.
    scaling = to_scaling_config(
        spec, chosen.safe_concurrency, chosen.kv_cache_tokens, chosen.prefill_tokens_per_second
    )
    slo = slo_targets_of(spec)
    name = str((doc.get("metadata") or {}).get("name") or path.stem)
    setup = build_sim_setup(name, plan, scaling, slo)
    return LoadedDeployment(setup, result.engine_args, result.selection_reason)


def load_cli_trace(args: argparse.Namespace) -> Trace:
    """The trace the flags describe: file + format, window, time and rate scaling."""
    path = Path(args.trace) if args.trace else default_azure_path("conv")
    try:
        fmt = args.trace_format or detect_format(path)
        if fmt == "servegen":
            if not args.lengths_from:
                raise CliError("--lengths-from: ServeGen has rates only; fix: pass an Azure file")
            lengths = load_trace(Path(args.lengths_from), None, None, args.seed)
            duration = args.duration if args.duration is not None else 86400.0
            trace = generate_servegen(
                path, lengths, start_s=args.start, duration_s=duration,
                rate_scale=args.rate_scale, seed=args.seed,
            )  # fmt: skip
            return scale_trace(trace, args.time_scale, 1.0, args.seed)
        trace = load_trace(path, fmt, None, args.seed)
        trace = slice_trace(trace, args.start, args.duration)
        trace = scale_trace(trace, args.time_scale, args.rate_scale, args.seed)
    except TraceError as exc:
        raise CliError(f"--trace: {exc}") from exc
    if len(trace) == 0:
        raise CliError("--start/--duration: no requests in that window; fix: widen it")
    return trace


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise CliError(
            f"--policy: unknown {', '.join(bad) or '(empty)'}; fix: use {','.join(POLICIES)}"
        )
    return names


def run_policies(
    trace: Trace,
    setup: SimSetup,
    names: Sequence[str],
    options: ReplayOptions,
    *,
    static_replicas: int | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, ReplayResult], int]:
    """Replay `trace` once per policy.

    The static baseline is sized first (smallest fixed count meeting the SLO); every autoscaler
    starts from that same count, so no policy pays for (or profits from) an arbitrary start.
    """
    static_n = static_replicas
    if static_n is None:
        _say(show_progress, "sizing the static baseline (smallest fixed count meeting the SLO)…")
        static_n = size_static_replicas(trace, setup, options)
    results: dict[str, ReplayResult] = {}
    for name in names:
        policy: Policy = build_policy(name, setup.scaling, static_n, initial=static_n)
        bar = ProgressBar(f"{name:<12}", enabled=show_progress)
        results[name] = run_replay(trace, setup, policy, options, bar.update)
        bar.close(f"{results[name].wall_s:.1f}s")
    return results, static_n


class ProgressBar:
    """A one-line progress bar on stderr, only when stderr is a terminal (a log or a pipe
    gets no carriage-return noise)."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30) -> None:
        self.label, self.width = label, width
        self.enabled = enabled and sys.stderr.isatty()
        self._last = -1

    def update(self, frac: float) -> None:
        pct = int(frac * 20) * 5
        if not self.enabled or pct == self._last:
            return
        self._last = pct
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {pct:3d}%")
        sys.stderr.flush()

    def close(self, note: str = "") -> None:
        if self.enabled:
            sys.stderr.write(f"  {note}\n")
            sys.stderr.flush()


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr)


def format_table(results: dict[str, ReplayResult], setup: SimSetup) -> str:
    """A fixed-width comparison table (one row per policy)."""
    head = (
        f"{'policy':<13}{'GPU-h':>8}{'SLO met':>9}{'TTFT p95':>10}{'ITL p95':>9}"
        f"{'preempt':>9}{'rejected':>9}{'scale ev':>9}{'peak':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(
            f"{name:<13}{r.gpu_hours:>8.2f}{r.slo_attainment * 100:>8.2f}%{r.ttft_p95_s:>9.3f}s"
            f"{r.itl_p95_s * 1000:>7.1f}ms{r.preemptions:>9}{r.rejected:>9}{r.scale_events:>9}"
            f"{r.peak_replicas:>6}"
        )
    return "\n".join(lines)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `simulate` and `demo`."""
    parser.add_argument("--deployment", "-f", metavar="YAML", help="LLMDeployment manifest")
    parser.add_argument("--policy", default=",".join(POLICIES), help="comma-separated policies")
    parser.add_argument("--router", choices=ROUTERS, default="least-kv")
    parser.add_argument("--static-replicas", type=int, metavar="N", help="skip static sizing")
    parser.add_argument(
        "--warmup", type=finite_float, default=300.0, metavar="S", help="pre-roll s"
    )
    parser.add_argument("--report", metavar="DIR", help="also write plots and a summary here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a trace under kvscale and baseline autoscalers",
        description=__doc__,
    )
    parser.add_argument("--trace", metavar="FILE", help="default: the embedded Azure conv trace")
    parser.add_argument("--trace-format", choices=FORMATS)
    parser.add_argument("--lengths-from", metavar="FILE", help="lengths for a ServeGen trace")
    parser.add_argument(
        "--start", type=finite_float, default=0.0, metavar="S", help="window start s"
    )
    parser.add_argument("--duration", type=finite_float, metavar="S", help="window length s")
    parser.add_argument("--time-scale", type=finite_float, default=1.0, help=">1 plays faster")
    parser.add_argument("--rate-scale", type=finite_float, default=1.0, help="multiply the rate")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_replay_arguments(parser)
    parser.set_defaults(func=run)


def replay_from_args(
    args: argparse.Namespace, trace: Trace, setup: SimSetup, names: Sequence[str]
) -> tuple[dict[str, ReplayResult], int]:
    """run_policies with the replay flags shared by `simulate` and `demo`."""
    return run_policies(
        trace,
        setup,
        names,
        ReplayOptions(warmup_s=args.warmup, router=args.router),
        static_replicas=args.static_replicas,
        show_progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    names = parse_policies(args.policy)
    loaded = load_deployment(Path(args.deployment) if args.deployment else None)
    trace = load_cli_trace(args)
    results, static_n = replay_from_args(args, trace, loaded.setup, names)
    if args.output == "json":
        print(json.dumps({name: r.to_json() for name, r in results.items()}, indent=2))
    else:
        print(format_table(results, loaded.setup))
        if "static" in names:
            count = f"{static_n} replica{'' if static_n == 1 else 's'}"
            print(f"static = {count} (smallest fixed count meeting the SLO)")
    if args.report:
        from kvscale.sim.report import write_report

        out = write_report(
            Path(args.report), trace, loaded.setup, results, static_n, warmup_s=args.warmup
        )
        _say(True, f"report written to {out}")
    return 0
