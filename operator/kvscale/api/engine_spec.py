"""`spec.engine` and `spec.kvCache`: the serving engine of each replica and its KV-cache layout.

Split from `kvscale.api.models` (the spec's root); the CRD is generated from both alike.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator

from kvscale.api.base import ApiModel
from kvscale.capacity import CapacityInputError, EngineVersion, SamplerPath
from kvscale.engines.defaults import DEFAULT_ENGINE_VERSION, describe_defaults

EngineName = Literal["vllm", "sglang", "tgi", "trtllm"]
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16"]
KvPoolSizing = Literal["profiled", "pinned"]
_VERSION = r"^[0-9]+(\.[0-9]+){1,2}[A-Za-z0-9.+-]*$"
_Arg = Annotated[str, Field(max_length=1024)]
#: `SamplerPath`'s values as the API spells them (a string on the wire, also in strict mode).
SamplerPathName = Literal["auto", "sort", "flashinfer", "triton", "v2"]
if set(get_args(SamplerPathName)) != {path.value for path in SamplerPath}:
    raise ImportError("SamplerPathName must list kvscale.capacity.SamplerPath's values")


class EngineSpec(ApiModel):
    """The serving engine that runs each replica."""

    name: EngineName = Field(default="vllm", description="Serving engine.")
    version: str | None = Field(
        default=None,
        description=(
            "Engine version; selects the flag names and defaults kvscale renders. Defaults to"
            f" the engine's own default release ({describe_defaults()})."
        ),
        max_length=64,
        pattern=_VERSION,
    )
    image: str | None = Field(
        default=None,
        description="Container image of the engine; defaults to the engine's image for version.",
        min_length=1,
        max_length=512,
    )
    port: int = Field(
        default=8000, description="HTTP port the engine serves and is scraped on.", ge=1, le=65535
    )
    extra_args: list[_Arg] = Field(
        default_factory=list,
        description="Extra engine arguments appended after the rendered ones.",
        max_length=64,
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        description="Fraction of GPU memory the engine may use; defaults to the engine version's.",
        gt=0,
        le=1,
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        description="Tokens per scheduler step; defaults to the engine's.",
        ge=1,
        le=1048576,
    )
    max_num_seqs: int | None = Field(
        default=None,
        description="Running sequences per replica; defaults to the engine's.",
        ge=1,
        le=65536,
    )
    sampler_path: SamplerPathName = Field(
        default="auto",
        description="vLLM top-k/top-p path its memory profile runs (sort, flashinfer, triton, "
        "v2); auto plans with the costliest path the release can run, so the plan never "
        "promises more KV cache than the engine gets.",
    )

    @field_validator("version")
    @classmethod
    def _release(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            EngineVersion.parse(value)
        except CapacityInputError as exc:
            raise ValueError(f"{exc.problem}; fix: {exc.fix}") from None
        return value

    @property
    def release(self) -> str:
        """`version`, or this engine's default release when it is not given."""
        return self.version or DEFAULT_ENGINE_VERSION[self.name]


class KvCacheSpec(ApiModel):
    """KV-cache layout the engine is asked to use."""

    dtype: KvCacheDtype = Field(
        default="auto", description="KV-cache element type; auto = model dtype."
    )
    block_size: Literal[1, 8, 16, 32, 64, 128, 256] | None = Field(
        default=None, description="Tokens per KV block; defaults to the engine's (16 for vLLM)."
    )
    prefix_caching: bool = Field(
        default=True, description="Reuse KV blocks of shared prompt prefixes."
    )
    headroom_fraction: float = Field(
        default=0.1,
        description="Fraction of KV tokens kept free when computing the safe concurrency.",
        ge=0,
        le=0.9,
    )
    pool: KvPoolSizing = Field(
        default="profiled",
        description="profiled: the engine sizes its KV pool from its own memory profile; "
        "pinned: kvscale renders the planned KV bytes (vLLM --kv-cache-memory-bytes, from "
        "0.10.2) so the pool is exactly the plan, guarded by the conservative non-KV estimate.",
    )
    calibration_tolerance: float = Field(
        default=0.02,
        description=(
            "Relative gap between the KV blocks the engines report and the plan beyond which"
            " the operator records the engines' non-KV overhead cluster-wide and re-plans"
            " from it (KvCalibrated=False until the plan matches); smaller gaps are shown, not"
            " acted on."
        ),
        ge=0,
        le=0.5,
    )
