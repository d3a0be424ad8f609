"""fp8 weights an engine cannot start with (capacity/quantload.py), and the spec and CLI paths
that make a managed engine quantize a 16-bit catalog checkpoint as it loads.

The release boundaries come from the engines' wheels (vLLM's `Fp8Config.get_min_capability`
and `Fp8OnlineLinearMethod`, SGLang's `Fp8Config`); the tests check the behaviour on each side
of them and that each refusal's own fix is one the planner accepts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kvscale.api.convert import plan_deployment
from kvscale.api.docs import MINIMAL_SPEC
from kvscale.api.models import LLMDeploymentSpec
from kvscale.capacity import PlanRequest, find_gpu, find_model, plan_capacity
from kvscale.capacity.planner import ENGINE_BUDGETS
from kvscale.capacity.quantload import load_peak_bytes, weights_refusal
from kvscale.capacity.rules import CUDA_CONTEXT_BYTES
from kvscale.capacity.types import OnlineQuantization
from kvscale.capacity.weights import with_quantization
from kvscale.cli import main as cli_main
from kvscale.sim.engine_args import parse_engine_args

LLAMA_70B = find_model("meta-llama/Llama-3.3-70B-Instruct")
LLAMA_8B = find_model("meta-llama/Llama-3.1-8B-Instruct")


def _online(base: Any, engine: str, version: str, gpu: str, tp: int = 1) -> PlanRequest:
    assert base.weights_bytes is not None
    return PlanRequest(
        model=with_quantization(base, "fp8"),
        gpu=find_gpu(gpu),
        engine=engine,
        engine_version=version,
        tensor_parallel=tp,
        max_model_len_tokens=4096,
        online_quantization=OnlineQuantization("fp8", base.weights_bytes),
    )


def _refusal(request: PlanRequest) -> str:
    plan = plan_capacity(request)
    return plan.reason if not plan.fits else ""


@pytest.mark.parametrize(
    ("engine", "version", "context_apart"),
    [
        ("vllm", "0.11.0", True),  # non-torch counted from a snapshot taken after the context
        ("vllm", "0.9.0", False),  # total − torch allocated: the context is in the charge
        ("sglang", "0.5.9", False),  # its start-up charge holds the context
    ],
)
def test_the_load_check_counts_the_cuda_context_the_non_torch_charge_leaves_out(
    engine: str, version: str, context_apart: bool
) -> None:
    request = _online(LLAMA_8B, engine, version, "H100")
    peak = load_peak_bytes(request)
    assert peak is not None
    budget = ENGINE_BUDGETS[engine](request)  # the engine's own non-torch charge
    runtime = budget.load_runtime_bytes
    device = peak + budget.non_torch_bytes  # the 16-bit weights and the charge fill it
    assert bool(weights_refusal(request, runtime, device)) is context_apart
    assert weights_refusal(request, runtime, device + CUDA_CONTEXT_BYTES) == ""


@pytest.mark.parametrize(
    ("engine", "version", "holds_16_bit"),
    [
        ("vllm", "0.11.0", True),
        ("vllm", "0.15.0", True),  # Fp8OnlineLinearMethod, still torch.empty in the model dtype
        ("vllm", "0.16.0", False),  # meta device, materialised layer by layer
        ("vllm", "0.19.0", False),
        ("sglang", "0.5.9", True),
        ("tgi", "3.3.7", False),  # quantizes each tensor as it loads it
    ],
)
def test_the_whole_16_bit_checkpoint_refuses_a_gpu_it_does_not_fit(
    engine: str, version: str, holds_16_bit: bool
) -> None:
    request = _online(LLAMA_70B, engine, version, "H100")  # 70B in bf16: ~131 GiB > 79 GiB
    assert (load_peak_bytes(request) is not None) is holds_16_bit
    reason = _refusal(request)
    assert ("whole 16-bit checkpoint" in reason) is holds_16_bit
    # the served weights are fp8 in every case: what the KV budget is computed from
    assert plan_capacity(request).weights_bytes < 0.55 * LLAMA_70B.weights_bytes


def test_the_refusal_names_a_tensor_parallel_size_that_loads() -> None:
    reason = _refusal(_online(LLAMA_70B, "vllm", "0.11.0", "H100"))
    suggested = int(reason.split("--tensor-parallel-size ")[1].split()[0])
    assert suggested > 1
    fixed = _online(LLAMA_70B, "vllm", "0.11.0", "H100", tp=suggested)
    assert "whole 16-bit checkpoint" not in _refusal(fixed)
    # and a checkpoint that fits whole is not refused at all
    assert "16-bit" not in _refusal(_online(LLAMA_8B, "vllm", "0.11.0", "H100"))


@pytest.mark.parametrize(
    ("engine", "version", "gpu", "refused"),
    [
        ("vllm", "0.13.0", "T4", True),  # Fp8Config asks capability 80 up to 0.13
        ("vllm", "0.14.0", "T4", False),  # 75 from 0.14.0
        ("vllm", "0.19.0", "V100-SXM2-32GB", True),  # 7.0 < 7.5
        ("sglang", "0.5.9", "T4", True),  # SGLang asks 80
        ("vllm", "0.11.0", "L4", False),  # 8.9
        ("vllm", "0.11.0", "MI300X", False),  # ROCm reports its gfx target: the check passes
        ("tgi", "2.1.1", "A100-80GB", True),  # torch._scaled_mm: 8.9
        ("tgi", "2.1.1", "L4", False),
        ("tgi", "2.2.0", "A100-80GB", False),  # Marlin fp8 on 8.x
        ("tgi", "3.3.7", "T4", True),
    ],
)
def test_fp8_weights_need_the_engines_compute_capability(
    engine: str, version: str, gpu: str, refused: bool
) -> None:
    request = _online(LLAMA_8B, engine, version, gpu)
    assert ("compute capability" in _refusal(request)) is refused
    # a checkpoint quantized ahead of time is refused the same way: the check is the method's
    ahead = replace(request, online_quantization=None)
    assert ("compute capability" in weights_refusal(ahead, 0, 2**40)) is refused


def _ahead(method: str, version: str, gpu: str) -> PlanRequest:
    """Llama-3.1-8B from a checkpoint quantized ahead of time with `method`."""
    return PlanRequest(
        model=with_quantization(LLAMA_8B, method),
        gpu=find_gpu(gpu),
        engine="vllm",
        engine_version=version,
        max_model_len_tokens=4096,
    )


@pytest.mark.parametrize(
    ("method", "version", "gpu", "refused"),
    [
        ("awq", "0.11.0", "V100-SXM2-32GB", True),  # AWQConfig asks 75 (awq_marlin 80)
        ("awq", "0.11.0", "T4", False),
        ("gptq", "0.33.0", "V100-SXM2-32GB", False),  # GPTQConfig (auto_gptq.py) asks 60
        ("mxfp4", "0.19.0", "T4", True),  # Mxfp4Config asks 80
        ("mxfp4", "0.19.0", "A100-80GB", False),
        ("nvfp4", "0.13.0", "T4", True),  # ModelOptNvFp4Config: 80 up to 0.13, 75 from 0.14
        ("nvfp4", "0.14.0", "T4", False),
        ("bnb-4bit", "0.27.0", "V100-SXM2-32GB", False),  # BitsAndBytesConfig asks 70
        ("compressed-tensors", "0.19.0", "V100-SXM2-32GB", False),  # per scheme: not checked
    ],
)
def test_a_quantized_checkpoint_needs_its_methods_compute_capability(
    method: str, version: str, gpu: str, refused: bool
) -> None:
    reason = _refusal(_ahead(method, version, gpu))
    assert (f"runs {method} weights from compute capability" in reason) is refused


@pytest.mark.parametrize(
    ("method", "version", "fix", "accepted"),
    [
        # Mxfp4Config: in the 0.10.1 wheel's QuantizationMethods, not in 0.10.0's
        ("mxfp4", "0.10.0", "vllm >= 0.10.1", "0.10.1"),
        # "bitsandbytes": in 0.27.0's QuantizationMethods, gone from 0.28.0's
        ("bnb-4bit", "0.28.0", "vllm < 0.28.0", "0.27.0"),
    ],
)
def test_a_release_without_the_method_is_refused_and_names_one_with_it(
    method: str, version: str, fix: str, accepted: str
) -> None:
    reason = _refusal(_ahead(method, version, "H100"))
    assert f"vllm {version} cannot load {method} checkpoints" in reason
    assert fix in reason.split("; fix: ")[1].split("; or ")
    assert _refusal(_ahead(method, accepted, "H100")) == ""


def test_each_capability_fix_is_one_the_planner_accepts() -> None:
    reason = _refusal(_ahead("nvfp4", "0.13.0", "T4"))
    fixes = reason.split("; fix: ")[1].split("; or ")
    assert fixes[0] == "a GPU type of capability 8.0 or more"
    assert _refusal(_ahead("nvfp4", "0.13.0", "A100-80GB")) == ""
    assert fixes[1] == "vllm >= 0.14.0" and _refusal(_ahead("nvfp4", "0.14.0", "T4")) == ""
    offered = fixes[2].removeprefix("a ").removesuffix(" checkpoint").replace(" or ", ", ")
    for method in offered.split(", ")[1:]:  # after "16-bit"
        assert _refusal(_ahead(method, "0.13.0", "T4")) == "", method


def _spec(**overrides: Any) -> LLMDeploymentSpec:
    model = {"name": LLAMA_70B.name, "quantization": "fp8", **overrides.pop("model", {})}
    spec = {**MINIMAL_SPEC, "model": model, "placement": {"gpuTypes": ["h200_141gb"]}}
    return LLMDeploymentSpec.model_validate({**spec, **overrides})


@pytest.mark.parametrize(
    ("engine", "flag", "value"),
    [
        ({"name": "vllm", "version": "0.19.0"}, "--quantization", "fp8"),
        # "fp8" refuses to quantize at load from vLLM 0.31.0; "fp8_per_tensor" exists from 0.20.0
        ({"name": "vllm", "version": "0.20.0"}, "--quantization", "fp8_per_tensor"),
        ({"name": "vllm", "version": "0.33.0"}, "--quantization", "fp8_per_tensor"),
        ({"name": "sglang"}, "--quantization", "fp8"),
        ({"name": "tgi", "version": "3.3.7"}, "--quantize", "fp8"),
        ({"name": "tgi", "version": "2.0.0"}, "--quantize", "fp8"),  # Quantization::Fp8 since
    ],
)
def test_a_managed_engine_quantizes_the_catalog_checkpoint_it_loads(
    engine: dict[str, str], flag: str, value: str
) -> None:
    result = plan_deployment(_spec(engine=engine))
    plan = result.selected_capacity_plan()
    assert plan is not None and plan.request.online_quantization is not None
    args = list(result.engine_args)
    assert args[args.index(flag) + 1] == value
    assert plan.weights_bytes < 0.55 * LLAMA_70B.weights_bytes
    assert not any("does not size the weights" in w for w in result.warnings)


@pytest.mark.parametrize(
    "overrides",
    [
        {"engine": {"name": "trtllm"}},  # no flag quantizes at load
        {"model": {"quantization": "awq"}},  # needs a checkpoint quantized ahead of time
    ],
)
def test_without_an_online_quantization_the_16_bit_weights_stand_and_the_plan_warns(
    overrides: dict[str, Any],
) -> None:
    result = plan_deployment(_spec(**overrides))
    plan = result.capacity_plans[0]
    assert plan.request.online_quantization is None
    assert plan.weights_bytes >= LLAMA_70B.weights_bytes // 2  # 16-bit, split over no ranks
    assert any("does not size the weights" in w for w in result.warnings)
    assert "--quantization" not in result.engine_args and "--quantize" not in result.engine_args


def test_an_fp8_checkpoint_in_model_uri_is_loaded_as_it_is() -> None:
    uri = "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"
    result = plan_deployment(_spec(model={"uri": uri}, engine={"name": "vllm"}))
    plan = result.selected_capacity_plan()
    assert plan is not None and plan.request.online_quantization is None
    assert "--quantization" not in result.engine_args
    assert plan.weights_bytes < 0.55 * LLAMA_70B.weights_bytes


def test_the_cli_quantizes_at_load_only_the_checkpoint_it_renders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["flags", "--model", LLAMA_70B.name, "--quantization", "fp8", "--gpu", "h200"]
    common += ["--max-model-len", "8192", "--engine-version", "0.19.0", "--args-only"]
    assert cli_main(common) == 0
    assert "--quantization fp8" in capsys.readouterr().out
    other = "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"
    assert cli_main([*common, "--model-ref", other]) == 0
    assert "--quantization" not in capsys.readouterr().out
    # vLLM 0.11 holds the 16-bit checkpoint first: one H100 refuses it, exit 2
    old = ["flags", "--model", LLAMA_70B.name, "--quantization", "fp8", "--gpu", "h100"]
    assert cli_main([*old, "--max-model-len", "8192", "--engine-version", "0.11.0"]) == 2
    assert "whole 16-bit checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("engine", "version"), [("vllm", "0.19.0"), ("vllm", "0.33.0"), ("sglang", "0.5.9")]
)
def test_the_simulated_engine_quantizes_as_the_rendered_flag_says(
    engine: str, version: str
) -> None:
    """The simulator reads the argv the operator renders: the same flag gives it fp8 weights,
    so its pool is the plan's (the e2e examples scenario compares the two on a real API)."""
    result = plan_deployment(_spec(engine={"name": engine, "version": version}))
    plan = result.selected_capacity_plan()
    assert plan is not None and result.selected_gpu_type is not None
    argv = [*result.engine_command, *result.engine_args]
    started = parse_engine_args(engine, version, argv, result.selected_gpu_type)
    assert started.request.online_quantization == plan.request.online_quantization
    assert plan_capacity(started.request).num_blocks == plan.num_blocks
    without = [a for a in argv if a not in ("--quantization", "fp8", "fp8_per_tensor")]
    unquantized = parse_engine_args(engine, version, without, result.selected_gpu_type)
    assert unquantized.request.model.weights_bytes == LLAMA_70B.weights_bytes
