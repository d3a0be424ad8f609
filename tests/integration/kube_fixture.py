"""A fake Kubernetes API for the operator tests: kmock's KubernetesEmulator plus what it lacks.

kmock serves discovery, list/watch/get/create/patch/delete over real HTTP, which is enough for
kopf to run unmodified. It has no server-side apply, no generateName, no uid/generation and no
garbage collector. `ApiServerFake` adds the minimum the operator's contract depends on:

- server-side apply as upsert: `PATCH` with `application/apply-patch+yaml` creates a missing
  object (field ownership is not modelled: the body is merged as kmock merges any patch);
- `metadata.uid`, `creationTimestamp`, `generation` (bumped when `spec` changes), a constant
  `resourceVersion` (kopf's JSON patches test it; optimistic locking is not modelled) and
  `generateName` on create;
- a garbage collector: after a write, objects whose controller owner (by uid) is gone are
  deleted, as the kube-controller-manager would;
- a Deployment "controller": a written Deployment reports all its replicas available;
- Leases with optimistic locking: every write bumps `resourceVersion`, and a PATCH carrying
  `metadata.resourceVersion` is refused with 409 when the Lease has moved on (leader election
  depends on it; other resources keep kmock's constant version);
- a record of every API request as the RBAC verb it needs (`verbs_used`), so a test can
  compare what the operator really calls with what the chart grants.

Everything else is kmock's own behaviour. The e2e tier runs against a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import kmock

LLMD = "kvscale.dev/v1alpha1/llmdeployments"
DEPLOYMENTS = "apps/v1/deployments"
LEASES = "coordination.k8s.io/v1/leases"
TEST_CLIENT = "kvscale-test-client"  # the tests' own requests: not recorded as operator verbs

_RESOURCES: dict[str, tuple[str, bool, set[str]]] = {
    # "group/version/plural": (kind, namespaced, subresources)
    LLMD: ("LLMDeployment", True, {"status", "scale"}),
    DEPLOYMENTS: ("Deployment", True, {"status", "scale"}),
    "v1/services": ("Service", True, set()),
    "v1/events": ("Event", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/namespaces": ("Namespace", False, set()),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
    LEASES: ("Lease", True, set()),
}
_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LeaseConflictError(kmock.KubernetesError):  # type: ignore[misc]
    status = 409
    reason = "Conflict"
    message = "Operation cannot be fulfilled on leases: the object has been modified"


@dataclass(frozen=True, order=True)
class VerbUse:
    """One API request as RBAC sees it: group, resource (with /subresource) and verb."""

    group: str
    resource: str
    verb: str


def _verb_of(request: Any) -> str:
    method = request.method.value
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


class ApiServerFake(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator with SSA-as-upsert, uids/generations, generateName, a GC, Lease
    locking and a record of the RBAC verbs the requests needed."""

    _names = itertools.count(1)
    _versions = itertools.count(2)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.verbs_used: set[VerbUse] = set()

    def _record(self, request: Any, *extra_verbs: str) -> None:
        resource = request.resource
        if request.headers.get("User-Agent") == TEST_CLIENT:
            return
        if not resource.plural:
            return  # discovery (/api, /apis/group/version): no RBAC rule needed
        plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        for verb in (_verb_of(request), *extra_verbs):
            self.verbs_used.add(VerbUse(resource.group or "", plural, verb))

    def _record_owner_checks(self, request: Any) -> None:
        """OwnerReferencesPermissionEnforcement: a blocking ownerReference needs `update` on
        the owner's finalizers subresource (the owner's resource found by its kind)."""
        data = request.data if isinstance(request.data, dict) else {}
        for ref in (data.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("blockOwnerDeletion"):
                continue
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            for path, (kind, _, _) in _RESOURCES.items():
                if kind == ref.get("kind"):
                    plural = path.rsplit("/", 1)[1]
                    self.verbs_used.add(VerbUse(group, f"{plural}/finalizers", "update"))

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None:
            self._record(request)
            if request.method in ("POST", "PATCH", "PUT"):
                self._record_owner_checks(request)
            await self._before(request)
        response = await super()._handle(request)
        if request.resource is not None and request.method in ("PATCH", "POST", "DELETE"):
            await self._after(request)
        return response

    def _live(self, key: Any) -> Any:
        if key not in self._objects:
            return None
        obj = self._objects[key]
        return None if obj.deleted else obj

    async def _before(self, request: Any) -> None:
        data = request.data if isinstance(request.data, dict) else None
        if str(request.resource) == str(kmock.resource(LEASES)) and data is not None:
            await self._lock_lease(request, data)
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._names)}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("generation", 1)
            meta.setdefault("resourceVersion", "1")  # constant: no optimistic locking here
            return
        if request.method != "PATCH" or data is None or request.subresource:
            return
        key = (request.resource, request.namespace, request.name)
        content_type = request.headers.get("Content-Type", "")
        async with self._lock:
            existing = self._live(key)
            if existing is None and content_type.startswith("application/apply-patch"):
                # The API server authorizes an apply that creates the object for `create` too.
                self._record(request, "create")
                meta = data.setdefault("metadata", {})
                meta.update(
                    uid=str(uuid.uuid4()),
                    creationTimestamp=_now(),
                    generation=1,
                    resourceVersion="1",
                )
                self._objects[key] = data
                raw = self._objects[key].raw
                await self._buses[request.resource].put({"type": "ADDED", "object": raw})
            elif existing is not None and "spec" in data and data["spec"] != existing.get("spec"):
                generation = int(existing.get("metadata", {}).get("generation") or 1)
                data.setdefault("metadata", {})["generation"] = generation + 1

    async def _lock_lease(self, request: Any, data: dict[str, Any]) -> None:
        meta = data.setdefault("metadata", {})
        async with self._lock:
            if request.method == "PATCH":
                live = self._live((request.resource, request.namespace, request.name))
                current = None if live is None else live.get("metadata", {}).get("resourceVersion")
                expected = meta.get("resourceVersion")
                if expected is not None and expected != current:
                    raise LeaseConflictError()
            meta["resourceVersion"] = str(next(self._versions))

    async def _after(self, request: Any) -> None:
        async with self._lock:
            if str(request.resource) == str(kmock.resource(DEPLOYMENTS)) and request.name:
                self._report_deployment_available(
                    (request.resource, request.namespace, request.name)
                )
            await self._collect_garbage()

    def _report_deployment_available(self, key: Any) -> None:
        obj = self._live(key)
        if obj is None:
            return
        replicas = int(obj.get("spec", {}).get("replicas") or 0)
        counts = dict.fromkeys(
            ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas"), replicas
        )
        if obj.get("status") != counts:
            obj.patch({"status": counts})

    async def _collect_garbage(self) -> None:
        live = [(k, o) for k, o in self._objects.items() if not o.deleted]
        uids = {o.get("metadata", {}).get("uid") for _, o in live}
        for (resource, _, _), obj in live:
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if owners and not any(ref.get("uid") in uids for ref in owners):
                raw = obj.raw
                obj.delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})


