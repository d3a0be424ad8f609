"""Session fixture ``cluster``: a real kube-apiserver + KCM + scheduler + kwok with GPU nodes.

The binaries are built (or found in the per-version cache) once, right after collection and
only when an e2e test was selected, so a cold build is not cut off by a per-test timeout and
its progress is shown live.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster import (
    Cluster,
    ClusterStartError,
    ensure_binaries,
    existing_kubeconfig,
    open_cluster,
)

SKIP_REASON_KEY = pytest.StashKey[str | None]()
BUILD_ERROR_KEY = pytest.StashKey[str | None]()


def record_binaries_state(config: pytest.Config) -> None:
    """Stash why the cluster cannot start (skip reason or build error) for the fixture."""
    try:
        config.stash[SKIP_REASON_KEY] = ensure_binaries()
    except ClusterStartError as error:
        config.stash[BUILD_ERROR_KEY] = str(error)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Ensure the control-plane binaries exist before the first e2e test starts its clock."""
    if not any(item.get_closest_marker("e2e") for item in session.items):
        return
    if existing_kubeconfig() is not None:
        return  # KVSCALE_E2E_KUBECONFIG: nothing to build
    capture = session.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        record_binaries_state(session.config)
        return
    with capture.global_and_fixture_disabled():
        record_binaries_state(session.config)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Bring the cluster up once per session; logs are kept when any test of the session fails.

    With KVSCALE_E2E_KUBECONFIG set, that cluster is used as it is: checked, never started,
    changed beforehand or deleted (e2e/kind/up.sh makes one with Docker).
    """
    if existing_kubeconfig() is None:
        build_error = request.config.stash.get(BUILD_ERROR_KEY, None)
        if build_error is not None:
            pytest.fail(build_error)
        skip_reason = request.config.stash.get(SKIP_REASON_KEY, None)
        if skip_reason is not None:
            pytest.skip(skip_reason)
    failures_before = request.session.testsfailed
    try:
        with open_cluster(lambda: request.session.testsfailed > failures_before) as cluster:
            yield cluster
    except ClusterStartError as error:
        pytest.fail(str(error), pytrace=False)


pytest_plugins = ["harness.fixtures"]
