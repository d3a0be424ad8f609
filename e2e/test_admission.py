"""Scenario 2: a real kube-apiserver enforces the LLMDeployment CRD, and agrees with kvscale.

The CRD in crds/ is generated from the pydantic models (kvscale.api), so the API server (OpenAPI
schema + CEL `x-kubernetes-validations`) and `kvscale validate` (the models themselves) must
give the same verdict on every object. Each invalid case below breaks one rule the CRD really
declares; the test asks the API server (it must answer 422, or 400 for an unknown field under
kubectl's strict field validation) and the CLI (exit 2), and both must name the same field.

Some objects are well-formed but cannot work (the model fits no candidate GPU, an unknown GPU
type, …): the API server must accept them, and the operator's own planning path
(`kvscale.controller.desired.compute_desired`) and `kvscale validate` must name the field.
Whether the running operator turns that into status conditions is the operator scenarios' job.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from cluster import Cluster
from harness.kube import crd_established, wait_for
from kvscale.api.models import LLMDeploymentSpec
from kvscale.api.policy import RolloutSpec
from kvscale.api.validation import validate_documents
from kvscale.controller.conditions import FALSE, Reason
from kvscale.controller.desired import SpecInvalidError, compute_desired
from kvscale.controller.settings import load_settings

pytestmark = pytest.mark.e2e

REPO_DIR = Path(__file__).resolve().parent.parent
CRD_PATH = REPO_DIR / "crds" / "kvscale.dev_llmdeployments.yaml"
BASE_MANIFEST_PATH = REPO_DIR / "examples" / "01-llama-3.1-8b-l4-l40s-h100.yaml"
CASES_PATH = Path(__file__).resolve().parent / "admission_cases.yaml"
GROUP, VERSION, PLURAL = "kvscale.dev", "v1alpha1", "llmdeployments"
FIELD_MANAGER = "kvscale-e2e-admission"
ESTABLISHED_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25
DELETE = object()  # an edit value that removes the key


@dataclass(frozen=True)
class Rejected:
    """An object the API server and `kvscale validate` must both refuse, naming `field`."""

    case_id: str
    edits: Mapping[str, Any]  # dotted path -> new value (DELETE removes it)
    field: str  # the path both name, as the API server spells it
    server_says: str  # fragment of the API server's message for that field
    client_says: str  # fragment of kvscale validate's message for that field
    status: int  # HTTP status of the refusal: 422 Invalid, 400 for a strict-decoding error


@dataclass(frozen=True)
class AcceptedButWrong:
    """A well-formed object that cannot be deployed: admitted, then flagged by kvscale."""

    case_id: str
    edits: Mapping[str, Any]
    field: str  # the field the operator's planning path blames
    operator_says: str  # fragment of the operator's SpecInvalidError / condition message
    validate_knows: bool  # False: `kvscale validate` cannot know (it is an operator setting)


@dataclass(frozen=True)
class Accepted:
    """An object both the API server and `kvscale validate` admit, meaning the same spec."""

    case_id: str
    edits: Mapping[str, Any]


def read_edits(entry: Mapping[str, Any]) -> dict[str, Any]:
    edits = dict(entry.get("set") or {})
    edits.update(dict.fromkeys(entry.get("delete") or [], DELETE))
    return edits


def load_cases(
    path: Path = CASES_PATH,
) -> tuple[tuple[Rejected, ...], tuple[AcceptedButWrong, ...], tuple[Accepted, ...]]:
    """The case table; a misspelt key fails here rather than silently weakening a case."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rejected, unworkable, accepted = [], [], []
    for entry in data.get("accepted", []):
        assert set(entry) <= {"id", "set", "delete"}, entry
        accepted.append(Accepted(entry["id"], read_edits(entry)))
    for entry in data["rejected"]:
        assert set(entry) <= {"id", "set", "delete", "field", "server", "client", "status"}
        rejected.append(
            Rejected(
                entry["id"],
                read_edits(entry),
                entry["field"],
                entry["server"],
                entry["client"],
                int(entry.get("status", 422)),
            )
        )
    for entry in data["accepted_but_unworkable"]:
        assert set(entry) <= {"id", "set", "delete", "field", "operator", "validate_knows"}, entry
        unworkable.append(
            AcceptedButWrong(
                entry["id"],
                read_edits(entry),
                entry["field"],
                entry["operator"],
                bool(entry.get("validate_knows", True)),
            )
        )
    return tuple(rejected), tuple(unworkable), tuple(accepted)


