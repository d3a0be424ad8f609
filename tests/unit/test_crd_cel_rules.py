"""The CEL rules in the CRD and their Python twins accept and reject the same objects.

The API server evaluates `x-kubernetes-validations` after defaulting; `kvscale validate` runs
the Python predicates. Here both judge the same samples: the CEL side through cel-python on
the defaulted object, the Python side through the pydantic model.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from kvscale.api.crd import build_structural_schema
from kvscale.api.docs import MINIMAL_SPEC
from kvscale.api.models import LLMDeploymentSpec

celpy = pytest.importorskip("celpy")

SCHEMA = build_structural_schema(LLMDeploymentSpec)

BASE: dict[str, Any] = MINIMAL_SPEC


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """What the API server does before CEL runs: fill declared defaults, recursively."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def cel_rejects(spec: dict[str, Any], owner: tuple[str, ...]) -> bool:
    """Evaluate every rule of the object at `owner` (list owners: each item)."""
    node, schema = apply_defaults(spec, SCHEMA), SCHEMA
    for part in owner:
        if part == "[]":
            schema = schema["items"]
        else:
            node, schema = node[part], schema["properties"][part]
    objects = node if isinstance(node, list) else [node]
    env = celpy.Environment()
    for rule in schema["x-kubernetes-validations"]:
        program = env.program(env.compile(rule["rule"]))
        for obj in objects:
            if not program.evaluate(celpy.json_to_cel({"self": obj})):
                return True
    return False


def python_rejects(spec: dict[str, Any]) -> bool:
    try:
        LLMDeploymentSpec.model_validate(spec)
    except ValidationError:
        return True
    return False


def patched(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


CASES = [
    ("one-source", ("model",), patched(), False),
    ("two-sources", ("model",), patched(model__config='{"a": 1}'), True),
    ("no-source", ("model",), {**BASE, "model": {"uri": "x/y"}}, True),
    ("input-p50>p95", ("workload",), patched(workload__inputTokensP50=5000), True),
    ("output-p50>p95", ("workload",), patched(workload__outputTokensP50=2000), True),
    (
        "toleration-exists",
        ("placement", "tolerations", "[]"),
        patched(placement__tolerations=[{"key": "gpu", "operator": "Exists"}]),
        False,
    ),
    (
        "toleration-exists-value",
        ("placement", "tolerations", "[]"),
        patched(placement__tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]),
        True,
    ),
    ("pinned-vllm", (), patched(kvCache__pool="pinned"), False),
    ("pinned-sglang", (), patched(kvCache__pool="pinned", engine__name="sglang"), True),
    ("sampler-vllm", (), patched(engine__samplerPath="flashinfer"), False),
    ("sampler-sglang", (), patched(engine__samplerPath="sort", engine__name="sglang"), True),
    ("sampler-auto-sglang", (), patched(engine__name="sglang"), False),
    ("gpu-duplicate", ("placement",), patched(placement__gpuTypes=["l4", "l4"]), True),
    ("gpu-distinct", ("placement",), patched(placement__gpuTypes=["l4", "l40s"]), False),
    ("gpu-empty", ("placement",), patched(placement__gpuTypes=[]), True),
    ("queue>ttft", ("slo",), patched(slo__ttftP95Seconds=1.0, slo__maxQueueWaitSeconds=2.0), True),
    ("queue<ttft", ("slo",), patched(slo__ttftP95Seconds=3.0, slo__maxQueueWaitSeconds=2.0), False),
    ("min>max", ("scaling",), patched(scaling__minReplicas=3, scaling__maxReplicas=2), True),
    ("min=max", ("scaling",), patched(scaling__minReplicas=3, scaling__maxReplicas=3), False),
    (
        "fallback-high",
        ("scaling",),
        patched(scaling__maxReplicas=4, scaling__fallbackReplicas=5),
        True,
    ),
    (
        "fallback-in",
        ("scaling",),
        patched(scaling__maxReplicas=4, scaling__fallbackReplicas=4),
        False,
    ),
    ("adopt-no-target", (), patched(mode="adopt"), True),
    ("adopt-target", (), patched(mode="adopt", targetRef={"name": "vllm"}), False),
    ("managed-target", (), patched(targetRef={"name": "vllm"}), True),
    ("config-no-uri", (), {**BASE, "model": {"config": "{}"}}, True),
    ("config-uri", (), {**BASE, "model": {"config": "{}", "uri": "org/m"}}, False),
    (
        "adopt-config-no-uri",
        (),
        {**BASE, "mode": "adopt", "targetRef": {"name": "v"}, "model": {"config": "{}"}},
        False,
    ),
    ("too-long", (), patched(maxContextLength=4096), True),
]


@pytest.mark.parametrize(
    ("owner", "spec", "rejected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cel_and_python_agree(owner: tuple[str, ...], spec: dict[str, Any], rejected: bool):
    assert cel_rejects(spec, owner) is rejected
    assert python_rejects(spec) is rejected


def test_spec_rules_hold_on_an_object_whose_mode_is_not_defaulted_yet() -> None:
    """A rule that reads `self.mode` unguarded fails with "no such key: mode" where a spec
    reaches CEL before defaulting; guarded, it gives the verdict of the defaulted object."""
    env = celpy.Environment()
    raw = {k: v for k, v in BASE.items() if k != "mode"}
    for rule in SCHEMA["x-kubernetes-validations"]:
        program = env.program(env.compile(rule["rule"]))
        verdict = program.evaluate(celpy.json_to_cel({"self": raw}))
        assert isinstance(verdict, celpy.celtypes.BoolType), (rule["rule"], verdict)
        defaulted = program.evaluate(celpy.json_to_cel({"self": apply_defaults(raw, SCHEMA)}))
        assert bool(verdict) == bool(defaulted), rule["rule"]
