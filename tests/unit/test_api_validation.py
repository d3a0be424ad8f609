"""Invalid specs fail with one line that names the CR field and the fix."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from kvscale.api.docs import MINIMAL_SPEC
from kvscale.api.validation import format_path, parse_spec, validate_document

BASE: dict[str, Any] = MINIMAL_SPEC


def with_changes(changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """BASE with dotted-path values set (None deletes) and top-level keys dropped."""
    spec = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    for key in drop:
        spec.pop(key)
    return spec


SCHEMA_CASES = [
    # (id, changes, dropped keys, expected path, message fragment, fix fragment)
    (
        "min>max",
        {"scaling.minReplicas": 3, "scaling.maxReplicas": 2},
        (),
        "spec.scaling.maxReplicas",
        "must be ≥ minReplicas (3 > 2)",
        "raise maxReplicas or lower minReplicas",
    ),
    (
        "missing",
        {},
        ("maxContextLength",),
        "spec.maxContextLength",
        "required",
        "add maxContextLength",
    ),
    (
        "unknown",
        {"scaling.maxReplica": 3},
        (),
        "spec.scaling.maxReplica",
        "unknown field",
        "maxReplicas",
    ),
    (
        "enum",
        {"engine.name": "ollama"},
        (),
        "spec.engine.name",
        "'ollama'",
        "vllm, sglang, tgi, trtllm",
    ),
    ("kv-dtype", {"kvCache.dtype": "int4"}, (), "spec.kvCache.dtype", "'int4'", "fp8"),
    (
        "bound-ge",
        {"placement.gpusPerReplica": 0},
        (),
        "spec.placement.gpusPerReplica",
        "≥ 1",
        "≥ 1",
    ),
    ("bound-gt", {"slo.ttftP95Seconds": 0}, (), "spec.slo.ttftP95Seconds", "> 0", "> 0"),
    ("bound-le", {"scaling.maxReplicas": 5000}, (), "spec.scaling.maxReplicas", "≤ 1000", "≤ 1000"),
    ("type", {"maxContextLength": "long"}, (), "spec.maxContextLength", "an integer", "integer"),
    (
        "gpu-empty",
        {"placement.gpuTypes": []},
        (),
        "spec.placement.gpuTypes",
        "at least 1",
        "at least 1",
    ),
    (
        "gpu-dup",
        {"placement.gpuTypes": ["l4", "l4"]},
        (),
        "spec.placement.gpuTypes",
        "must not repeat a type (l4)",
        "delete the duplicate",
    ),
    (
        "gpu-pattern",
        {"placement.gpuTypes": ["h100 sxm"]},
        (),
        "spec.placement.gpuTypes[0]",
        "wrong format",
        "pattern",
    ),
    (
        "two-sources",
        {"model.config": '{"num_hidden_layers": 2}'},
        (),
        "spec.model",
        "exactly one of name, config, configMapRef must be set (2 set)",
        "keep one model source",
    ),
    (
        "p50>p95",
        {"workload.outputTokensP50": 2000},
        (),
        "spec.workload.outputTokensP95",
        "(2000 > 1000)",
        "raise outputTokensP95",
    ),
    (
        "adopt-no-target",
        {"mode": "adopt"},
        (),
        "spec.targetRef",
        "required in adopt mode",
        "set mode: adopt with a targetRef",
    ),
    (
        "lengths>context",
        {"maxContextLength": 4096},
        (),
        "spec.maxContextLength",
        "(4000 + 1000 > 4096)",
        "raise maxContextLength",
    ),
    (
        "fallback",
        {"scaling.fallbackReplicas": 20},
        (),
        "spec.scaling.fallbackReplicas",
        "outside [1, 10]",
        "between minReplicas and maxReplicas",
    ),
    (
        "toleration",
        {"placement.tolerations": [{"operator": "Exists", "value": "x"}]},
        (),
        "spec.placement.tolerations[0].value",
        "must be empty",
        "delete value",
    ),
]


@pytest.mark.parametrize(
    ("changes", "drop", "path", "message", "fix"),
    [c[1:] for c in SCHEMA_CASES],
    ids=[c[0] for c in SCHEMA_CASES],
)
def test_invalid_spec_names_field_and_fix(
    changes: dict[str, Any], drop: tuple[str, ...], path: str, message: str, fix: str
):
    spec, problems = parse_spec(with_changes(changes, drop))
    assert spec is None
    assert [p.path for p in problems] == [path]
    assert message in problems[0].message
    assert fix in problems[0].fix
    assert str(problems[0]).startswith(f"{path}: ")


def test_valid_spec_parses_with_defaults():
    spec, problems = parse_spec(BASE)
    assert problems == []
    assert spec is not None
    assert spec.engine.name == "vllm"
    assert spec.desired_replicas() == spec.scaling.min_replicas


@pytest.mark.parametrize("path", ["sort", "flashinfer", "triton", "v2"])
def test_a_sampler_path_as_the_wire_sends_it_parses(path: str):
    """A string, as kubectl and the API server send it (validation is strict): was refused
    with "Input should be an instance of SamplerPath" while the enum was the field's type."""
    spec, problems = parse_spec(with_changes({"engine.samplerPath": path}))
    assert problems == []
    assert spec is not None and spec.engine.sampler_path == path


