"""Fixtures of the unit tier."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parents[2] / "e2e"


@pytest.fixture(scope="module")
def e2e_importable() -> Iterator[Path]:
    """The e2e folder on sys.path while a module's tests run: its scripts and `harness`
    package are not installed, and the pure parts of them are tested here."""
    sys.path.insert(0, str(E2E_DIR))
    try:
        yield E2E_DIR
    finally:
        sys.path.remove(str(E2E_DIR))
