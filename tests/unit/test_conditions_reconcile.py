"""Conditions and Events that one reconcile produces, with an in-memory API client."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kvscale.controller import kube
from kvscale.controller.reconcile import Controller, reconcile
from kvscale.controller.settings import PrometheusSettings, ScrapeMode, Settings
from samples import llama8b_spec

SPEC: dict[str, Any] = llama8b_spec("l40s")
GPU_2 = {"nvidia.com/gpu": 2}


class MemoryKube:
    """KubeClient over a dict; `reject` kinds answer 422 like an API server would."""

    def __init__(self, reject: frozenset[str] = frozenset()) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.reject = reject

    async def apply(self, obj: dict[str, Any], *, field_manager: str = "kvscale") -> dict[str, Any]:
        if obj["kind"] in self.reject:
            raise kube.InvalidError(f"{obj['kind']} is invalid", 422)
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)
        return obj

    async def get(self, ref: kube.ResourceRef, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            return self.objects[(ref.kind, namespace, name)]
        except KeyError:
            raise kube.NotFoundError("not found", 404) from None

    async def delete(self, ref: kube.ResourceRef, namespace: str | None, name: str) -> None:
        self.objects.pop((ref.kind, namespace, name), None)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.apply(obj)

    async def patch_merge(
        self,
        ref: kube.ResourceRef,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return patch

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        return False


def controller(client: MemoryKube) -> Controller:
    settings = Settings(prometheus=PrometheusSettings(scrape_mode=ScrapeMode.ANNOTATIONS))
    return Controller(
        settings=settings, kube=client, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )


def body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1", "generation": 3},
        "spec": spec,
        "status": status or {},
    }


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_valid_spec_applies_and_reports_rollout() -> None:
    client = MemoryKube()
    outcome = await reconcile(controller(client), body(SPEC))
    assert {k[0] for k in client.objects} == {"Deployment", "Service", "PodDisruptionBudget"}
    assert conditions_of(outcome.status) == {
        "Planned": ("True", "PlanComputed"),
        "CapacitySufficient": ("True", "KvCacheFits"),
        "WorkloadReady": ("False", "RollingOut"),
        "Ready": ("False", "RollingOut"),
        "PlanWarnings": ("True", "PlannerWarnings"),  # the default ITL target vs prefill steps
    }
    assert outcome.status["observedGeneration"] == 3
    assert [e.reason for e in outcome.events] == ["PlannerWarnings"]


async def test_rejected_object_is_a_condition_and_an_event_not_a_crash() -> None:
    outcome = await reconcile(controller(MemoryKube(reject=frozenset({"Deployment"}))), body(SPEC))
    assert conditions_of(outcome.status)["WorkloadReady"] == ("False", "ApplyFailed")
    assert ("Warning", "ApplyFailed") in [(e.type, e.reason) for e in outcome.events]


async def test_nothing_fits_keeps_the_last_workload() -> None:
    client = MemoryKube()
    ctl = controller(client)
    await reconcile(ctl, body(SPEC))
    before = copy.deepcopy(client.objects)
    huge = {**SPEC, "model": {"name": "meta-llama/Llama-3.1-405B"}, "maxContextLength": 8192}
    outcome = await reconcile(ctl, body(huge))
    assert conditions_of(outcome.status)["CapacitySufficient"] == ("False", "NoGpuTypeFits")
    assert outcome.status["selectedGpuType"] is None
    assert client.objects == before


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**SPEC, "placement": {"gpuTypes": ["no-such-gpu"]}}, "gpuTypes"),
        ({**SPEC, "maxContextLength": 8}, "maxContextLength"),
        ({k: v for k, v in SPEC.items() if k != "model"}, "model"),
        (
            {**SPEC, "template": {"spec": {"containers": [{"resources": {"limits": GPU_2}}]}}},
            "spec.template.spec.containers[0].resources.limits.nvidia.com/gpu",
        ),
    ],
)
async def test_invalid_spec_warns_once_and_applies_nothing(
    spec: dict[str, Any], field: str
) -> None:
    client = MemoryKube()
    ctl = controller(client)
    first = await reconcile(ctl, body(spec))
    assert conditions_of(first.status)["Planned"] == ("False", "InvalidSpec")
    assert field in next(c["message"] for c in first.status["conditions"] if c["type"] == "Planned")
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "InvalidSpec")]
    second = await reconcile(ctl, body(spec, first.status))
    assert second.events == ()
    assert client.objects == {}


def llama_config_text() -> str:
    from importlib import resources

    path = resources.files("kvscale") / "data/catalog/models/meta-llama__Llama-3.1-8B-Instruct.json"
    return json.dumps(json.loads(path.read_text())["config"])


CONFIGMAP_SPEC = {
    **SPEC,
    "model": {"configMapRef": {"name": "llama-config"}, "uri": "/models/llama"},
}


@pytest.mark.parametrize(
    ("data", "planned", "mentions"),
    [
        (None, ("False", "InvalidSpec"), "not found"),
        ({"other.json": "{}"}, ("False", "InvalidSpec"), "config.json"),
        ({"config.json": "not json"}, ("False", "InvalidSpec"), "configMapRef"),
        ({"config.json": "LLAMA"}, ("True", "PlanComputed"), ""),
    ],
)
async def test_model_geometry_from_a_configmap(
    data: dict[str, str] | None, planned: tuple[str, str], mentions: str
) -> None:
    client = MemoryKube()
    if data is not None:
        values = {k: (llama_config_text() if v == "LLAMA" else v) for k, v in data.items()}
        client.objects[("ConfigMap", "ns", "llama-config")] = {"data": values}
    outcome = await reconcile(controller(client), body(CONFIGMAP_SPEC))
    assert conditions_of(outcome.status)["Planned"] == planned
    message = next(c["message"] for c in outcome.status["conditions"] if c["type"] == "Planned")
    assert mentions in message


async def test_deployment_warnings_reach_the_status_and_clear_when_resolved() -> None:
    """maxReplicas below what the declared peak needs is said in status.warnings (kubectl shows
    it), and a later plan without it writes an empty list so the merge patch clears it."""
    ctl = controller(MemoryKube())
    busy = {**SPEC, "workload": {**SPEC["workload"], "peakRequestsPerSecond": 400}}
    capped = {**busy, "scaling": {"minReplicas": 1, "maxReplicas": 2}}
    outcome = await reconcile(ctl, body(capped))
    (warning,) = [w for w in outcome.status["warnings"] if "maxReplicas" in w]
    assert warning.startswith("spec.scaling.maxReplicas 2 is below the ")
    roomy = {**busy, "scaling": {"minReplicas": 1, "maxReplicas": 1000}}
    outcome = await reconcile(ctl, body(roomy, outcome.status))
    assert not [w for w in outcome.status["warnings"] if "maxReplicas" in w]
    assert isinstance(outcome.status["warnings"], list)


async def test_an_unanticipated_planning_failure_is_a_condition_an_event_and_permanent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planner bug (here: the planner runs out of memory) leaves the object with a Planned
    condition and a Warning Event, applies nothing, and asks kopf not to retry."""

    def exhausted(*_: Any, **__: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr("kvscale.controller.desired.plan_deployment", exhausted)
    client = MemoryKube()
    ctl = controller(client)
    outcome = await reconcile(ctl, body(SPEC))
    assert conditions_of(outcome.status)["Planned"] == ("False", "PlanningFailed")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PlanningFailed")]
    assert outcome.permanent_error is not None
    assert outcome.permanent_error.startswith("spec: planning failed (MemoryError")
    assert client.objects == {}
    again = await reconcile(ctl, body(SPEC, outcome.status))
    assert again.events == ()


async def test_a_hostile_inline_config_is_an_invalid_spec_naming_the_key() -> None:
    """NaN in an inline config.json: before, a ValueError escaped reconcile (no status at all)."""
    config = json.loads(llama_config_text())
    config["num_key_value_heads"] = float("nan")
    spec = {**SPEC, "model": {"config": json.dumps(config), "uri": "/models/llama"}}
    outcome = await reconcile(controller(MemoryKube()), body(spec))
    assert conditions_of(outcome.status)["Planned"] == ("False", "InvalidSpec")
    message = next(c["message"] for c in outcome.status["conditions"] if c["type"] == "Planned")
    assert message.startswith("spec.model.config (config.num_key_value_heads): must be a finite")
    assert outcome.permanent_error is None


async def test_spec_replicas_above_max_is_clamped_before_anything_is_applied() -> None:
    """`kubectl scale --replicas=50` past maxReplicas 8: the Deployment gets 8 (never 50),
    and status, a condition and an Event say why."""
    client = MemoryKube()
    spec = {**SPEC, "replicas": 50, "scaling": {"minReplicas": 1, "maxReplicas": 8}}
    outcome = await reconcile(controller(client), body(spec))
    (deployment,) = [o for (kind, _, _), o in client.objects.items() if kind == "Deployment"]
    assert deployment["spec"]["replicas"] == 8
    expected = (
        "spec.replicas 50 is outside [spec.scaling.minReplicas 1, spec.scaling.maxReplicas 8]:"
        " 8 run; fix: scale within the bounds or change them"
    )
    assert expected in outcome.status["warnings"]
    assert conditions_of(outcome.status)["PlanWarnings"] == ("True", "PlannerWarnings")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PlannerWarnings")]
    assert expected in outcome.events[0].message


async def test_planner_warnings_are_a_condition_and_one_event_until_they_change() -> None:
    """A tight ITL target: the selected GPU's prefill-step warning reaches the PlanWarnings
    condition and one Warning Event; the next reconcile with the same warnings posts none,
    and a spec without warnings turns the condition False."""
    ctl = controller(MemoryKube())
    tight = {**SPEC, "slo": {"itlP95Seconds": 0.03, "ttftP95Seconds": 5}}
    first = await reconcile(ctl, body(tight))
    assert conditions_of(first.status)["PlanWarnings"] == ("True", "PlannerWarnings")
    message = next(c["message"] for c in first.status["conditions"] if c["type"] == "PlanWarnings")
    assert message.startswith("l40s: a step that prefills a p95 prompt")
    assert [e.reason for e in first.events] == ["PlannerWarnings"]
    second = await reconcile(ctl, body(tight, first.status))
    assert second.events == ()
    loose = {**SPEC, "slo": {"itlP95Seconds": 0.5, "ttftP95Seconds": 5}}
    calm = await reconcile(ctl, body(loose, second.status))
    assert conditions_of(calm.status)["PlanWarnings"] == ("False", "NoWarnings")


async def test_every_object_passes_the_template_guard_before_it_is_applied() -> None:
    """The rollout guard is a step of the reconcile (`Controller.template_guard`), not a
    client swapped in behind its back: what it returns is what reaches the API."""
    client = MemoryKube()
    ctl = controller(client)
    seen: list[str] = []

    async def guard(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(obj["kind"])
        if obj["kind"] != "Deployment":
            return obj
        kept = copy.deepcopy(obj)
        kept["spec"]["template"]["metadata"]["annotations"]["guarded"] = "yes"
        return kept

    ctl.template_guard = guard
    await reconcile(ctl, body(SPEC))
    assert sorted(seen) == sorted(kind for kind, _, _ in client.objects)
    (deployment,) = [o for (kind, _, _), o in client.objects.items() if kind == "Deployment"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["guarded"] == "yes"