def declare_resources(fake: ApiServerFake) -> None:
    """Serve the resources kopf and kvscale use, with the verbs discovery must report."""
    for path, (kind, namespaced, subresources) in _RESOURCES.items():
        fake.resources[path] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=_VERBS, subresources=subresources
        )


@dataclass
class FakeCluster:
    """A running fake API server and a small client for the test's side of the story."""

    fake: ApiServerFake
    url: str
    session: aiohttp.ClientSession

    def objects(self, resource: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Live objects of `resource` ("group/version/plural"), by name."""
        wanted = kmock.resource(resource)
        return {
            name: obj.raw
            for (res, ns, name), obj in self.fake.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
        }

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects(resource, namespace).get(name)

    def writes(self, path_part: str) -> list[tuple[str, dict[str, str], str]]:
        """(method, query, content type) of every write request whose path contains the part."""
        return [
            (r.method.value, dict(r.params), str(r.headers.get("Content-Type", "")))
            for r in list(self.fake)
            if r.method.value in ("POST", "PATCH", "PUT") and path_part in r.url.path
        ]

    def patches(self, path_part: str) -> list[tuple[str, Any]]:
        """(path, body) of every PATCH whose path contains the part, in the order received."""
        return [
            (r.url.path, r.data)
            for r in list(self.fake)
            if r.method.value == "PATCH" and path_part in r.url.path
        ]

    def events(self, namespace: str, reason: str) -> list[dict[str, Any]]:
        return [
            e for e in self.objects("v1/events", namespace).values() if e.get("reason") == reason
        ]

    def _path(self, resource: str, namespace: str, name: str | None = None) -> str:
        group_version, plural = resource.rsplit("/", 1)
        base = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
        path = f"{base}/namespaces/{namespace}/{plural}"
        return f"{path}/{name}" if name else path

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"]["namespace"]
        async with self.session.post(self.url + self._path(resource, namespace), json=obj) as rsp:
            assert rsp.status < 300, await rsp.text()
            body: dict[str, Any] = await rsp.json()
            return body

    async def patch(self, resource: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        path = self.url + self._path(resource, namespace, name)
        async with self.session.patch(path, json=patch, headers=headers) as rsp:
            assert rsp.status < 300, await rsp.text()

    async def delete(self, resource: str, namespace: str, name: str) -> None:
        async with self.session.delete(self.url + self._path(resource, namespace, name)) as rsp:
            assert rsp.status < 300, await rsp.text()


@contextlib.asynccontextmanager
async def running_fake_cluster() -> AsyncIterator[FakeCluster]:
    """Start the fake API server on a free loopback port."""
    async with ApiServerFake() as fake, kmock.Server(fake) as server:
        declare_resources(fake)
        async with aiohttp.ClientSession(headers={"User-Agent": TEST_CLIENT}) as session:
            yield FakeCluster(fake=fake, url=str(server.url).rstrip("/"), session=session)


async def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll `predicate()` until it returns a truthy value (returned) or fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        await asyncio.sleep(interval_s)
