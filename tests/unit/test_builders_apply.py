"""How built objects reach the API server: the apply request and the error mapping.

The API client is replaced by a recorder of (method, path, query, headers, body); no HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvscale.controller import kube
from kvscale.controller.settings import ApplyMode

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "chat", "namespace": "serving"},
    "spec": {"replicas": 2},
}


@dataclass
class FakeResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def read(self) -> bytes:
        return self.body


@dataclass
class RecordingApiClient:
    """Stands in for kubernetes.client.ApiClient: records calls, answers from `replies`."""

    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def param_serialize(self, method: str, path: str, **kwargs: Any) -> tuple[Any, ...]:
        self.calls.append({"method": method, "path": path, **kwargs})
        return (method, path)

    def call_api(self, method: str, path: str, **_: Any) -> FakeResponse:
        status, body = self.replies.get(method, (200, {"ok": True}))
        return FakeResponse(status, json.dumps(body).encode())


async def test_server_side_apply_sends_the_whole_object_with_field_manager() -> None:
    api = RecordingApiClient()
    client = kube.ApiClientKube(api, apply_mode=ApplyMode.SERVER_SIDE)  # type: ignore[arg-type]
    await client.apply(DEPLOYMENT, field_manager="kvscale")
    (call,) = api.calls
    assert call["method"] == "PATCH"
    assert call["path"] == "/apis/apps/v1/namespaces/serving/deployments/chat"
    assert call["query_params"] == [
        ("fieldManager", "kvscale"),
        ("force", "true"),
        ("fieldValidation", "Strict"),
    ]
    assert call["header_params"]["Content-Type"] == "application/apply-patch+yaml"
    assert call["body"] == DEPLOYMENT


@pytest.mark.parametrize(
    ("get_status", "methods", "last_content_type"),
    [
        (404, ["GET", "POST"], "application/json"),
        (200, ["GET", "PATCH"], "application/merge-patch+json"),
    ],
)
async def test_client_side_apply_creates_or_merge_patches(
    get_status: int, methods: list[str], last_content_type: str
) -> None:
    api = RecordingApiClient(replies={"GET": (get_status, {"message": "x"})})
    client = kube.ApiClientKube(api, apply_mode=ApplyMode.CLIENT_SIDE)  # type: ignore[arg-type]
    await client.apply(DEPLOYMENT)
    assert [c["method"] for c in api.calls] == methods
    assert api.calls[-1]["header_params"]["Content-Type"] == last_content_type
    assert ("fieldManager", "kvscale") in api.calls[-1]["query_params"]


@pytest.mark.parametrize(
    ("status", "error", "transient"),
    [
        (404, kube.NotFoundError, False),
        (409, kube.ConflictError, True),
        (422, kube.InvalidError, False),
        (400, kube.InvalidError, False),
        (403, kube.ForbiddenError, False),
        (429, kube.TooManyRequestsError, True),
        (500, kube.UnavailableError, True),
        (503, kube.UnavailableError, True),
    ],
)
def test_http_status_maps_to_the_error_hierarchy(
    status: int, error: type[kube.KubeError], transient: bool
) -> None:
    with pytest.raises(error) as caught:
        kube.raise_for_status(status, b'{"message": "boom"}')
    assert caught.value.status == status
    assert "boom" in str(caught.value)
    assert isinstance(caught.value, kube.TRANSIENT_ERRORS) is transient


def test_retry_after_is_honoured() -> None:
    with pytest.raises(kube.TooManyRequestsError) as caught:
        kube.raise_for_status(429, b"{}", {"Retry-After": "7"})
    assert caught.value.retry_after_s == 7.0


def test_success_statuses_do_not_raise() -> None:
    for status in (200, 201, 204):
        kube.raise_for_status(status, b"")


@pytest.mark.parametrize(
    ("ref", "namespace", "name", "path"),
    [
        (kube.DEPLOYMENTS, "ns", "a", "/apis/apps/v1/namespaces/ns/deployments/a"),
        (kube.SERVICES, "ns", None, "/api/v1/namespaces/ns/services"),
        (
            kube.LEASES,
            "ops",
            "kvscale",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/kvscale",
        ),
        (
            kube.LLM_DEPLOYMENTS,
            "ns",
            "x",
            "/apis/kvscale.dev/v1alpha1/namespaces/ns/llmdeployments/x",
        ),
    ],
)
def test_resource_paths(
    ref: kube.ResourceRef, namespace: str | None, name: str | None, path: str
) -> None:
    assert ref.path(namespace, name) == path


def test_unknown_kind_is_rejected_before_any_call() -> None:
    with pytest.raises(kube.InvalidError):
        kube.resource_of({"apiVersion": "v1", "kind": "Secret"})
