"""What `spec.model.quantization` does to the weights the engine holds.

The field describes the checkpoint the engine loads (`model.uri`, an adopted engine's, or a
model given by its config): the weights are re-estimated at the method's width. A managed
engine that loads a 16-bit catalog id itself holds 16-bit weights unless it quantizes them as
it loads: for fp8 (`capacity.quantload.ONLINE_QUANTIZATION_METHODS`) on a release whose flag
table has the flag (vLLM and SGLang `--quantization`, TGI `--quantize`), the plan sizes fp8
weights, the flag is rendered and the planner checks the load's peak (capacity/quantload.py).
Any other method, or an engine release without the flag, keeps the 16-bit weights and warns.
"""

from __future__ import annotations

from dataclasses import replace

from kvscale.api.models import DEFAULT_MODE, LLMDeploymentSpec, ModelSource
from kvscale.capacity.quantload import ONLINE_QUANTIZATION_METHODS
from kvscale.capacity.types import ModelGeometry, OnlineQuantization
from kvscale.capacity.weights import with_quantization
from kvscale.engines.render import online_quantization_method, online_quantization_rendered


def engine_loads_catalog_id(source: ModelSource, mode: str = DEFAULT_MODE) -> bool:
    """A managed engine that loads the catalog id itself (no other `model.uri`): it loads the
    catalog's checkpoint, whatever `model.quantization` says."""
    return mode == "managed" and source.name is not None and source.uri in (None, source.name)


def quantization_unapplied(source: ModelSource, base: ModelGeometry, mode: str) -> bool:
    """A 16-bit checkpoint declared quantized that a managed engine loads as it is (the catalog
    id itself): the declared quantization describes no checkpoint the engine reads."""
    return (
        source.quantization is not None
        and base.quantization is None
        and engine_loads_catalog_id(source, mode)
    )


def online_quantization_for(
    method: str | None,
    base: ModelGeometry,
    engine: str,
    release: str,
    *,
    loads_base_checkpoint: bool,
) -> OnlineQuantization | None:
    """The quantization an engine applies as it loads `base`'s 16-bit checkpoint itself
    (`loads_base_checkpoint`), or None: no method declared, one that needs a checkpoint
    quantized ahead of time, a checkpoint quantized already, or a release without the flag."""
    if (
        method not in ONLINE_QUANTIZATION_METHODS
        or not loads_base_checkpoint
        or base.quantization is not None
        or base.weights_bytes is None
        or not online_quantization_rendered(engine, release)
    ):
        return None
    return OnlineQuantization(method=method, checkpoint_weights_bytes=base.weights_bytes)


def online_quantization_of(
    spec: LLMDeploymentSpec, base: ModelGeometry
) -> OnlineQuantization | None:
    """`online_quantization_for` a spec: the managed engine loads the catalog id itself."""
    return online_quantization_for(
        spec.model.quantization,
        base,
        spec.engine.name,
        spec.engine.release,
        loads_base_checkpoint=engine_loads_catalog_id(spec.model, spec.mode),
    )


def started_with(
    base: ModelGeometry, engine: str, release: str, flag_value: str | None
) -> tuple[ModelGeometry, OnlineQuantization | None]:
    """The weights an engine started on `base`'s checkpoint with `flag_value` as its
    online-quantization flag holds (a log's `quantization=`, an argv's `--quantization`): fp8
    and the online quantization when the value quantizes a 16-bit checkpoint as it loads, else
    `base` as it is."""
    method = online_quantization_method(engine, release, flag_value or "")
    online = online_quantization_for(method, base, engine, release, loads_base_checkpoint=True)
    return (with_quantization(base, online.method), online) if online else (base, None)


def with_source_overrides(
    base: ModelGeometry,
    source: ModelSource,
    mode: str = DEFAULT_MODE,
    online: OnlineQuantization | None = None,
) -> ModelGeometry:
    """`base` with the spec's declared quantization (sizing the weights the engine holds:
    relabelled only when a managed engine loads the 16-bit catalog id as it is) and explicit
    weightsBytes."""
    model = base
    if source.quantization is not None:
        model = (
            replace(model, quantization=source.quantization)
            if online is None and engine_loads_catalog_id(source, mode)
            else with_quantization(model, source.quantization)
        )
    if source.weights_bytes is not None:
        model = replace(model, weights_bytes=source.weights_bytes)
    return model


def unapplied_quantization_warning(
    spec: LLMDeploymentSpec, base: ModelGeometry, online: OnlineQuantization | None
) -> str | None:
    """Why the declared quantization does not size the weights, or None when it does."""
    source = spec.model
    if online is not None or not quantization_unapplied(source, base, spec.mode):
        return None
    method = source.quantization
    why = (
        f"spec.engine {spec.engine.name} {spec.engine.release} cannot quantize it as it loads"
        if method in ONLINE_QUANTIZATION_METHODS
        else f"{method} needs a checkpoint quantized ahead of time"
    )
    return (
        f"spec.model.quantization {method} does not size the weights: the engine loads"
        f" {source.name} itself, a 16-bit checkpoint, and {why}, so the plan counts its 16-bit"
        f" weights; fix: set spec.model.uri to the {method} checkpoint"
    )
