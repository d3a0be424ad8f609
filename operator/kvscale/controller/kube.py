"""The Kubernetes API adapter: the only module that imports the `kubernetes` client.

Handlers talk to `KubeClient` (a Protocol) in terms of plain dicts and `ResourceRef`s; this
module turns that into REST calls and maps API failures onto a tiny error hierarchy
(`NotFoundError`, `ConflictError`, `TooManyRequestsError`, `InvalidError`, `ForbiddenError`,
`UnavailableError`), so handler code never inspects HTTP status codes.

Writes use server-side apply (`PATCH` with `application/apply-patch+yaml`, `fieldManager=kvscale`,
`force=true`): the API server records kvscale as the owner of exactly the fields it sends, so
GitOps tools that own other fields (or `spec.replicas` under an autoscaler) never fight it.
`ApplyMode.CLIENT_SIDE` is a clearly separated fallback (get → create or merge-patch) for API
servers without SSA; see docs/adr/0004-operator-reconcile.md.

The generated client is synchronous (urllib3); calls run in a worker thread so the kopf event
loop is never blocked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import json
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kvscale.api.vocabulary import API_GROUP, API_VERSION, KIND, PLURAL
from kvscale.controller.settings import ApplyMode

JsonDict = dict[str, Any]


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when no response)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ClusterConfigError(KubeError):
    """Neither an in-cluster service account nor a usable kubeconfig: nothing to connect to."""


class NotFoundError(KubeError):
    """The object (or the resource type) does not exist."""


class ConflictError(KubeError):
    """Already exists, or a field-manager / resourceVersion conflict."""


class InvalidError(KubeError):
    """The API server rejected the object (400/422): a bug or a spec it cannot accept."""


class ForbiddenError(KubeError):
    """RBAC denies the call (401/403): the install is missing a permission."""


class TooManyRequestsError(KubeError):
    """429: back off and retry; `retry_after_s` from the server when it said."""

    def __init__(self, message: str, status: int = 429, retry_after_s: float = 1.0) -> None:
        super().__init__(message, status)
        self.retry_after_s = retry_after_s


class UnavailableError(KubeError):
    """5xx or no connection: transient, retry later."""


TRANSIENT_ERRORS: tuple[type[KubeError], ...] = (
    TooManyRequestsError,
    UnavailableError,
    ConflictError,
)


@dataclass(frozen=True)
class ResourceRef:
    """One API resource: where it lives in the REST tree and what its objects are called."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """REST path of the collection (name None) or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


