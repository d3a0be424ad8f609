"""Offline validation of LLMDeployment manifests: schema, cross-field rules and "does it fit".

Each problem is one line that names the field and the fix, e.g.
`spec.scaling.maxReplicas: must be ≥ minReplicas (3 > 2); fix: raise maxReplicas or lower
minReplicas`. The cross-field rules are the same `CelRule`s the CRD carries, so the API
server and `kvscale validate` agree. ConfigMaps in the same file satisfy `configMapRef`.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from kvscale.api.base import CROSS_FIELD_ERROR
from kvscale.api.convert import DeploymentPlanResult, SpecError, plan_deployment
from kvscale.api.models import (
    OBJECT_NAME_MAX_LENGTH,
    OBJECT_NAME_PATTERN,
    ConfigMapRef,
    LLMDeploymentSpec,
)
from kvscale.api.podtemplate import OWNED_CONTAINER_FIELDS
from kvscale.api.vocabulary import API_GROUP, API_VERSION_FULL, KIND
from kvscale.api.wire import (
    KubectlYamlLoader,
    as_sent_by_kubectl,
    spec_from_wire,
    spec_schema,
)

_OBJECT_NAME = re.compile(OBJECT_NAME_PATTERN)
_BOUND_ERRORS: dict[str, tuple[str, str]] = {  # pydantic error type -> (ctx key, symbol)
    "greater_than_equal": ("ge", "≥"),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "≤"),
    "less_than": ("lt", "<"),
}
_LENGTH_ERRORS: dict[str, tuple[str, str, str]] = {  # type -> (ctx key, relation, unit)
    "string_too_short": ("min_length", "at least", "characters"),
    "string_too_long": ("max_length", "at most", "characters"),
    "too_short": ("min_length", "at least", "items"),
    "too_long": ("max_length", "at most", "items"),
}
_TYPE_NAMES: dict[str, str] = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxstring, _ECHO.maxother = 1, 60, 60
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 4


def echo(value: Any) -> str:
    """A bounded repr of a user's value for a problem line.

    Bounded in work as well as length: a YAML alias bomb (a few lines that expand to millions
    of nested items) is echoed as `[[[...], ...], ...]`, never walked.
    """
    return _ECHO.repr(value)


_TEMPLATE_CONTAINERS = ("template", "spec", "containers")


@dataclass(frozen=True)
class Problem:
    """One reason a manifest is invalid: the field, what is wrong, and what to change."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}; fix: {self.fix}"


