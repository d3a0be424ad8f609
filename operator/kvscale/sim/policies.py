"""Replica-count policies compared by the replay: kvscale, static peak, queue (KEDA), KV threshold.

Every policy sees the same `FleetView` each tick: what the operator (or KEDA / an HPA) would read
from Prometheus. The baselines are implemented as their projects ship them, not tuned down:

* `queue` — KEDA Prometheus scaler on `sum(vllm:num_requests_waiting)`, threshold 5
  (vLLM production-stack's example), through the HPA algorithm: AverageValue target, 10 %
  tolerance, scale-up policies 100 % or 4 pods per 15 s (the larger), scale-down 100 % per
  15 s after a 300 s stabilisation window (HPA defaults).
* `kv-threshold` — target mean KV-cache utilisation 0.8 (llm-d WVA / AIBrix APA style) through
  the same HPA algorithm as a Pods metric: unready pods count as 0 on scale-up.
* `static` — a fixed count (the replay sizes it for the peak).
* `kvscale` — `kvscale.scaling.decide`, the very function the operator runs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from kvscale.scaling import (
    Decision,
    Observation,
    ReplicaCounts,
    ScalerState,
    ScalingConfig,
    Signals,
    decide,
)
from kvscale.scaling.observe import PodPhase

POLICIES: tuple[str, ...] = ("kvscale", "static", "queue", "kv-threshold")

HPA_TOLERANCE_FRAC = 0.1
HPA_SCALE_DOWN_STABILIZATION_S = 300.0
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_PERCENT = 100.0
KEDA_WAITING_THRESHOLD = 5.0
KV_THRESHOLD_TARGET_FRAC = 0.8


@dataclass(frozen=True)
class FleetView:
    """What a policy reads at one tick (Prometheus-derived, like the operator's view)."""

    now_s: float
    replicas: ReplicaCounts
    signals: Signals
    pods: tuple[PodPhase, ...] = ()  # the pod facts the replica counts came from


class Policy(Protocol):
    name: str

    def initial_replicas(self) -> int:
        """Replicas the fleet starts with (before the warm-up pre-roll)."""
        ...

    def start(self, now_s: float) -> None:
        """The fleet has run at `initial_replicas()` up to `now_s` (seeds windowed history)."""
        ...

    def desired_replicas(self, now_s: float, view: FleetView) -> int:
        """The replica count to set now (== view.replicas.desired to hold)."""
        ...


class StaticPolicy:
    name = "static"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def initial_replicas(self) -> int:
        return self.replicas

    def start(self, now_s: float) -> None:
        return None

    def desired_replicas(self, now_s: float, view: FleetView) -> int:
        return self.replicas


class HpaPolicy:
    """The Kubernetes HPA replica calculator + default behaviour, on one metric."""

    def __init__(
        self,
        name: str,
        metric: str,
        target: float,
        min_replicas: int,
        max_replicas: int,
        *,
        initial: int | None = None,
    ) -> None:
        if metric not in ("waiting_total", "kv_usage_per_pod"):
            raise ValueError(f"unknown HPA metric {metric!r}")
        self.name = name
        self.metric = metric
        self.target = target
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self._initial = initial if initial is not None else min_replicas
        self._recommendations: list[tuple[float, int]] = []

    def initial_replicas(self) -> int:
        return self._initial

    def start(self, now_s: float) -> None:
        self._recommendations = [(now_s, self._initial)]

    def desired_replicas(self, now_s: float, view: FleetView) -> int:
        current = view.replicas.desired
        raw = self._calculate(view)
        if raw is None:  # metric unavailable: the HPA keeps the current scale
            return current
        raw = max(self.min_replicas, min(self.max_replicas, raw))
        self._recommendations.append((now_s, raw))
        window_start = now_s - HPA_SCALE_DOWN_STABILIZATION_S
        self._recommendations = [(t, r) for t, r in self._recommendations if t >= window_start]
        down_rec = max(r for _, r in self._recommendations)
        desired = current
        if raw > current:
            desired = raw  # scale-up stabilisation window is 0 s by default
        elif down_rec < current:
            desired = down_rec
        up_limit = max(
            current + HPA_SCALE_UP_PODS, math.ceil(current * (1 + HPA_SCALE_UP_PERCENT / 100))
        )
        return max(self.min_replicas, min(self.max_replicas, desired, up_limit))

    def _calculate(self, view: FleetView) -> int | None:
        sig = view.signals
        current = view.replicas.desired
        if self.metric == "waiting_total":  # External metric, AverageValue target
            if sig.num_requests_waiting is None or current == 0:
                return None
            total = sig.num_requests_waiting
            ratio = total / (self.target * current)
            if abs(ratio - 1.0) <= HPA_TOLERANCE_FRAC:
                return current
            return math.ceil(total / self.target)
        ready = sig.pods_reporting
        if sig.kv_usage_frac is None or ready == 0:
            return None
        usage_sum = sig.kv_usage_frac * ready
        pods = ready
        ratio = usage_sum / (ready * self.target)
        if ratio > 1.0 and view.replicas.starting > 0:  # unready pods count as idle on scale-up
            pods = ready + view.replicas.starting
            ratio = usage_sum / (pods * self.target)
            if ratio < 1.0:  # the HPA refuses a recount that would reverse the direction
                return current
        if abs(ratio - 1.0) <= HPA_TOLERANCE_FRAC:
            return current
        return math.ceil(ratio * pods)


class KvscalePolicy:
    """Calls `kvscale.scaling.decide` with the operator's config, keeping its state."""

    name = "kvscale"

    def __init__(
        self, config: ScalingConfig, initial: int | None = None, *, record: bool = False
    ) -> None:
        self.config = config
        self.state = ScalerState()
        self._initial = initial if initial is not None else config.min_replicas
        self.reasons: Counter[str] = Counter()  # of the decisions that changed the count
        self.record = record
        self.decisions: list[tuple[FleetView, Decision]] = []  # every tick, when `record`

    def initial_replicas(self) -> int:
        return self._initial

    def start(self, now_s: float) -> None:
        self.state = ScalerState(recommendations=((now_s, self._initial),))

    def desired_replicas(self, now_s: float, view: FleetView) -> int:
        obs = Observation(replicas=view.replicas, signals=view.signals)
        decision, self.state = decide(self.config, self.state, obs, now_s)
        if decision.act:
            self.reasons[decision.reason] += 1
        if self.record:
            self.decisions.append((view, decision))
        return decision.replicas if decision.act else view.replicas.desired


def build_policy(
    name: str, config: ScalingConfig, static_replicas: int, initial: int | None = None
) -> Policy:
    """One of POLICIES, configured from the deployment's scaling config.

    `initial` is where the autoscalers start (before the pre-roll); the replay uses the static
    count so that every policy starts from the same right-sized fleet.
    """
    lo, hi = config.min_replicas, config.max_replicas
    if name == "kvscale":
        return KvscalePolicy(config, initial)
    if name == "static":
        return StaticPolicy(static_replicas)
    if name == "queue":
        return HpaPolicy("queue", "waiting_total", KEDA_WAITING_THRESHOLD, lo, hi, initial=initial)
    if name == "kv-threshold":
        return HpaPolicy(
            "kv-threshold", "kv_usage_per_pod", KV_THRESHOLD_TARGET_FRAC, lo, hi, initial=initial
        )
    raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICIES)}")
