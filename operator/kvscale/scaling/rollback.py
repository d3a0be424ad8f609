"""Rollout guardrails: a pure state machine that bakes a flag/capacity change and rolls it back.

Lifecycle: `on_spec_change` records the running revision as last-known-good and starts a bake
window for the candidate; `evaluate_rollout` runs every tick of that window against the
guardrails; on a breach it tells the caller to restore the last-known-good pod template and
remembers the candidate's hash as refused until the spec changes again.

The caller hashes only what changes the rendered engine flags or the capacity (max context, KV
dtype, max-num-seqs, engine version, GPU type); replica changes never come through here.

Latency guardrails compare against both the SLO and the pre-change baseline: a change is blamed
for a p95 above the SLO only if the baseline met it, and for any p95 above `baseline_factor_max`
times the baseline. A fleet that was already out of SLO is not rolled back for staying there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from kvscale.scaling import reasons
from kvscale.scaling.terms import rate_over
from kvscale.scaling.types import Signals

MAX_REFUSED_HASHES = 16  # refused spec hashes kept (bounded state in CR status)


class RolloutPhase(StrEnum):
    IDLE = "idle"
    BAKING = "baking"
    ROLLED_BACK = "rolled_back"


class RolloutAction(StrEnum):
    NONE = "none"  # nothing to do this tick
    APPLY = "apply"  # roll the candidate out (spec change accepted)
    REFUSE = "refuse"  # the spec hash was rolled back before: do not apply it
    ROLLBACK = "rollback"  # restore the last-known-good pod template now
    PROMOTE = "promote"  # the bake passed: the candidate becomes last-known-good


@dataclass(frozen=True)
class GuardrailSnapshot:
    """The serving signals a candidate is compared with (taken before the change)."""

    preemptions_per_s: float | None = None
    rejections_per_s: float | None = None
    ttft_p95_s: float | None = None
    itl_p95_s: float | None = None

    @classmethod
    def from_signals(cls, signals: Signals | None) -> GuardrailSnapshot:
        if signals is None:
            return cls()
        return cls(
            signals.preemptions_per_s,
            signals.rejections_per_s,
            signals.ttft_p95_s,
            signals.itl_p95_s,
        )


@dataclass(frozen=True)
class Guardrails:
    """What a candidate must hold during its bake window (seconds in `_s`)."""

    # The defaults are the CRD's: spec.rollout (kvscale.api.policy.RolloutSpec) reads them here.
    bake_window_s: float = 300.0  # a load cycle of a chat workload, with warm caches
    preemptions_per_s_max: float = 0.5  # fleet-wide preemption rate a healthy revision stays under
    rejections_per_s_max: float = 0.1  # 429/503 per second
    ttft_p95_target_s: float | None = None  # the deployment's SLO (None: baseline only)
    itl_p95_target_s: float | None = None
    baseline_factor_max: float = 1.5  # p95 (or a rate already over its limit) / pre-change
    restarts_max: int = 2  # container restarts of candidate pods tolerated during the bake
    plan_drift_frac: float = 0.1  # live num_gpu_blocks below the plan by more than this
    ttft_baseline_factor_max: float | None = None  # per-latency override of baseline_factor_max
    itl_baseline_factor_max: float | None = None


@dataclass(frozen=True)
class RolloutHealth:
    """What the caller observed of the candidate at one tick."""

    signals: Signals | None  # None: the metrics read failed
    restarts: int = 0  # container restarts of candidate pods since the rollout started
    oom_killed: int = 0  # candidate containers last terminated with OOMKilled
    crash_looping: int = 0  # candidate containers waiting in CrashLoopBackOff
    live_num_gpu_blocks: int | None = None  # engine-reported KV blocks (min over pods)
    planned_num_gpu_blocks: int | None = None  # the capacity plan's figure


@dataclass(frozen=True)
class RolloutState:
    """Remembered between ticks (stored by the caller in CR status)."""

    phase: RolloutPhase = RolloutPhase.IDLE
    last_known_good_hash: str | None = None
    candidate_hash: str | None = None
    baseline: GuardrailSnapshot = GuardrailSnapshot()
    bake_started_s: float | None = None
    refused_hashes: tuple[str, ...] = ()
    healthy_checks: int = 0  # ticks of this bake with metrics that passed every guardrail


@dataclass(frozen=True)
class Breach:
    """One guardrail that failed, with the numbers for the condition message."""

    reason: str  # a GUARDRAIL_* constant
    observed: float
    limit: float
    detail: str


@dataclass(frozen=True)
class RolloutVerdict:
    action: RolloutAction
    reason: str
    message: str
    restore_hash: str | None = None  # on ROLLBACK: the pod template to restore
    breaches: tuple[Breach, ...] = ()


def on_spec_change(
    state: RolloutState,
    new_hash: str,
    running_hash: str | None,
    baseline: GuardrailSnapshot,
    now_s: float,
) -> tuple[RolloutVerdict, RolloutState]:
    """Accept or refuse a spec change that alters the rendered flags or the capacity."""
    if new_hash in state.refused_hashes:
        message = (
            f"spec {new_hash} was rolled back for breaching guardrails; change the spec"
            " (not just re-apply it) to try again"
        )
        return RolloutVerdict(RolloutAction.REFUSE, reasons.SPEC_REFUSED, message), state
    if new_hash in (running_hash, state.candidate_hash):
        return RolloutVerdict(RolloutAction.NONE, reasons.ROLLOUT_NOOP, "spec unchanged"), state
    if running_hash is None:
        message = f"first revision {new_hash}: nothing to compare with, no bake"
        fresh = replace(state, phase=RolloutPhase.IDLE, last_known_good_hash=new_hash)
        return RolloutVerdict(RolloutAction.APPLY, reasons.ROLLOUT_APPLY, message), fresh
    if state.phase is RolloutPhase.BAKING:
        # The running candidate is unproven: keep the older last-known-good and its baseline.
        good, kept_baseline = state.last_known_good_hash, state.baseline
    else:
        good, kept_baseline = running_hash, baseline
    baking = replace(
        state,
        phase=RolloutPhase.BAKING,
        last_known_good_hash=good,
        candidate_hash=new_hash,
        baseline=kept_baseline,
        bake_started_s=now_s,
        healthy_checks=0,
    )
    message = f"rolling out {new_hash}; last-known-good {good}; baking"
    return RolloutVerdict(RolloutAction.APPLY, reasons.ROLLOUT_APPLY, message), baking


def evaluate_rollout(
    state: RolloutState, guardrails: Guardrails, health: RolloutHealth, now_s: float
) -> tuple[RolloutVerdict, RolloutState]:
    """Judge the candidate during its bake: roll back on a breach, promote when it passed."""
    started_s = state.bake_started_s
    if state.phase is not RolloutPhase.BAKING or started_s is None:
        return RolloutVerdict(RolloutAction.NONE, reasons.ROLLOUT_IDLE, "no rollout baking"), state
    breaches = find_breaches(state.baseline, guardrails, health)
    if breaches:
        return _roll_back(state, breaches)
    if health.signals is not None:
        state = replace(state, healthy_checks=state.healthy_checks + 1)
    elapsed_s = now_s - started_s
    if elapsed_s >= guardrails.bake_window_s and state.healthy_checks > 0:
        message = (
            f"{state.candidate_hash} held every guardrail for {elapsed_s:.0f}s"
            f" ({state.healthy_checks} checks): now last-known-good"
        )
        promoted = replace(
            state,
            phase=RolloutPhase.IDLE,
            last_known_good_hash=state.candidate_hash,
            candidate_hash=None,
            bake_started_s=None,
        )
        return RolloutVerdict(RolloutAction.PROMOTE, reasons.ROLLOUT_PROMOTED, message), promoted
    message = (
        f"baking {state.candidate_hash}: {elapsed_s:.0f}s of {guardrails.bake_window_s:.0f}s,"
        f" {state.healthy_checks} healthy check(s)"
    )
    return RolloutVerdict(RolloutAction.NONE, reasons.ROLLOUT_BAKING, message), state


def _roll_back(
    state: RolloutState, breaches: tuple[Breach, ...]
) -> tuple[RolloutVerdict, RolloutState]:
    details = "; ".join(breach.detail for breach in breaches)
    good, candidate = state.last_known_good_hash, state.candidate_hash
    if good is None:
        message = f"{candidate} breaches guardrails ({details}) but no last-known-good exists"
        return RolloutVerdict(
            RolloutAction.NONE, reasons.NO_LAST_KNOWN_GOOD, message, None, breaches
        ), state
    refused = state.refused_hashes
    if candidate is not None and candidate not in refused:
        refused = (*refused, candidate)[-MAX_REFUSED_HASHES:]
    rolled_back = replace(
        state,
        phase=RolloutPhase.ROLLED_BACK,
        candidate_hash=None,
        bake_started_s=None,
        refused_hashes=refused,
        healthy_checks=0,
    )
    message = f"rolled back {candidate} to {good}: {details}"
    verdict = RolloutVerdict(RolloutAction.ROLLBACK, breaches[0].reason, message, good, breaches)
    return verdict, rolled_back


def find_breaches(
    baseline: GuardrailSnapshot, guardrails: Guardrails, health: RolloutHealth
) -> tuple[Breach, ...]:
    """Every guardrail the candidate fails now, pod failures first (they need no metrics)."""
    found = [*_pod_breaches(guardrails, health), *_plan_drift_breach(guardrails, health)]
    signals = health.signals
    if signals is not None:
        found.extend(_rate_breaches(baseline, guardrails, signals))
        found.extend(_latency_breaches(baseline, guardrails, signals))
    return tuple(found)


def _pod_breaches(guardrails: Guardrails, health: RolloutHealth) -> list[Breach]:
    checks = (
        (reasons.GUARDRAIL_CRASH_LOOP, health.crash_looping, 0, "container(s) in CrashLoopBackOff"),
        (reasons.GUARDRAIL_OOM_KILLED, health.oom_killed, 0, "container(s) OOMKilled"),
        (reasons.GUARDRAIL_RESTARTS, health.restarts, guardrails.restarts_max, "restart(s)"),
    )
    return [
        Breach(reason, count, limit, f"{count} {what} (max {limit})")
        for reason, count, limit, what in checks
        if count > limit
    ]


def _plan_drift_breach(guardrails: Guardrails, health: RolloutHealth) -> list[Breach]:
    live, planned = health.live_num_gpu_blocks, health.planned_num_gpu_blocks
    if live is None or planned is None or planned <= 0:
        return []
    floor = planned * (1.0 - guardrails.plan_drift_frac)
    if live >= floor:
        return []
    shortfall = 1.0 - live / planned
    detail = (
        f"live num_gpu_blocks {live} is {shortfall:.0%} below the plan's {planned}"
        f" (max {guardrails.plan_drift_frac:.0%})"
    )
    return [Breach(reasons.GUARDRAIL_PLAN_DRIFT, live, floor, detail)]


def _rate_breaches(
    baseline: GuardrailSnapshot, guardrails: Guardrails, signals: Signals
) -> list[Breach]:
    checks = (
        (
            reasons.GUARDRAIL_PREEMPTIONS,
            "preemptions",
            signals.preemptions_per_s,
            guardrails.preemptions_per_s_max,
            baseline.preemptions_per_s,
        ),
        (
            reasons.GUARDRAIL_REJECTIONS,
            "rejections",
            signals.rejections_per_s,
            guardrails.rejections_per_s_max,
            baseline.rejections_per_s,
        ),
    )
    found = []
    for reason, name, observed, limit, before in checks:
        if observed is None or observed <= limit:
            continue
        if (
            before is not None
            and before > limit
            and observed <= before * guardrails.baseline_factor_max
        ):
            continue  # already over the limit before the change, and not much worse
        detail = f"{rate_over(name, observed, limit)} (before: {_fmt(before, '/s')})"
        found.append(Breach(reason, observed, limit, detail))
    return found


def _latency_breaches(
    baseline: GuardrailSnapshot, guardrails: Guardrails, signals: Signals
) -> list[Breach]:
    default_factor = guardrails.baseline_factor_max
    checks = (
        (
            reasons.GUARDRAIL_TTFT,
            "TTFT",
            signals.ttft_p95_s,
            guardrails.ttft_p95_target_s,
            baseline.ttft_p95_s,
            guardrails.ttft_baseline_factor_max or default_factor,
        ),
        (
            reasons.GUARDRAIL_ITL,
            "ITL",
            signals.itl_p95_s,
            guardrails.itl_p95_target_s,
            baseline.itl_p95_s,
            guardrails.itl_baseline_factor_max or default_factor,
        ),
    )
    found = []
    for reason, name, observed, slo, before, factor in checks:
        if observed is None:
            continue
        if before is not None and before > 0 and observed > before * factor:
            detail = f"{name} p95 {observed:.3f}s > {factor:.1f}× the pre-change {before:.3f}s"
            found.append(Breach(reason, observed, before * factor, detail))
            continue
        baseline_met_slo = before is None or (slo is not None and before <= slo)
        if slo is not None and observed > slo and baseline_met_slo:
            detail = f"{name} p95 {observed:.3f}s > SLO {slo:.3f}s (before: {_fmt(before, 's')})"
            found.append(Breach(reason, observed, slo, detail))
    return found


def _fmt(value: float | None, unit: str) -> str:
    return "unknown" if value is None else f"{value:.3g}{unit}"
