"""The e2e harness restarts an operator replica that exited because it lost its Lease, as the
kubelet restarts the chart's pod; a crash, or a replica the test stopped, stays down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class FakeProcess:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.code = -15

    def wait(self, timeout: float | None = None) -> int | None:
        return self.code


@pytest.fixture
def operator(e2e_importable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import harness.operator as module

    monkeypatch.setattr(module, "RESTART_BACKOFF_S", 0.0)
    replica = module.OperatorProcess(None, tmp_path, {}, 0)  # type: ignore[arg-type]

    def spawn() -> None:
        path = tmp_path / f"run-{len(replica.log_paths) + 1}.log"
        path.write_text("acquired lease\n", encoding="utf-8")
        replica.log_paths.append(path)
        replica.process = FakeProcess()

    monkeypatch.setattr(replica, "_spawn", spawn)
    monkeypatch.setattr(replica, "_wait_healthy", lambda: None)
    return replica.start()


def _exit(replica: Any, last_line: str) -> None:
    with replica.log_path.open("a", encoding="utf-8") as log:
        log.write(last_line + "\n")
    replica.process.code = 1


def _within(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_replica_that_lost_its_lease_is_restarted(operator: Any) -> None:
    from harness.operator import LEASE_LOST_EXIT

    _exit(operator, f"ERROR lease kvscale lost; {LEASE_LOST_EXIT}")
    assert _within(lambda: operator.restarts == 1 and operator.process.poll() is None)
    assert len(operator.log_paths) == 2  # the restart logs to its own file


def test_a_crash_is_left_down_for_the_test_to_see(operator: Any) -> None:
    _exit(operator, "Traceback (most recent call last): ...")
    assert not _within(lambda: operator.restarts > 0, 1.5)
    assert operator.process.poll() == 1


def test_a_stopped_replica_stays_stopped(operator: Any) -> None:
    from harness.operator import LEASE_LOST_EXIT

    process = operator.process
    operator.stop()
    with operator.log_path.open("a", encoding="utf-8") as log:
        log.write(LEASE_LOST_EXIT + "\n")  # even with the lease-loss line last
    assert process.code == -15  # terminated by the harness
    assert not _within(lambda: operator.restarts > 0, 1.5)
    assert operator.process is None