def doc(spec: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    base = {
        "apiVersion": "kvscale.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    return {**base, **envelope}


SEMANTIC_CASES = [
    # (id, document, expected path, message fragment)
    ("api-version", doc(BASE, apiVersion="kvscale.dev/v1"), "apiVersion", "not served"),
    ("bad-name", doc(BASE, metadata={"name": "Bad_Name"}), "metadata.name", "not a valid name"),
    ("dotted-name", doc(BASE, metadata={"name": "llama.3"}), "metadata.name", "Service"),
    ("long-name", doc(BASE, metadata={"name": "a" * 64}), "metadata.name", "not a valid name"),
    (
        "unknown-model",
        doc(with_changes({"model.name": "acme/not-a-model"})),
        "spec.model.name",
        "not in the catalog",
    ),
    (
        "unknown-gpu",
        doc(with_changes({"placement.gpuTypes": ["l40s", "tpu-v5"]})),
        "spec.placement.gpuTypes[1]",
        "unknown GPU",
    ),
    (
        "context>model",
        doc(with_changes({"maxContextLength": 1_000_000})),
        "spec.maxContextLength",
        "max_position_embeddings",
    ),
    (
        "fits-nowhere",
        doc(
            with_changes(
                {
                    "model.name": "meta-llama/Llama-3.3-70B-Instruct",
                    "placement.gpuTypes": ["l4", "t4"],
                }
            )
        ),
        "spec.placement.gpuTypes",
        "does not fit on any candidate GPU type",
    ),
    (
        "bad-inline-json",
        doc(with_changes({"model.config": "{not json", "model.uri": "a/b", "model.name": None})),
        "spec.model.config",
        "not valid JSON",
    ),
]


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [c[1:] for c in SEMANTIC_CASES],
    ids=[c[0] for c in SEMANTIC_CASES],
)
def test_semantic_problem_names_field(document: dict[str, Any], path: str, message: str):
    result = validate_document(document)
    assert not result.ok
    assert result.problems[0].path == path
    assert message in result.problems[0].message
    assert result.problems[0].fix


def test_configmap_ref_outside_the_file_skips_the_fit_check_with_a_note():
    spec = with_changes({"model": {"configMapRef": {"name": "cfg"}, "uri": "org/model"}})
    result = validate_document(doc(spec))
    assert result.ok
    assert result.plan is None
    assert "fit check was skipped" in result.notes[0]


@pytest.mark.parametrize(
    ("loc", "expected"),
    [((), "spec"), (("a", 0, "b"), "spec.a[0].b"), (("x",), "spec.x")],
)
def test_format_path(loc: tuple[int | str, ...], expected: str):
    assert format_path(loc) == expected


ONE_REQUEST_ITL = re.compile(r"(\w+): spec\.slo\.itlP95Seconds 0\.005 s is below the ([\d.]+) s")


def test_an_slo_no_candidate_meets_alone_names_spec_slo_and_each_gpus_floor():
    """Memory fits everywhere; the ITL target is tighter than one request gets on any of them."""
    spec = with_changes({"slo.itlP95Seconds": 0.005, "placement.gpuTypes": ["l4", "l40s", "h100"]})
    result = validate_document(doc(spec))
    (problem,) = result.problems
    assert problem.path == "spec.slo"
    assert "relax spec.slo" in problem.fix
    floors = {gpu: float(s) for gpu, s in ONE_REQUEST_ITL.findall(problem.message)}
    assert set(floors) == {"l4", "l40s", "h100"}
    assert all(floor > 0.005 for floor in floors.values())
    # decode is memory-bound: the floor follows HBM bandwidth (L4 < L40S < H100)
    assert floors["l4"] > floors["l40s"] > floors["h100"]


def test_an_slo_only_the_fastest_candidate_meets_selects_it():
    """Just above the H100's one-request floor: the H100 serves some requests, the others none."""
    probe = validate_document(
        doc(with_changes({"slo.itlP95Seconds": 0.005, "placement.gpuTypes": ["h100"]}))
    )
    (h100_floor,) = [float(s) for _, s in ONE_REQUEST_ITL.findall(probe.problems[0].message)]
    itl = round(h100_floor * 1.2, 4)
    spec = with_changes({"slo.itlP95Seconds": itl, "placement.gpuTypes": ["l4", "l40s", "h100"]})
    result = validate_document(doc(spec))
    assert result.ok, result.problems
    assert result.plan is not None and result.plan.selected_gpu_type == "h100"
    refused = {p.gpu_type: p.reason for p in result.plan.plans if p.safe_concurrency == 0}
    assert set(refused) == {"l4", "l40s"}
    assert all(f"itlP95Seconds {itl:g} s is below" in reason for reason in refused.values())


SUGGESTED_CHUNK = re.compile(r"spec\.engine\.maxNumBatchedTokens ≤ (\d+)")


def _prefill_warnings(spec: dict[str, Any]) -> list[str]:
    result = validate_document(doc(spec))
    assert result.ok and result.plan is not None, result.problems
    (plan,) = result.plan.plans
    return [w for w in plan.warnings if "prefills a p95 prompt" in w]


def test_the_suggested_prefill_chunk_clears_the_itl_warning():
    """8192-token steps on an H100 make ITL p95 ~0.1 s; the chunk the warning names fixes it."""
    spec = with_changes({"slo.itlP95Seconds": 0.08, "placement.gpuTypes": ["h100"]})
    (warning,) = _prefill_warnings(spec)
    assert "spec.slo.itlP95Seconds 0.08" in warning
    chunk = int(SUGGESTED_CHUNK.findall(warning)[0])
    assert 0 < chunk < 8192
    assert _prefill_warnings({**spec, "engine": {"maxNumBatchedTokens": chunk}}) == []
    # one grain more is still too slow: the suggestion is the largest that works
    too_big = {**spec, "engine": {"maxNumBatchedTokens": chunk + 256}}
    assert _prefill_warnings(too_big)


def test_a_loose_itl_target_gets_no_prefill_warning():
    spec = with_changes({"slo.itlP95Seconds": 1.0, "placement.gpuTypes": ["h100"]})
    assert _prefill_warnings(spec) == []
