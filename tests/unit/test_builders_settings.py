"""Operator settings from KVSCALE_* variables: defaults, parsing, and one-line errors."""

from __future__ import annotations

import logging

import pytest

from kvscale.controller.runtime import build_kopf_settings
from kvscale.controller.settings import (
    ApplyMode,
    ScrapeMode,
    Settings,
    SettingsError,
    load_settings,
)


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.reconcile.interval_s == 30.0
    assert settings.reconcile.scaling_interval_s == 15.0
    assert settings.server.metrics_port == 8080
    assert settings.watch.namespaces == ()


@pytest.mark.parametrize(
    ("env", "read"),
    [
        ({"KVSCALE_NAMESPACES": " a, b ,,"}, lambda s: s.watch.namespaces == ("a", "b")),
        ({"KVSCALE_RECONCILE_INTERVAL_S": "2.5"}, lambda s: s.reconcile.interval_s == 2.5),
        (
            {"KVSCALE_APPLY_MODE": "client-side"},
            lambda s: s.reconcile.apply_mode is ApplyMode.CLIENT_SIDE,
        ),
        (
            {"KVSCALE_SCRAPE_MODE": "Annotations"},
            lambda s: s.prometheus.scrape_mode is ScrapeMode.ANNOTATIONS,
        ),
        ({"KVSCALE_LEADER_ELECTION": "no"}, lambda s: s.leader_election.enabled is False),
        ({"KVSCALE_METRICS_PORT": "0"}, lambda s: s.server.metrics_port == 0),
        ({"KVSCALE_EVENT_LEVEL": "info"}, lambda s: s.event_level == logging.INFO),
        (
            {"KVSCALE_PROMETHEUS_URL": " http://prom:9090 "},
            lambda s: s.prometheus.url == "http://prom:9090",
        ),
    ],
)
def test_variables_are_parsed(env: dict[str, str], read: object) -> None:
    assert callable(read) and read(load_settings(env))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"KVSCALE_RECONCILE_INTERVAL_S": "soon"}, "KVSCALE_RECONCILE_INTERVAL_S"),
        ({"KVSCALE_RECONCILE_INTERVAL_S": "0"}, "KVSCALE_RECONCILE_INTERVAL_S"),
        ({"KVSCALE_METRICS_PORT": "-1"}, "KVSCALE_METRICS_PORT"),
        ({"KVSCALE_APPLY_MODE": "yolo"}, "KVSCALE_APPLY_MODE"),
        ({"KVSCALE_LEASE_DURATION_S": "5"}, "KVSCALE_LEASE_DURATION_S"),
        ({"KVSCALE_EVENT_LEVEL": "LOUD"}, "KVSCALE_EVENT_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(env)


def test_kopf_settings_follow_ours() -> None:
    settings = load_settings({"KVSCALE_EVENT_LEVEL": "ERROR"})
    kopf_settings = build_kopf_settings(settings)
    assert kopf_settings.peering.standalone is True  # the Lease elects, not kopf peering
    assert kopf_settings.posting.level == logging.ERROR
    assert kopf_settings.persistence.finalizer == "kvscale.dev/finalizer"
    assert kopf_settings.watching.server_timeout == settings.watch.server_timeout_s
