"""Entry points: render a plan into an engine command line, and look up per-version tables.

`render` dispatches on `plan.request.engine` to the adapter tables and walks them the same way
for every engine; everything version-specific is data in the engine modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvscale.capacity.quantload import FP8
from kvscale.capacity.release import EngineVersion, SupportedVersions, UnsupportedEngineError
from kvscale.capacity.types import CapacityPlan
from kvscale.engines import sglang, tgi, trtllm, vllm
from kvscale.engines.adapter import EngineAdapter, EngineEndpoints
from kvscale.engines.flags import (
    ONLINE_QUANTIZATION_FIELD,
    FlagSpec,
    RenderContext,
    accepted_values,
    available_flag_names,
    render_flag_table,
)
from kvscale.engines.metrics import EngineMetrics, resolve_metrics

ADAPTERS: dict[str, EngineAdapter] = {
    adapter.name: adapter for adapter in (vllm.ADAPTER, sglang.ADAPTER, tgi.ADAPTER, trtllm.ADAPTER)
}
ENGINE_NAMES: tuple[str, ...] = tuple(ADAPTERS)


@dataclass(frozen=True)
class RenderedArgs:
    """Engine arguments for one replica, plus what the conversion had to compromise on."""

    argv: tuple[str, ...]  # flags only (container `args`)
    warnings: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # program + model (container `command`)

    @property
    def full_argv(self) -> tuple[str, ...]:
        return self.command + self.argv


def get_adapter(engine: str) -> EngineAdapter:
    adapter = ADAPTERS.get(engine.strip().lower())
    if adapter is None:
        raise UnsupportedEngineError(
            "engine",
            f"unknown engine {engine!r}",
            f"use one of {', '.join(ENGINE_NAMES)}",
        )
    return adapter


def supported_versions(engine: str) -> SupportedVersions:
    """The release range kvscale renders for (and the releases its tables were read from)."""
    return get_adapter(engine).support


def engine_endpoints(engine: str) -> EngineEndpoints:
    """Health and metrics paths and the engine's default port, for probes and scraping."""
    return get_adapter(engine).endpoints


def _checked(engine: str, version: str | EngineVersion) -> tuple[EngineAdapter, EngineVersion]:
    adapter = get_adapter(engine)
    return adapter, adapter.support.require(version)


def engine_command(engine: str, version: str | EngineVersion, model_ref: str) -> list[str]:
    """Program and model argument (the container `command`); flags come from `render`."""
    adapter, parsed = _checked(engine, version)
    for row in adapter.commands:
        if row.available.contains(parsed):
            return [part.replace("{model}", model_ref) for part in row.template]
    raise UnsupportedEngineError(  # pragma: no cover - tables cover the supported range
        "engine_version", f"no command known for {engine} {version}", "extend the command table"
    )


def metric_queries(engine: str, version: str | EngineVersion) -> EngineMetrics:
    """The series names this engine release exposes (None where it has no such signal)."""
    adapter, parsed = _checked(engine, version)
    return resolve_metrics(adapter.name, parsed, adapter.metrics)


def _online_quantization_flag(engine: str, version: str | EngineVersion) -> FlagSpec | None:
    """The flag-table row for `PlanRequest.online_quantization` in this release, or None (no
    such flag, or an engine or release kvscale does not render for)."""
    adapter, parsed = ADAPTERS.get(engine.strip().lower()), EngineVersion.parse(version)
    if adapter is None or not adapter.support.contains(parsed):
        return None
    return next(
        (
            s
            for s in adapter.flags
            if s.plan_field == ONLINE_QUANTIZATION_FIELD and s.exists_in(parsed)
        ),
        None,
    )


def online_quantization_rendered(engine: str, version: str | EngineVersion) -> bool:
    """Whether this release has the flag that quantizes a 16-bit checkpoint as it loads (fp8)."""
    return _online_quantization_flag(engine, version) is not None


def online_quantization_method(engine: str, version: str | EngineVersion, value: str) -> str | None:
    """The plan's method ("fp8") for an online-quantization flag value an engine was started
    with (the flag row's `choices`), or None: not a value that quantizes at load there."""
    flag = _online_quantization_flag(engine, version)
    if flag is None:
        return None
    return FP8 if value in accepted_values(flag.choices, EngineVersion.parse(version)) else None


def _flag_names(argv: Sequence[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def render(
    plan: CapacityPlan,
    *,
    model_ref: str,
    port: int = 8000,
    extra_args: Sequence[str] = (),
    served_model_name: str | None = None,
    swap_space_gib: float | None = None,
) -> RenderedArgs:
    """Render the engine flags that make the engine size its KV cache the way `plan` says.

    Raises `UnsupportedEngineError` (a ValueError naming the field and the fix) for an unknown
    engine or release, or a plan value the release cannot express (e.g. its KV dtype).
    `extra_args` are appended verbatim; one that repeats a rendered flag wins in the engine's
    parser, so it is reported in the warnings.
    """
    request = plan.request
    adapter, version = _checked(request.engine, request.engine_version)
    if not model_ref:
        raise UnsupportedEngineError("model_ref", "empty model reference", "pass a model id/path")
    if not 0 < port < 65536:
        raise UnsupportedEngineError("port", f"port {port} out of range", "use 1..65535")
    ctx = RenderContext(
        plan=plan,
        version=version,
        model_ref=model_ref,
        port=port,
        served_model_name=served_model_name,
        swap_space_gib=swap_space_gib,
        available_flags=available_flag_names(adapter.flags, version),
    )
    adapter.check(ctx)
    argv, warnings = render_flag_table(adapter.flags, ctx, adapter.name)
    warnings.extend(adapter.notes(ctx))
    if not plan.fits:
        warnings.append(f"the plan does not fit: {plan.reason}")
    overridden = sorted(_flag_names(argv) & _flag_names(extra_args))
    if overridden:
        warnings.append(f"extra args override planned flags: {', '.join(overridden)}")
    return RenderedArgs(
        argv=(*argv, *extra_args),
        warnings=tuple(warnings),
        command=tuple(engine_command(adapter.name, request.engine_version, model_ref)),
    )


def render_args(
    plan: CapacityPlan,
    *,
    model_ref: str,
    port: int = 8000,
    extra_args: Sequence[str] = (),
    served_model_name: str | None = None,
    swap_space_gib: float | None = None,
) -> list[str]:
    """`render(...).argv` as a list: the flags for the container `args`."""
    return list(
        render(
            plan,
            model_ref=model_ref,
            port=port,
            extra_args=extra_args,
            served_model_name=served_model_name,
            swap_space_gib=swap_space_gib,
        ).argv
    )