@dataclass(frozen=True)
class DocumentResult:
    """The verdict on one LLMDeployment document of a file."""

    index: int  # position of the document in the file (0-based)
    name: str
    problems: tuple[Problem, ...] = ()
    spec: LLMDeploymentSpec | None = None
    plan: DeploymentPlanResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def _schema_at(loc: Sequence[int | str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = spec_schema()
    for part in loc:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            node = node.get("additionalProperties")
    return node


def format_path(loc: Sequence[int | str], prefix: str = "spec") -> str:
    """('scaling', 'maxReplicas') -> spec.scaling.maxReplicas; list indices in brackets."""
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _explain_fix(loc: Sequence[int | str]) -> str:
    dotted = ".".join(str(p) for p in loc if not isinstance(p, int))
    return f"see `kubectl explain llmdeployment.spec.{dotted}` or docs/api.md"


def _describe_error(error: ErrorDetails) -> tuple[tuple[int | str, ...], str, str]:
    """(location, message, fix) for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = error.get("input")
    schema = _schema_at(loc)
    if kind == CROSS_FIELD_ERROR:
        extra = tuple(part for part in str(ctx["field"]).split(".") if part)
        return loc + extra, str(ctx["message"]), str(ctx["fix"])
    if kind == "missing":
        what = f" ({schema['description']})" if schema and "description" in schema else ""
        return loc, "required field is missing", f"add {loc[-1]}{what}"
    if kind == "extra_forbidden" and loc[:3] == _TEMPLATE_CONTAINERS:
        where = OWNED_CONTAINER_FIELDS.get(str(loc[-1]))
        if where is not None:
            return loc, "is kvscale's, not part of the overlay", f"use {where}"
    if kind == "extra_forbidden":
        parent = _schema_at(loc[:-1]) or {}
        camel = to_camel(str(loc[-1]))
        if camel != loc[-1] and camel in parent.get("properties", {}):
            return loc, "unknown field", f"write {camel} (the API spells its fields in camelCase)"
        known = ", ".join(parent.get("properties", {}))
        return loc, "unknown field", f"remove it or fix the spelling; fields here: {known}"
    if kind in ("literal_error", "enum") and schema and "enum" in schema:
        choices = ", ".join(str(v) for v in schema["enum"])
        return loc, f"{echo(got)} is not allowed", f"use one of: {choices}"
    if kind in _BOUND_ERRORS:
        key, symbol = _BOUND_ERRORS[kind]
        return (
            loc,
            f"must be {symbol} {ctx[key]} (got {echo(got)})",
            f"use a value {symbol} {ctx[key]}",
        )
    if kind in _LENGTH_ERRORS:
        key, relation, unit = _LENGTH_ERRORS[kind]
        return loc, f"must have {relation} {ctx[key]} {unit}", f"use {relation} {ctx[key]} {unit}"
    if kind == "string_pattern_mismatch":
        return loc, f"{echo(got)} has the wrong format", f"match the pattern {ctx['pattern']}"
    if kind in _TYPE_NAMES:
        return loc, f"must be {_TYPE_NAMES[kind]} (got {echo(got)})", f"write {_TYPE_NAMES[kind]}"
    return loc, error["msg"], _explain_fix(loc)


def problems_from_validation_error(exc: ValidationError, prefix: str = "spec") -> list[Problem]:
    """One `Problem` per pydantic error, with the CR path and a fix."""
    problems = []
    for error in exc.errors():
        loc, message, fix = _describe_error(error)
        problems.append(Problem(format_path(loc, prefix), message, fix))
    return problems


def parse_spec(raw: Any) -> tuple[LLMDeploymentSpec | None, list[Problem]]:
    """Schema + cross-field validation of a `spec` mapping, as the API server sees it."""
    try:
        return spec_from_wire(raw), []
    except ValidationError as exc:
        return None, problems_from_validation_error(exc)


def _check_envelope(doc: Mapping[str, Any]) -> list[Problem]:
    problems = []
    if doc.get("apiVersion") != API_VERSION_FULL:
        problems.append(
            Problem(
                "apiVersion",
                f"{echo(doc.get('apiVersion'))} is not served",
                f"use {API_VERSION_FULL}",
            )
        )
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if (
        not isinstance(name, str)
        or len(name) > OBJECT_NAME_MAX_LENGTH
        or not _OBJECT_NAME.match(name)
    ):
        problems.append(
            Problem(
                "metadata.name",
                f"{echo(name)} is not a valid name (it also names the Deployment and Service)",
                "start with a letter; use lower-case letters, digits and '-', at most 63",
            )
        )
    if "spec" not in doc:
        problems.append(Problem("spec", "required field is missing", "add a spec"))
    return problems


def _configmap_loader(configmaps: Mapping[str, Mapping[str, str]]) -> Any:
    def load(ref: ConfigMapRef) -> str:
        data = configmaps.get(ref.name)
        if data is None or ref.key not in data:
            raise SpecError(
                "spec.model.configMapRef",
                f"ConfigMap {ref.name} has no key {ref.key} in this file",
                "add the key or point configMapRef.key at the config.json entry",
            )
        return str(data[ref.key])

    return load


def validate_document(
    doc: Mapping[str, Any],
    index: int = 0,
    configmaps: Mapping[str, Mapping[str, str]] | None = None,
) -> DocumentResult:
    """Validate one LLMDeployment object: envelope, schema, rules, then the capacity plan."""
    metadata = doc.get("metadata")
    name = str(metadata.get("name")) if isinstance(metadata, Mapping) else f"document {index}"
    problems = _check_envelope(doc)
    spec, spec_problems = parse_spec(doc.get("spec"))
    problems.extend(spec_problems)
    if spec is None or problems:
        return DocumentResult(index, name, tuple(problems), spec)
    configmaps = configmaps or {}
    ref = spec.model.config_map_ref
    if ref is not None and ref.name not in configmaps:
        note = f"ConfigMap {ref.name} is not in this file: the fit check was skipped"
        return DocumentResult(index, name, (), spec, notes=(note,))
    try:
        plan = plan_deployment(spec, _configmap_loader(configmaps))
    except SpecError as exc:
        return DocumentResult(index, name, (Problem(exc.path, exc.problem, exc.fix),), spec)
    problems_of_fit = (_no_fit_problem(plan),) if plan.selected_gpu_type is None else ()
    return DocumentResult(index, name, problems_of_fit, spec, plan, notes=plan.warnings)


def _no_fit_problem(plan: DeploymentPlanResult) -> Problem:
    """Memory everywhere too small, or the model fits but the SLO refuses every candidate."""
    if plan.plans and all(p.fits for p in plan.plans):
        return Problem(
            "spec.slo",
            f"no candidate GPU type meets it ({plan.selection_reason})",
            "relax spec.slo to what the fastest candidate gets, or add a faster GPU type",
        )
    return Problem(
        "spec.placement.gpuTypes",
        f"does not fit on any candidate GPU type ({plan.selection_reason})",
        "add a GPU type with more memory, raise gpusPerReplica, use kvCache.dtype fp8"
        " or lower maxContextLength",
    )


class ManifestError(ValueError):
    """The file is not YAML or holds no LLMDeployment."""


def load_documents(text: str) -> list[Any]:
    """All non-empty YAML documents of `text`, as kubectl would send them."""
    try:
        docs = list(yaml.load_all(text, Loader=KubectlYamlLoader))
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {exc}".replace("\n", " ")) from exc
    return [as_sent_by_kubectl(doc) for doc in docs if doc is not None]


_OTHER_KINDS_OK = ("ConfigMap",)  # read by configMapRef; anything not kvscale's is skipped


def _misplaced_kind(doc: Any, index: int) -> DocumentResult | None:
    """A document meant as an LLMDeployment that the API server would not serve as one."""
    if not isinstance(doc, Mapping):
        what = type(doc).__name__
        problem = Problem(f"document {index}", f"is a {what}, not an object", "remove it")
        return DocumentResult(index, f"document {index}", (problem,))
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    ours = isinstance(api_version, str) and api_version.split("/")[0] == API_GROUP
    looks_like = isinstance(kind, str) and (
        difflib.SequenceMatcher(None, kind.lower(), KIND.lower()).ratio() >= 0.9  # not Deployment
    )
    if kind == KIND or not (ours or looks_like or kind is None):
        return None
    metadata = doc.get("metadata")
    name = str(metadata.get("name")) if isinstance(metadata, Mapping) else f"document {index}"
    if kind is None:
        problem = Problem("kind", "required field is missing", f"add kind: {KIND}")
    else:
        served = f"served by {API_VERSION_FULL}" if ours else "a kind kvscale serves"
        problem = Problem("kind", f"{echo(kind)} is not {served}", f"write kind: {KIND}")
    return DocumentResult(index, name, (problem,))


def validate_documents(docs: Sequence[Any]) -> list[DocumentResult]:
    """Validate every LLMDeployment in `docs`; ConfigMaps among them serve configMapRefs.

    Every document is looked at: one that is not an object, has no kind, or is kvscale's
    group (or spelled like an LLMDeployment) with another kind is a problem, as the API
    server would refuse it. Other kinds (the Deployment an adopt example targets) are skipped.
    """
    configmaps = {
        str(d.get("metadata", {}).get("name")): dict(d.get("data") or {})
        for d in docs
        if isinstance(d, Mapping) and d.get("kind") in _OTHER_KINDS_OK
    }
    results = []
    for i, doc in enumerate(docs):
        misplaced = _misplaced_kind(doc, i)
        if misplaced is not None:
            results.append(misplaced)
        elif doc.get("kind") == KIND:
            results.append(validate_document(doc, i, configmaps))
    if not results:
        raise ManifestError(f"no {KIND} document found; fix: check kind: {KIND}")
    return results


def validate_text(text: str) -> list[DocumentResult]:
    """Validate a (multi-document) YAML manifest."""
    return validate_documents(load_documents(text))
