"""What one simulated replica is, derived from the capacity plan (never re-derived here).

The block pool is the plan's `num_blocks`, a request's blocks come from the planner's
`blocks_for_tokens` (so sliding-window and hybrid models allocate as vLLM does) and every step
time comes from the planner's roofline, with the planner's documented efficiency factors.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvscale.capacity import blocks_for_tokens
from kvscale.capacity.roofline import roofline_for
from kvscale.capacity.types import CapacityPlan, SloTargets
from kvscale.scaling import ScalingConfig
from kvscale.sim.engine import EngineConfig
from kvscale.sim.fleet import ColdStart


@dataclass(frozen=True)
class SimSetup:
    """One deployment as the simulator runs it."""

    name: str
    plan: CapacityPlan
    engine: EngineConfig
    scaling: ScalingConfig
    slo: SloTargets
    gpus_per_replica: int
    cold_start_s: float
    usd_per_gpu_hour: float | None = None


def build_engine_config(
    plan: CapacityPlan,
    *,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    enable_prefix_caching: bool | None = None,
) -> EngineConfig:
    """The engine one replica runs: the plan's pool, limits and roofline."""
    roofline = roofline_for(plan)
    req = plan.request

    def blocks(tokens: int) -> int:
        return blocks_for_tokens(plan, tokens)

    return EngineConfig(
        num_blocks=plan.num_blocks,
        block_size_tokens=plan.block_size_tokens,
        max_num_seqs=max_num_seqs or plan.max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens or plan.max_num_batched_tokens,
        max_model_len_tokens=req.max_model_len_tokens,
        step_time_s=roofline.step_time_s,
        blocks_for_tokens=blocks,
        enable_prefix_caching=(
            req.enable_prefix_caching if enable_prefix_caching is None else enable_prefix_caching
        ),
    )


def build_sim_setup(
    name: str,
    plan: CapacityPlan,
    scaling: ScalingConfig,
    slo: SloTargets,
    cold_start: ColdStart | None = None,
) -> SimSetup:
    """A SimSetup from a plan; cold start from per-rank weight bytes (ranks load in parallel)."""
    cold = cold_start or ColdStart()
    return SimSetup(
        name=name,
        plan=plan,
        engine=build_engine_config(plan),
        scaling=scaling,
        slo=slo,
        gpus_per_replica=plan.request.tensor_parallel,
        cold_start_s=cold.seconds(plan.weights_bytes),
        usd_per_gpu_hour=plan.request.gpu.price_usd_per_hour,
    )
