"""Steps shared by the autoscaling scenarios: create an LLMDeployment, wait until it runs with
live engines and Prometheus has its signals, and read what the autoscaler decided."""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client import ApiClient

from harness.engines import Engine, wait_engines_listening
from harness.fixtures import Harness
from harness.kube import (
    WaitTimeoutError,
    create_llmd,
    deployment_replicas,
    get_llmd,
    has_condition,
    kubectl,
    wait_for,
)
from harness.load import LoadDriver, azure_conv_slice
from harness.specs import BASE_SPEC, autoscaler_status

READY_TIMEOUT_S = 90.0
# One L4 serving the backlog of conversation turns it queued while new replicas started:
# ~2 min seen at the trace's own rate (ITL ~0.6 s with prefill chunks in every step).
DRAIN_TIMEOUT_S = 300.0


def start_llmd(e2e: Harness, api: ApiClient, namespace: str, manifest: dict[str, Any]) -> str:
    """Create it; return once it is Ready, its engines answer and its metrics were read."""
    name = str(manifest["metadata"]["name"])
    create_llmd(api, namespace, manifest)
    wait_for(
        lambda: has_condition(get_llmd(api, namespace, name), "Ready", "True"),
        f"{name} Ready",
        READY_TIMEOUT_S,
    )
    wait_engines_listening(wait_engines(e2e, namespace, name, 1))
    if e2e.prometheus.running:
        wait_for(
            lambda: has_condition(get_llmd(api, namespace, name), "MetricsAvailable", "True"),
            f"{name} MetricsAvailable=True",
            READY_TIMEOUT_S,
        )
    return name


def start_trace_load(e2e: Harness, namespace: str, name: str) -> LoadDriver:
    """The Azure conversation slice replayed against the LLMDeployment's engines, round-robin.

    It starts paused: set `.rate` (a multiple of the trace's arrival rate); `.stop()` it after.
    """
    return LoadDriver(
        lambda: e2e.engines.serving_urls(namespace, name),
        azure_conv_slice(),
        max_prompt_tokens=int(BASE_SPEC["maxContextLength"]),
    ).start()


def wait_engines(e2e: Harness, namespace: str, name: str, count: int) -> list[Engine]:
    def enough() -> list[Engine] | None:
        engines = e2e.engines.engines_of(namespace, name)
        return engines if len(engines) >= count else None

    return wait_for(enough, f"{count} simulated engines for {name}", READY_TIMEOUT_S)


def wait_engines_idle(e2e: Harness, namespace: str, name: str) -> float:
    """Wait until every engine of the LLMDeployment has served its requests; the seconds it took."""
    started = time.monotonic()
    wait_for(
        lambda: all(engine.idle() for engine in e2e.engines.engines_of(namespace, name)),
        f"the engines of {name} to serve their backlog (no request running or waiting)",
        DRAIN_TIMEOUT_S,
    )
    return time.monotonic() - started


def wait_replicas(
    api: ApiClient, namespace: str, name: str, predicate: Any, what: str, timeout_s: float
) -> int:
    """Wait until the Deployment's spec.replicas satisfies predicate and all are Ready."""

    def check() -> int | None:
        desired, ready = deployment_replicas(api, namespace, name)
        return desired if predicate(desired) and ready == desired else None

    try:
        return int(wait_for(check, what, timeout_s))
    except WaitTimeoutError as error:
        raise WaitTimeoutError(f"{error}\n{last_decision(api, namespace, name)}") from None


def last_decision(api: ApiClient, namespace: str, name: str) -> str:
    """The autoscaler's last decision and signals, for a failure message."""
    status = autoscaler_status(get_llmd(api, namespace, name))
    return (
        f"last decision: {status.get('reason')}: {status.get('message')}\n"
        f"signals: {status.get('signals')}\nhistory: {status.get('history')}"
    )


def decisions_since(
    api: ApiClient, namespace: str, name: str, count: int, timeout_s: float
) -> list[dict[str, Any]]:
    """The next `count` autoscaler decisions (status.autoscaler snapshots with a new time)."""
    seen: list[dict[str, Any]] = []
    last = autoscaler_status(get_llmd(api, namespace, name)).get("lastDecisionTime")
    deadline = time.monotonic() + timeout_s
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(seen)} of {count} decisions in {timeout_s:.0f} s")
        status = autoscaler_status(get_llmd(api, namespace, name))
        if status.get("lastDecisionTime") != last:
            last = status.get("lastDecisionTime")
            seen.append(status)
        time.sleep(0.5)
    return seen


CONDITIONS_JSONPATH = (
    '{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\\n"}{end}'
)
EVENT_COLUMNS = "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message"


def describe_llmd(e2e: Harness, namespace: str, name: str) -> str:
    """What a user sees with kubectl: the printer columns, the conditions and the Events."""
    kubeconfig = e2e.cluster.kubeconfig_path
    base = ("-n", namespace)
    sections = [
        ("kubectl get llmd -o wide", ("get", "llmd", name, "-o", "wide")),
        ("conditions", ("get", "llmd", name, "-o", f"jsonpath={CONDITIONS_JSONPATH}")),
        (
            "kubectl get events (oldest first)",
            (
                "get",
                "events",
                f"--field-selector=involvedObject.name={name}",
                "--sort-by=.lastTimestamp",
                "-o",
                EVENT_COLUMNS,
            ),
        ),
    ]
    return "\n".join(
        f"--- {title}\n{kubectl(kubeconfig, *base, *args).rstrip()}" for title, args in sections
    )
