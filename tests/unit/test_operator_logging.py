"""The operator's log: every Event it posts is also a log line about the object, and the two
formats of `kvscale run --log-format` both name the object the line is about."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from kvscale.cli.run_cmd import configure_logging
from kvscale.controller.events import EventNote, post_event

BODY: dict[str, Any] = {
    "apiVersion": "kvscale.dev/v1alpha1",
    "kind": "LLMDeployment",
    "metadata": {"namespace": "serving", "name": "llama", "uid": "0b5e"},
}


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("kind", "level"), [("Normal", logging.INFO), ("Warning", logging.WARNING)]
)
def test_an_event_is_posted_and_logged_about_its_object(
    caplog: pytest.LogCaptureFixture, kind: str, level: int
) -> None:
    note = EventNote(kind, "KvDemand", "scaled up 1 -> 2: KV demand 26k tokens")
    with mock.patch("kopf.event") as event, caplog.at_level(logging.INFO):
        post_event(BODY, note)
    event.assert_called_once_with(BODY, type=kind, reason="KvDemand", message=note.message)
    (record,) = [r for r in caplog.records if r.name == "kvscale.controller.events"]
    assert record.levelno == level
    assert record.getMessage() == "KvDemand: scaled up 1 -> 2: KV demand 26k tokens"
    ref = record.k8s_ref  # type: ignore[attr-defined]
    assert (ref["namespace"], ref["name"], ref["kind"]) == ("serving", "llama", "LLMDeployment")


def format_event(root: logging.Logger) -> str:
    (handler,) = [
        h for h in root.handlers if h.formatter is not None and "Kopf" in type(h).__name__
    ]
    captured: list[str] = []
    handler.emit = lambda record: captured.append(handler.format(record))  # type: ignore[method-assign]
    with mock.patch("kopf.event"):
        post_event(BODY, EventNote("Warning", "PreemptionRateRegressed", "rolled back"))
    (line,) = captured
    return line


def test_text_logs_prefix_the_object(root_logging: logging.Logger) -> None:
    configure_logging("text", verbose=False)
    line = format_event(root_logging)
    assert "[serving/llama] PreemptionRateRegressed: rolled back" in line
    assert "WARNING" in line


def test_json_logs_carry_the_object_as_a_key(root_logging: logging.Logger) -> None:
    configure_logging("json", verbose=True)
    entry = json.loads(format_event(root_logging))
    assert entry["message"] == "PreemptionRateRegressed: rolled back"
    assert entry["object"]["namespace"] == "serving" and entry["object"]["name"] == "llama"
    assert entry["severity"] == "warn"
    assert root_logging.level == logging.DEBUG  # --verbose
