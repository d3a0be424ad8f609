"""Reason constants of scaling decisions and rollout verdicts.

They go straight into `status.conditions[].reason` and Kubernetes Events, so they are stable,
CamelCase identifiers (the Kubernetes convention for condition reasons). Tests and dashboards
match on them; renaming one is a breaking change.
"""

from __future__ import annotations

from typing import Final

# --- terms of the pipeline (what drives the raw recommendation) ---------------------------------
KV_DEMAND: Final = "KvDemand"  # KV tokens in use at the target utilisation
PREFILL_DEMAND: Final = "PrefillDemand"  # prompt tokens/s at the target share of prefill capacity
QUEUE: Final = "QueueGrowth"  # waiting requests / queue time over target
ALLOCATION_FAILURE: Final = "AllocationFailure"  # preemptions or engine rejections
SLO_BREACH: Final = "SloBreach"  # TTFT / ITL p95 over target
FORECAST: Final = "ForecastDemand"  # KV / prefill demand expected one cold start ahead
NO_PRESSURE: Final = "NoPressure"  # a term that abstains (its signal is quiet or unknown)

# --- holds and guards (why the replica count did not follow the raw recommendation) -------------
WITHIN_TOLERANCE: Final = "WithinTolerance"  # inside the dead band around the target
STABILISING: Final = "Stabilising"  # held by the stabilisation window
COOLDOWN: Final = "Cooldown"  # scale-down too soon after the last scale change
COLD_START_HOLD: Final = "ColdStartHold"  # replicas still starting count as incoming capacity
LATENCY_HEADROOM_HOLD: Final = "LatencyHeadroomHold"  # TTFT too near its target to shed one
METRICS_MISSING_HOLD: Final = "MetricsMissingHold"  # the read failed: hold the current count
METRICS_PARTIAL_HOLD: Final = "MetricsPartialHold"  # partial / unknown data: no scale-down
FALLBACK: Final = "Fallback"  # N failed reads: the declared fallback count applies
STEP_LIMITED: Final = "StepLimited"  # capped by max_scale_up_step / max_scale_down_step
CLAMPED_MIN: Final = "ClampedToMin"
CLAMPED_MAX: Final = "ClampedToMax"
RECOMMEND_ONLY: Final = "RecommendOnly"  # recommend mode: decision written to status only
SCALE_DOWN_REVERTED: Final = "ScaleDownReverted"  # a scale-down regressed: undone at once

# --- rollout verdicts (RolledBack condition reasons and related) --------------------------------
ROLLOUT_IDLE: Final = "NoRolloutInProgress"
ROLLOUT_BAKING: Final = "Baking"
ROLLOUT_PROMOTED: Final = "BakePassed"
ROLLOUT_APPLY: Final = "SpecChangeApplied"
ROLLOUT_NOOP: Final = "SpecUnchanged"
SPEC_REFUSED: Final = "SpecRefusedAfterRollback"
NO_LAST_KNOWN_GOOD: Final = "NoLastKnownGood"
GUARDRAIL_PREEMPTIONS: Final = "PreemptionRateRegressed"
GUARDRAIL_TTFT: Final = "TtftRegressed"
GUARDRAIL_ITL: Final = "ItlRegressed"
GUARDRAIL_REJECTIONS: Final = "RejectionRateRegressed"
GUARDRAIL_RESTARTS: Final = "PodRestarts"
GUARDRAIL_OOM_KILLED: Final = "OomKilled"
GUARDRAIL_CRASH_LOOP: Final = "CrashLoopBackOff"
GUARDRAIL_PLAN_DRIFT: Final = "PlanDrift"
