"""Every command line kvscale renders is one the real engine's own parser accepts.

Each example LLMDeployment is moved to the installed vLLM release and planned for every one of
its candidate GPU types; the argv kvscale renders for each plan goes through `vllm serve`'s
argument parser, its serve validation and `AsyncEngineArgs.from_cli_args` (e2e/engine/
parse_flags.py; nothing starts). The model reference is the one adaptation: the parser resolves
it on the hub, so a local tiny model stands in for the example's model id.

The flag table is checked against the parser the other way too: every flag kvscale believes the
release has is one of the parser's options, every flag it believes the release lacks (such as
`--swap-space`, removed in 0.18) is refused by it, and the KV-cache dtypes and the online
quantization kvscale may render are among the parser's choices.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.realvllm import EngineEnv
from kvscale.api.validation import load_documents, validate_documents
from kvscale.capacity import EngineVersion
from kvscale.engines import render
from kvscale.engines.vllm import FLAGS, KV_DTYPES

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KV_DTYPE_FLAG = "--kv-cache-dtype"
QUANTIZATION_FLAG = "--quantization"  # a free string to the parser: see parse_flags.py
STAND_IN_MODEL = "llama-gqa"


def example_argvs(release: str) -> dict[str, list[str]]:
    """`<example>/<gpu type>` -> the flags kvscale renders there, with the engine at `release`."""
    argvs: dict[str, list[str]] = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = [copy.deepcopy(d) for d in load_documents(path.read_text(encoding="utf-8"))]
        if not any(doc.get("kind") == "LLMDeployment" for doc in docs):
            continue  # e.g. the Deployment an adopt example targets
        for doc in docs:
            if doc.get("kind") == "LLMDeployment":
                doc["spec"]["engine"] = {**doc["spec"].get("engine", {}), "name": "vllm"}
                doc["spec"]["engine"]["version"] = release
        for result in validate_documents(docs):
            assert result.plan is not None, [str(p) for p in result.problems]
            spec = result.spec
            assert spec is not None
            for status, plan in zip(result.plan.plans, result.plan.capacity_plans, strict=True):
                rendered = render(
                    plan,
                    model_ref="model",
                    port=spec.engine.port,
                    extra_args=spec.engine.extra_args,
                )
                argvs[f"{path.stem}/{result.name}/{status.gpu_type}"] = list(rendered.argv)
    return argvs


def _with_quantization(rendered: dict[str, list[str]]) -> list[list[str]]:
    return [argv for argv in rendered.values() if QUANTIZATION_FLAG in argv]


@pytest.fixture(scope="module")
def rendered(engine_env: EngineEnv) -> dict[str, list[str]]:
    return example_argvs(engine_env.version)


@pytest.fixture(scope="module")
def lacking(engine_env: EngineEnv) -> list[str]:
    """Flags kvscale's table says the installed release does not have."""
    version = EngineVersion.parse(engine_env.version)
    return [spec.name for spec in FLAGS if not spec.exists_in(version)]


@pytest.fixture(scope="module")
def parsed(
    engine_env: EngineEnv,
    tiny_models: dict[str, Path],
    rendered: dict[str, list[str]],
    lacking: list[str],
) -> dict[str, Any]:
    model = str(tiny_models[STAND_IN_MODEL])
    cases = [{"id": key, "argv": [model, *argv]} for key, argv in rendered.items()]
    for flag in lacking:  # refused whether or not it takes a value
        cases += [
            {"id": f"lacks {flag}", "argv": [model, flag]},
            {"id": f"lacks {flag} 4", "argv": [model, flag, "4"]},
        ]
    at_load = sorted(
        {argv[argv.index(QUANTIZATION_FLAG) + 1] for argv in _with_quantization(rendered)}
    )
    request = {
        "cases": cases,
        "choices_of": [KV_DTYPE_FLAG],
        "quantize_at_load": {"model": model, "methods": at_load},
    }
    out: dict[str, Any] = engine_env.run_script("parse_flags.py", [], stdin=request)
    out["by_id"] = {r["id"]: r for r in out["results"]}
    return out


def test_every_rendered_argv_is_accepted_by_the_engines_parser(
    rendered: dict[str, list[str]], parsed: dict[str, Any]
) -> None:
    refused = {
        k: parsed["by_id"][k]["error"] for k in rendered if not parsed["by_id"][k]["accepted"]
    }
    assert not refused, refused
    assert len(rendered) >= 10  # every example, every candidate GPU type
    print(f"\n{len(rendered)} rendered argv accepted by vLLM's serve parser")


def test_flags_the_release_lacks_are_refused(lacking: list[str], parsed: dict[str, Any]) -> None:
    assert "--swap-space" in lacking
    for flag in lacking:
        for case in (f"lacks {flag}", f"lacks {flag} 4"):
            assert not parsed["by_id"][case]["accepted"], case


def test_flags_the_release_has_are_options_of_its_parser(
    engine_env: EngineEnv, parsed: dict[str, Any]
) -> None:
    version = EngineVersion.parse(engine_env.version)
    known = [spec.name for spec in FLAGS if spec.exists_in(version)]
    assert sorted(set(known) - set(parsed["options"])) == []


def test_kv_cache_dtypes_kvscale_renders_are_engine_choices(
    engine_env: EngineEnv, parsed: dict[str, Any]
) -> None:
    version = EngineVersion.parse(engine_env.version)
    ours = {row.value for row in KV_DTYPES if row.available.contains(version)}
    theirs = set(parsed["choices"][KV_DTYPE_FLAG])
    assert sorted(ours - theirs) == []


def test_the_online_quantization_kvscale_renders_quantizes_a_16_bit_checkpoint(
    rendered: dict[str, list[str]], parsed: dict[str, Any]
) -> None:
    """The `--quantization` value an example renders (fp8 on a 16-bit catalog id), resolved on
    the 16-bit stand-in checkpoint by vLLM's own model loader: a quantization applied as it
    loads, under the name the release does not call deprecated."""
    assert _with_quantization(rendered), "no example renders --quantization"
    resolved = parsed["quantize_at_load"]
    assert resolved, resolved
    for method, found in resolved.items():
        assert method in parsed["quantization_methods"]
        assert found["online"], found
        assert not [line for line in found["logged"] if "deprecated" in line.lower()], found
