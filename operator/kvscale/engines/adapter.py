"""What one engine adapter is: its tables (flags, metrics, command, endpoints) and two hooks.

An adapter holds data, not control flow: the renderer in `kvscale.engines.render` walks the
tables the same way for every engine. The hooks are for the two things a table cannot say:
checks that raise on plan values the engine cannot express, and warnings about conversions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvscale.capacity.release import ALL_VERSIONS, SupportedVersions, VersionRange
from kvscale.engines.flags import FlagSpec, RenderContext
from kvscale.engines.metrics import MetricRow


@dataclass(frozen=True)
class EngineEndpoints:
    """HTTP surface the operator probes and scrapes (paths on the serving port)."""

    health_path: str  # readiness/liveness probe path
    metrics_path: str  # Prometheus scrape path
    default_port: int  # the engine's own default; kvscale renders --port explicitly
    metrics_need_flag: str | None = None  # flag required for metrics to exist at all


@dataclass(frozen=True)
class CommandRow:
    """The program and its model argument for a release range; "{model}" is substituted."""

    template: tuple[str, ...]
    available: VersionRange = ALL_VERSIONS


@dataclass(frozen=True)
class EngineAdapter:
    name: str  # key used in PlanRequest.engine: vllm | sglang | tgi | trtllm
    display_name: str
    support: SupportedVersions
    commands: tuple[CommandRow, ...]
    flags: tuple[FlagSpec, ...]
    metrics: tuple[MetricRow, ...]
    endpoints: EngineEndpoints
    # Raise UnsupportedEngineError for plan values this release cannot express.
    check: Callable[[RenderContext], None] = lambda ctx: None
    # Warnings about conversions the flag table made (fallbacks, clamps).
    notes: Callable[[RenderContext], tuple[str, ...]] = lambda ctx: ()
