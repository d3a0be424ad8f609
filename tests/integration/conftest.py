"""Fixtures of the integration tier: a real Prometheus server and fake engine pods.

Both are factories so a test decides what to scrape; everything started is stopped at teardown,
even when the test fails. Without the Prometheus binary the tests that need it are skipped with
the reason (CI installs the Debian package `prometheus`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from autoscale_fixture import collect_leaked_sessions
from promfixture import (
    EnginePod,
    FrozenPod,
    PrometheusServer,
    StartFrozenPod,
    StartPod,
    StartPrometheus,
    find_prometheus,
    stop_all,
)


@pytest.fixture(autouse=True)
def _no_leaked_sessions() -> Iterator[None]:
    """Pin sessions kopf/kmock leave to GC to the test that made them (see the helper)."""
    yield
    collect_leaked_sessions()


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    binary = find_prometheus()
    if binary is None:
        pytest.skip("prometheus binary not on PATH (install the Debian package `prometheus`)")
    return binary


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[StartPrometheus]:
    started: list[PrometheusServer] = []
    counter = itertools.count()

    def start(
        targets: list[tuple[str, Mapping[str, str]]], web_config: Path | None = None
    ) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{next(counter)}"
        workdir.mkdir()
        server = PrometheusServer(prometheus_binary, workdir, targets, web_config)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _tracked(make: Callable[..., Any]) -> tuple[Callable[..., Any], list[Any]]:
    """A factory that remembers what it made, so the fixture can stop it all."""
    made: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        item = make(*args, **kwargs)
        made.append(item)
        return item

    return start, made


@pytest.fixture
def start_pod() -> Iterator[StartPod]:
    """`start_pod(names, namespace=, llmd=, pod=)` -> a running EnginePod."""
    start, made = _tracked(EnginePod)
    yield start
    stop_all(made)


@pytest.fixture
def start_frozen_pod() -> Iterator[StartFrozenPod]:
    """`start_frozen_pod(values, age_s=, namespace=, llmd=)` -> a pod serving old samples."""
    start, made = _tracked(FrozenPod)
    yield start
    stop_all(made)
