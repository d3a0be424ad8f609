"""Flag tables as data and the one renderer that walks them.

Each engine module declares a tuple of `FlagSpec`: the canonical spelling, the release range
the flag exists in, and a small function from the render context to the value. The renderer
never emits a flag outside its range; when the plan asks for something the version lacks it
drops the flag and says so in a warning. Keeping this generic is what lets the tests check
"no removed flag is ever emitted" for every engine and version in one parametrised sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kvscale.capacity.release import (
    ALL_VERSIONS,
    EngineVersion,
    UnsupportedEngineError,
    VersionRange,
)
from kvscale.capacity.types import CapacityPlan

# A value function returns: None -> do not emit; True -> emit the bare switch;
# a string -> emit "--flag value". (False is treated like None.)
FlagValue = str | bool | None


@dataclass(frozen=True)
class RenderContext:
    """Everything a value function may read. Built once per render; never mutated."""

    plan: CapacityPlan
    version: EngineVersion
    model_ref: str
    port: int
    served_model_name: str | None
    swap_space_gib: float | None
    available_flags: frozenset[str]  # canonical names that exist in `version`

    @property
    def total_memory_bytes(self) -> int:
        """Device memory the plan was computed for (the `--gpu-memory-gib` override wins)."""
        request = self.plan.request
        return request.gpu_memory_bytes or request.gpu.memory_bytes

    def has_flag(self, name: str) -> bool:
        return name in self.available_flags


@dataclass(frozen=True)
class FlagSpec:
    """One engine flag: spelling, availability and how the plan maps to it."""

    name: str  # canonical spelling, always what we render (engines accept abbreviations)
    value: Callable[[RenderContext], FlagValue]
    available: VersionRange = ALL_VERSIONS
    note: str = ""  # provenance / caveat, surfaced in docs (e.g. "range not verified")
    # The plan cannot hold without this flag (e.g. the KV dtype): a release that lacks it is an
    # error naming `plan_field`, not a dropped flag and a warning.
    required: bool = False
    plan_field: str = ""
    # The values the plan renders for `plan_field`, by release (where a table of them is what
    # maps the flag back to the plan, e.g. the online quantization's).
    choices: tuple[ChoiceRow, ...] = ()

    def exists_in(self, version: EngineVersion) -> bool:
        return self.available.contains(version)


def available_flag_names(table: tuple[FlagSpec, ...], version: EngineVersion) -> frozenset[str]:
    return frozenset(spec.name for spec in table if spec.exists_in(version))


def render_flag_table(
    table: tuple[FlagSpec, ...], ctx: RenderContext, engine_label: str
) -> tuple[list[str], list[str]]:
    """Walk `table` in order; returns (argv, warnings). Flags outside their range never appear."""
    argv: list[str] = []
    warnings: list[str] = []
    for spec in table:
        value = spec.value(ctx)
        if value is None or value is False:
            if spec.plan_field == "kv_cache_dtype" and ctx.plan.request.kv_cache_dtype != "auto":
                warnings.append(
                    f"kv_cache_dtype {ctx.plan.request.kv_cache_dtype} is the model's own width; "
                    f"left at {engine_label}'s default (auto), same KV bytes"
                )
            continue
        if not spec.exists_in(ctx.version):
            if spec.required:
                raise UnsupportedEngineError(
                    spec.plan_field or spec.name,
                    f"{engine_label} {ctx.version} has no {spec.name} "
                    f"(available {spec.available.describe()})",
                    f"use a {engine_label} release {spec.available.describe()}, "
                    f"or leave {spec.plan_field or spec.name} at its default",
                )
            warnings.append(
                f"{spec.name} not rendered: {engine_label} {ctx.version} does not have it "
                f"(available {spec.available.describe()})"
            )
            continue
        argv.append(spec.name)
        if isinstance(value, str):
            argv.append(value)
    return argv, warnings


def format_fraction(value: float, places: int = 3) -> str:
    """Round a memory fraction UP at `places` decimals and print it without float noise.

    Rounding up keeps the engine's KV budget at or above the plan's (by < 0.1 % of the GPU);
    the 1e-9 guard keeps an exact 0.85 from becoming 0.851 through binary representation.
    """
    scale = 10**places
    rounded = math.ceil(value * scale - 1e-9) / scale
    return f"{rounded:.{places}f}"


def plan_non_kv_bytes(plan: CapacityPlan) -> int:
    """Per-GPU memory the plan says is not KV: weights, rope tables, activation peak,
    non-torch, graphs (or what the engine was observed to charge, when calibrated)."""
    return plan.non_kv_bytes


def kv_cache_dtype_is_model_width(plan: CapacityPlan) -> bool:
    """True when the requested KV dtype is a 16-bit type equal in width to the model dtype.

    Engines without an explicit 16-bit choice (SGLang < 0.5.9, TGI, TRT-LLM) store the KV cache
    in the model dtype under "auto", which is the same cost the plan assumed.
    """
    request = plan.request
    return request.kv_cache_dtype in {"bfloat16", "float16"} and request.model.dtype_bytes == 2


@dataclass(frozen=True)
class ChoiceRow:
    """One accepted value of an enumerated flag and the releases that accept it."""

    value: str
    available: VersionRange = ALL_VERSIONS


def accepted_values(choices: tuple[ChoiceRow, ...], version: EngineVersion) -> list[str]:
    """The values of `choices` that `version` accepts, in table order."""
    return [row.value for row in choices if row.available.contains(version)]


def choose_kv_cache_dtype(
    ctx: RenderContext,
    choices: tuple[ChoiceRow, ...],
    aliases: dict[str, str],
    engine_label: str,
    hint: str = "",
) -> str | None:
    """Map the plan's KV dtype to this release's spelling; None means "leave the default".

    The KV dtype changes the plan's capacity by 2x, so a value the release cannot take is an
    error, never a silent drop. A 16-bit request equal to the model width is the engine's
    "auto" and is left out (the adapter's notes say so).
    """
    requested = ctx.plan.request.kv_cache_dtype
    if requested == "auto":
        return None
    spelled = aliases.get(requested, requested)
    accepted = accepted_values(choices, ctx.version)
    if spelled in accepted:
        return spelled
    if kv_cache_dtype_is_model_width(ctx.plan):
        return None
    raise UnsupportedEngineError(
        "kv_cache_dtype",
        f"{engine_label} {ctx.version} has no KV cache dtype {requested!r}",
        f"use one of {', '.join(['auto', *accepted])}, or a release that accepts it{hint}",
    )


# `FlagSpec.plan_field` of the flag that makes the engine quantize a 16-bit checkpoint as it
# loads it; `render.online_quantization_rendered` asks the flag tables for it.
ONLINE_QUANTIZATION_FIELD = "online_quantization"


def online_fp8_flag(
    name: str,
    names: tuple[ChoiceRow, ...],
    available: VersionRange = ALL_VERSIONS,
    note: str = "",
) -> FlagSpec:
    """The engine flag that quantizes a 16-bit checkpoint to fp8 as it loads, rendered only
    when the plan asks for it (PlanRequest.online_quantization), with `names` giving its value
    in each release (kept as the row's `choices`: `render.online_quantization_method` reads
    them back). Required: a plan that counts fp8 weights cannot drop it."""

    def value(ctx: RenderContext) -> FlagValue:
        if ctx.plan.request.online_quantization is None:
            return None
        return next(iter(accepted_values(names, ctx.version)), None)

    return FlagSpec(
        name,
        value,
        available,
        note,
        required=True,
        plan_field=ONLINE_QUANTIZATION_FIELD,
        choices=names,
    )


def positive_count(value: int) -> str | None:
    """A count flag's text, or None (engine default) when the plan left it unset (≤ 0)."""
    return str(value) if value > 0 else None
