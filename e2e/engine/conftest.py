"""Fixtures of the engine tier: the real vLLM (CPU build) as the oracle for kvscale's numbers.

The tier needs the engine's virtualenv (`e2e/scripts/install-vllm.sh`, cached outside the repo);
without it every test skips with the command that installs it. Tiny models of each KV geometry
are generated once per session (cached by content hash), never downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pressure_run import PRESSURE_CASE, PressureRun, run_pressure

from harness.prom import find_prometheus
from harness.realvllm import EngineEnv, find_engine_env

# A test's budget includes its share of session fixtures (vLLM imports, model generation, a
# server start, a load of 30 requests): generous, for a 2-core machine shared with other work.
ENGINE_TEST_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("engine") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(ENGINE_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def engine_env() -> EngineEnv:
    env, reason = find_engine_env()
    if env is None:
        pytest.skip(reason)
    return env


@pytest.fixture(scope="session")
def tiny_models(engine_env: EngineEnv) -> dict[str, Path]:
    """Model directory per geometry name (tiny_models.GEOMETRIES)."""
    return engine_env.tiny_models()


@pytest.fixture(scope="session")
def pressure(
    engine_env: EngineEnv,
    tiny_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PressureRun]:
    """The one real engine under KV pressure that the metrics and simulator tests read."""
    binary = find_prometheus()
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package `prometheus`)")
    work_dir = tmp_path_factory.mktemp("engine-pressure")
    yield run_pressure(engine_env, tiny_models[PRESSURE_CASE.geometry], binary, work_dir)
