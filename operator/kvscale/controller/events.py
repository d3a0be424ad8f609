"""Kubernetes Events about an LLMDeployment: one value type for every part of the operator
(reconcile, autoscaler, rollout guardrails) and one way to post them.

Every Event is also written to the operator's log, prefixed with the object: Events expire
(an hour by default) and `kubectl logs` is often what a user reads first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventNote:
    """A Kubernetes Event to post about the LLMDeployment."""

    type: str  # Normal | Warning
    reason: str
    message: str


def post_event(body: Mapping[str, Any], note: EventNote) -> None:
    logger.log(
        logging.WARNING if note.type == "Warning" else logging.INFO,
        "%s: %s",
        note.reason,
        note.message,
        extra={"k8s_ref": object_ref(body)},
    )
    kopf.event(body, type=note.type, reason=note.reason, message=note.message)  # type: ignore[arg-type]


def object_ref(body: Mapping[str, Any]) -> dict[str, str]:
    """What kopf's log formatters print as `[namespace/name]` (text) or the `object` key (JSON)."""
    meta = body.get("metadata") or {}
    ref = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind")}
    ref |= {key: meta.get(key) for key in ("namespace", "name", "uid")}
    return {key: str(value) for key, value in ref.items() if value}