REJECTED, ACCEPTED_BUT_WRONG, ACCEPTED = load_cases()


def load_base_manifest() -> dict[str, Any]:
    """The first example: a valid object every case changes in one place."""
    manifest: dict[str, Any] = yaml.safe_load(BASE_MANIFEST_PATH.read_text(encoding="utf-8"))
    return manifest


def build_manifest(case_id: str, edits: Mapping[str, Any]) -> dict[str, Any]:
    """The base object named after the case, with `edits` applied (dotted paths)."""
    manifest = copy.deepcopy(load_base_manifest())
    manifest["metadata"] = {"name": case_id}
    for dotted, value in edits.items():
        *parents, leaf = dotted.split(".")
        node = manifest
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = copy.deepcopy(value)
    return manifest


def apply_crd(api_client: ApiClient) -> str:
    """Server-side apply the generated CRD (force: it is ours) and wait until it is served."""
    crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    name: str = crd["metadata"]["name"]
    client.ApiextensionsV1Api(api_client).patch_custom_resource_definition(
        name,
        crd,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    wait_for(
        lambda: crd_established(api_client, name),
        f"CRD {name} Established",
        ESTABLISHED_TIMEOUT_S,
        POLL_INTERVAL_S,
    )
    return name


@pytest.fixture(scope="module")
def api_client(cluster: Cluster) -> Iterator[ApiClient]:
    with cluster.new_api_client() as api:
        yield api


@pytest.fixture(scope="module")
def namespace(api_client: ApiClient) -> Iterator[str]:
    """A fresh namespace with the CRD installed (the CRD stays: other scenarios use it too)."""
    apply_crd(api_client)
    name = f"admission-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(body=client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def create_object(api_client: ApiClient, namespace: str, manifest: dict[str, Any]) -> Any:
    """Create as `kubectl apply` would: strict field validation (unknown fields are errors)."""
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict"
    )


def describe_rejection(error: ApiException) -> list[tuple[str, str]]:
    """(field, message) pairs of a refusal; a refusal without causes is one ("", message)."""
    status = json.loads(error.body or "{}")
    causes = (status.get("details") or {}).get("causes") or []
    if not causes:
        return [("", str(status.get("message", "")))]
    return [(str(c.get("field", "")), str(c.get("message", ""))) for c in causes]