DEPLOYMENTS = ResourceRef("apps", "v1", "deployments", "Deployment")
SERVICES = ResourceRef("", "v1", "services", "Service")
CONFIGMAPS = ResourceRef("", "v1", "configmaps", "ConfigMap")
PDBS = ResourceRef("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
POD_MONITORS = ResourceRef("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor")
LLM_DEPLOYMENTS = ResourceRef(API_GROUP, API_VERSION, PLURAL, KIND)
LEASES = ResourceRef("coordination.k8s.io", "v1", "leases", "Lease")

# kind (apiVersion, kind) -> resource, for `apply(obj)` which only sees the object.
_BY_KIND: dict[tuple[str, str], ResourceRef] = {
    (r.api_version, r.kind): r
    for r in (
        DEPLOYMENTS,
        SERVICES,
        CONFIGMAPS,
        PDBS,
        POD_MONITORS,
        LLM_DEPLOYMENTS,
        LEASES,
    )
}


def resource_of(obj: JsonDict) -> ResourceRef:
    """The resource an object belongs to (by apiVersion + kind)."""
    key = (str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise InvalidError(f"no resource known for apiVersion/kind {key}") from None


class KubeClient(Protocol):
    """What the controller needs from the API server (all objects are plain dicts)."""

    async def apply(self, obj: JsonDict, *, field_manager: str = "kvscale") -> JsonDict: ...

    async def get(self, ref: ResourceRef, namespace: str | None, name: str) -> JsonDict: ...

    async def delete(self, ref: ResourceRef, namespace: str | None, name: str) -> None: ...

    async def create(self, obj: JsonDict) -> JsonDict: ...

    async def patch_merge(
        self,
        ref: ResourceRef,
        namespace: str | None,
        name: str,
        patch: JsonDict,
        subresource: str | None = None,
    ) -> JsonDict: ...

    async def has_resource(self, group: str, version: str, plural: str) -> bool: ...


def raise_for_status(status: int, body: bytes, headers: Any = None) -> None:
    """Map an HTTP status + k8s Status body onto the error hierarchy (no-op for 2xx)."""
    if 200 <= status < 300:
        return
    try:
        message = str(json.loads(body or b"{}").get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    text = f"HTTP {status}: {message}".strip()
    if status == 404:
        raise NotFoundError(text, status)
    if status == 409:
        raise ConflictError(text, status)
    if status in (400, 422):
        raise InvalidError(text, status)
    if status in (401, 403):
        raise ForbiddenError(text, status)
    if status == 429:
        retry = (headers or {}).get("Retry-After", "1")
        try:
            retry_after_s = float(retry)
        except (TypeError, ValueError):
            retry_after_s = 1.0
        raise TooManyRequestsError(text, status, retry_after_s)
    if status >= 500:
        raise UnavailableError(text, status)
    raise KubeError(text, status)


class ApiClientKube:
    """`KubeClient` over the official client's `ApiClient` (REST calls by path)."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        apply_mode: ApplyMode = ApplyMode.SERVER_SIDE,
        request_timeout_s: float = 30.0,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._api = api_client
        self._apply_mode = apply_mode
        self._timeout_s = request_timeout_s
        self._executor = executor  # None: the event loop's default pool

    def with_own_thread(self, request_timeout_s: float) -> ApiClientKube:
        """The same connection with a dedicated worker thread and its own timeout: calls that
        must not queue behind the reconciles' (the leader-election renews) use it."""
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kvscale-lease")
        configuration = copy.deepcopy(self._api.configuration)
        # One attempt per call: urllib3's retries would hold the single worker past the renew
        # deadline; the elector retries on its own schedule.
        configuration.retries = False
        return ApiClientKube(
            k8s_client.ApiClient(configuration),
            apply_mode=self._apply_mode,
            request_timeout_s=request_timeout_s,
            executor=executor,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = self._api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=self._timeout_s)
        except Exception as exc:  # urllib3 connection / timeout errors
            raise UnavailableError(f"{method} {path}: {exc}") from exc
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        raise_for_status(response.status, data, response.headers)
        return json.loads(data) if data else {}

    async def _acall(self, method: str, path: str, **kwargs: Any) -> JsonDict:
        if self._executor is None:
            return await asyncio.to_thread(self._call, method, path, **kwargs)
        call = functools.partial(self._call, method, path, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def apply(self, obj: JsonDict, *, field_manager: str = "kvscale") -> JsonDict:
        ref = resource_of(obj)
        meta = obj["metadata"]
        if self._apply_mode is ApplyMode.CLIENT_SIDE:
            return await self._apply_client_side(ref, obj, field_manager)
        # JSON is YAML, so the apply body can be sent as JSON under the apply content type.
        return await self._acall(
            "PATCH",
            ref.path(meta.get("namespace"), meta["name"]),
            # Strict: a field the API server does not know is an error, not silently dropped.
            query=[
                ("fieldManager", field_manager),
                ("force", "true"),
                ("fieldValidation", "Strict"),
            ],
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def _apply_client_side(
        self, ref: ResourceRef, obj: JsonDict, field_manager: str
    ) -> JsonDict:
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        try:
            await self.get(ref, namespace, name)
        except NotFoundError:
            return await self._acall(
                "POST",
                ref.path(namespace),
                query=[("fieldManager", field_manager)],
                body=obj,
            )
        return await self._acall(
            "PATCH",
            ref.path(namespace, name),
            query=[("fieldManager", field_manager)],
            body=obj,
            content_type="application/merge-patch+json",
        )

    async def get(self, ref: ResourceRef, namespace: str | None, name: str) -> JsonDict:
        return await self._acall("GET", ref.path(namespace, name))

    async def create(self, obj: JsonDict) -> JsonDict:
        ref = resource_of(obj)
        return await self._acall("POST", ref.path(obj["metadata"].get("namespace")), body=obj)

    async def delete(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        await self._acall(
            "DELETE", ref.path(namespace, name), body={"propagationPolicy": "Background"}
        )

    async def patch_merge(
        self,
        ref: ResourceRef,
        namespace: str | None,
        name: str,
        patch: JsonDict,
        subresource: str | None = None,
    ) -> JsonDict:
        path = ref.path(namespace, name) + (f"/{subresource}" if subresource else "")
        return await self._acall(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self._acall("GET", path)
        except NotFoundError:
            return False
        return any(r.get("name") == plural for r in listing.get("resources", []))


def connect(
    *,
    server_url: str | None = None,
    apply_mode: ApplyMode = ApplyMode.SERVER_SIDE,
    request_timeout_s: float = 30.0,
) -> ApiClientKube:
    """A client for `server_url` (tests, plain HTTP) or the in-cluster / kubeconfig identity."""
    configuration = k8s_client.Configuration()
    if server_url:
        configuration.host = server_url.rstrip("/")
    else:
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException as in_cluster:
            try:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            except (k8s_config.ConfigException, OSError) as exc:
                raise ClusterConfigError(
                    f"no cluster to connect to ({in_cluster}; kubeconfig: {exc})"
                ) from exc
    return ApiClientKube(
        k8s_client.ApiClient(configuration),
        apply_mode=apply_mode,
        request_timeout_s=request_timeout_s,
    )
