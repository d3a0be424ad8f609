"""The simulator against the real engine: the same requests, the same pool and block size.

kvscale's simulator (`kvscale.sim`) is planned from the very flags the real engine started with
(the pressure run's argv) and given the same requests of 500 + 500 tokens, all at once. The load
is one HTTP request carrying every prompt, handed to the engine while its scheduler is paused
and resumed once every request is in its queue, so both schedulers start from the same queue.
Had a request still been on its way while the engine had room, the two would diverge; the test
checks in the engine's log that every request was handed over before its first step.

Time cannot be compared (the simulator prices steps on a GPU roofline, the engine runs on CPU),
so both are compared on *progress*:
- KV usage after every engine step, from the engine's step log (STEP_LOG_FLAG), against the
  simulator's after the same number of scheduled (prefill + decode) tokens, within the
  tolerances below;
- the first preemption, in generated tokens (the counter both export): the simulator's must come
  within ONSET_TOLERANCE_TOKENS of the engine's, which the /metrics samples bracket (between the
  last sample without one and the first with one: a loaded machine answers seconds apart).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

import pytest
from pressure_run import SHAPE, PressureRun

from harness.pressure import ADDED_LINE
from kvscale.capacity import blocks_for_tokens
from kvscale.sim.engine import EngineSim, SimRequest
from kvscale.sim.setup import build_engine_config

pytestmark = pytest.mark.engine

# KV usage: each engine step is compared with the nearest simulated state at the same progress:
# the simulated steps from the last one short of the step's scheduled tokens to the first one
# past them (the two schedulers may split a prefill into chunks at different steps). The mean
# absolute difference must stay under USAGE_TOLERANCE_MEAN, and 90 % of the steps must be within
# one request's full footprint (32 of the 127 usable blocks here) plus one block. Not the
# maximum: a step that finishes three requests frees three footprints at once.
USAGE_TOLERANCE_MEAN = 0.08
# One request's prompt (500 tokens) is the scheduling quantum around the first preemption.
ONSET_TOLERANCE_TOKENS = 500

# One line per engine step (vllm/v1/metrics/loggers.py, LoggingStatLogger, 0.32.0).
STEP_LINE = re.compile(
    r"Iteration\((?P<index>\d+)\): (?P<ctx_reqs>\d+) context requests, (?P<ctx>\d+) context "
    r"tokens, (?P<gen_reqs>\d+) generation requests, (?P<gen>\d+) generation tokens, .*"
    r"KV cache usage: (?P<usage_pct>[\d.]+)%"
)


@dataclass(frozen=True)
class Step:
    """The state after one engine step."""

    scheduled: int  # prefill + decode tokens scheduled up to and including this step
    usage: float


@dataclass(frozen=True)
class Point:
    """One read of the engine's /metrics, or the simulator after one step."""

    generated: float
    preemptions: float


def engine_steps(log_text: str) -> list[Step]:
    steps, scheduled = [], 0
    for match in STEP_LINE.finditer(log_text):
        scheduled += int(match["ctx"]) + int(match["gen"])
        steps.append(Step(scheduled, float(match["usage_pct"]) / 100))
    return steps


def engine_points(run: PressureRun) -> list[Point]:
    generated, preemptions = run.names.generation_tokens, run.names.preemptions
    assert generated and preemptions
    return [
        Point(s.values[generated], s.values[preemptions])
        for s in run.sampler.samples
        if generated in s.values and preemptions in s.values
    ]


def simulate(run: PressureRun) -> tuple[list[Step], list[Point]]:
    """The simulator's state after every scheduler step of the same request set, all arriving at
    once."""
    engine = EngineSim(build_engine_config(run.plan))
    for index in range(SHAPE.count):
        engine.add_request(SimRequest(index, 0.0, SHAPE.prompt_tokens, SHAPE.output_tokens))
    steps, points = [Step(0, 0.0)], [Point(0, 0)]
    while engine.has_work:
        engine.run_until(engine.clock_s + 1e-12)  # exactly one step (or one decode step)
        steps.append(Step(engine.scheduled_tokens_total, engine.pool.usage_frac))
        points.append(
            Point(
                engine.generation_tokens_total,
                engine.preemptions_reported_total,  # what the exported counter shows
            )
        )
    return steps, points


def usage_gap(sim: list[Step], real: Step) -> float:
    """|real - sim| KV usage against the nearest simulated state at the real step's progress."""
    progress = [s.scheduled for s in sim]
    first = max(bisect.bisect_left(progress, real.scheduled) - 1, 0)
    last = min(bisect.bisect_right(progress, real.scheduled), len(sim) - 1)
    return min(abs(real.usage - s.usage) for s in sim[first : last + 1])


def preemption_onset(points: list[Point]) -> tuple[float, float] | None:
    """Generated tokens of the last point before the first preemption and of the first after."""
    first = next((i for i, p in enumerate(points) if p.preemptions > 0), None)
    if first is None:
        return None
    return points[max(first - 1, 0)].generated, points[first].generated


def test_kv_usage_and_preemption_onset_match_the_real_engine(pressure: PressureRun) -> None:
    log = pressure.log_text
    real_steps, real = engine_steps(log), engine_points(pressure)
    sim_steps, sim = simulate(pressure)
    first_step = STEP_LINE.search(log)
    assert first_step is not None, "the engine logged no step"
    assert log.count(ADDED_LINE) == SHAPE.count
    assert log.rfind(ADDED_LINE) < first_step.start(), "a request arrived after the first step"
    # every prompt and every decode input went through a logged step (preemptions add recompute)
    least = SHAPE.count * (SHAPE.prompt_tokens + SHAPE.output_tokens - 1)
    assert real_steps and real_steps[-1].scheduled >= least, "the step log is incomplete"
    diffs = [usage_gap(sim_steps, step) for step in real_steps]
    mean, p90 = sum(diffs) / len(diffs), sorted(diffs)[int(0.9 * (len(diffs) - 1))]
    plan = pressure.plan
    one_request = blocks_for_tokens(plan, SHAPE.prompt_tokens + SHAPE.output_tokens) + 1
    p90_tolerance = one_request / (plan.num_blocks - 1)  # usage counts the usable blocks
    real_onset, sim_onset = preemption_onset(real), preemption_onset(sim)
    print(
        f"\nKV usage |real - sim| over {len(real_steps)} engine steps "
        f"({len(sim_steps) - 1} simulated): mean {mean:.3f}, p90 {p90:.3f}, max {max(diffs):.3f}; "
        f"tokens scheduled {real_steps[-1].scheduled} (real) vs {sim_steps[-1].scheduled} (sim); "
        f"first preemption after {real_onset} (real, between {len(real)} samples) vs "
        f"{sim_onset and sim_onset[1]} (sim) generated tokens; "
        f"preemptions total {real[-1].preemptions:g} (real) vs {sim[-1].preemptions:g} (sim)"
    )
    assert mean <= USAGE_TOLERANCE_MEAN
    assert p90 <= p90_tolerance
    assert real_onset is not None and sim_onset is not None
    before, after = real_onset
    assert before - ONSET_TOLERANCE_TOKENS <= sim_onset[1] <= after + ONSET_TOLERANCE_TOKENS