def run_cli_validate(manifests: Sequence[dict[str, Any]]) -> tuple[int, dict[str, list[str]]]:
    """`kvscale validate -f -` on all manifests at once: (exit code, problems by object name)."""
    text = yaml.safe_dump_all(list(manifests), allow_unicode=True, sort_keys=False)
    result = subprocess.run(
        [sys.executable, "-m", "kvscale", "validate", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    problems: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        source, _, rest = line.partition(": ")
        name, _, problem = rest.partition(": ")
        if source == "-" and problem:
            problems.setdefault(name, []).append(problem)
    return result.returncode, problems


@pytest.fixture(scope="module")
def cli_verdicts() -> tuple[int, dict[str, list[str]]]:
    return run_cli_validate([build_manifest(c.case_id, c.edits) for c in REJECTED])


def manifest_name(case: Rejected) -> str:
    return str(case.edits.get("metadata.name", case.case_id))


def test_cases_cover_every_cel_rule_of_the_spec() -> None:
    """Every CEL message of the generated CRD's spec schema is expected by a rejected case."""
    crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def collect(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                yield str(rule["message"]).split("; fix:")[0]
            for value in node.values():
                yield from collect(value)
        elif isinstance(node, list):
            for item in node:
                yield from collect(item)

    messages = set(collect(spec_schema))
    uncovered = {m for m in messages if not any(c.server_says in m for c in REJECTED)}
    assert len(messages) >= 12
    assert uncovered == set()
    assert len(REJECTED) >= 25


def test_the_unchanged_base_object_is_admitted_and_valid(
    api_client: ApiClient, namespace: str
) -> None:
    manifest = build_manifest("base-is-valid", {})
    created = create_object(api_client, namespace, manifest)
    # The API server fills the CRD's defaults (rollout is absent from the example); read back,
    # the stored spec must mean what the models make of the manifest, default for default.
    assert "rollout" not in manifest["spec"]
    assert created["spec"]["rollout"]["bakeWindowSeconds"] == RolloutSpec().bake_window_seconds
    stored = LLMDeploymentSpec.model_validate(created["spec"], strict=True)
    assert stored == LLMDeploymentSpec.model_validate(manifest["spec"], strict=True)
    code, problems = run_cli_validate([manifest])
    assert (code, problems) == (0, {})


@pytest.mark.parametrize("case", REJECTED, ids=[c.case_id for c in REJECTED])
def test_api_server_rejects_invalid_object_naming_the_field(
    api_client: ApiClient, namespace: str, case: Rejected
) -> None:
    with pytest.raises(ApiException) as refused:
        create_object(api_client, namespace, build_manifest(case.case_id, case.edits))
    causes = describe_rejection(refused.value)
    assert refused.value.status == case.status
    if case.status == 400:  # strict decoding (unknown field): no causes, the path is quoted
        assert any(f'"{case.field}"' in message for _, message in causes), causes
    else:
        # A rule that reads a key before it is defaulted adds "no such key" to every refusal.
        assert not any("no such key" in message for _, message in causes), causes
        causes = [(field, message) for field, message in causes if field == case.field]
    assert any(case.server_says in message for _, message in causes), causes


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.case_id for c in ACCEPTED])
def test_api_server_and_cli_admit_the_same_object_meaning_the_same_spec(
    api_client: ApiClient, namespace: str, case: Accepted
) -> None:
    manifest = build_manifest(case.case_id, case.edits)
    created = create_object(api_client, namespace, manifest)
    (verdict,) = validate_documents([manifest])
    assert verdict.problems == ()
    assert LLMDeploymentSpec.model_validate(created["spec"], strict=True) == verdict.spec
    code, problems = run_cli_validate([manifest])
    assert (code, problems) == (0, {})


@pytest.mark.parametrize("case", REJECTED, ids=[c.case_id for c in REJECTED])
def test_cli_rejects_the_same_object_naming_the_same_field(
    cli_verdicts: tuple[int, dict[str, list[str]]], case: Rejected
) -> None:
    code, problems = cli_verdicts
    assert code == 2
    found = problems.get(manifest_name(case), [])
    assert any(
        problem.startswith(f"{case.field}: ") and case.client_says in problem for problem in found
    ), found


@pytest.mark.parametrize("case", ACCEPTED_BUT_WRONG, ids=[c.case_id for c in ACCEPTED_BUT_WRONG])
def test_api_server_admits_unworkable_object_and_kvscale_names_the_field(
    api_client: ApiClient, namespace: str, case: AcceptedButWrong
) -> None:
    manifest = build_manifest(case.case_id, case.edits)
    created = create_object(api_client, namespace, manifest)
    stored_spec = created["spec"]  # with the API server's defaults, as the operator sees it

    try:
        desired = compute_desired(created["metadata"], stored_spec, load_settings({}))
    except SpecInvalidError as error:  # the operator sets Planned=False, InvalidSpec, this message
        assert str(error).startswith(f"{case.field}: ")
        assert case.operator_says in str(error)
    else:  # planned, but nothing fits: CapacitySufficient=False and no workload to run
        assert (desired.capacity.status, desired.capacity.reason) == (FALSE, Reason.NO_GPU_FITS)
        assert case.operator_says in desired.capacity.message
        assert desired.workload is None

    if case.validate_knows:
        (verdict,) = validate_documents([manifest])
        assert [p.path for p in verdict.problems] == [case.field]
