"""The image's pinned inputs are current and name what the chart deploys (no build needed)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "image"))
import build_image as build  # noqa: E402
import lock_wheels as lock  # noqa: E402

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def lock_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    return [line for line in text if line and not line.startswith("#")]


def test_runtime_lock_was_resolved_from_the_current_dependencies() -> None:
    header = [
        line.removeprefix("#   from: ")
        for line in lock.RUNTIME_LOCK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#   from: ")
    ]
    assert header == PROJECT["dependencies"], "run `make image-lock`"


def test_every_locked_wheel_is_pinned_and_hashed() -> None:
    for path in (lock.RUNTIME_LOCK, lock.BUILD_LOCK):
        for line in lock_lines(path):
            requirement, hash_option = line.split(" ")
            assert "==" in requirement, line
            assert hash_option.startswith("--hash=sha256:") and len(hash_option) == 14 + 64, line


def test_no_optional_extra_reaches_the_image() -> None:
    optional = {
        name.split(">")[0].split("=")[0].split("[")[0].lower()
        for extra, requirements in PROJECT["optional-dependencies"].items()
        if extra != "dev"
        for name in requirements
    }
    assert optional >= {"matplotlib", "numpy"}
    locked = {line.split("==")[0] for line in lock_lines(lock.RUNTIME_LOCK)}
    assert not optional & locked


def test_the_image_is_named_and_tagged_as_the_chart_deploys_it() -> None:
    values = yaml.safe_load((ROOT / "charts/kvscale/values.yaml").read_text(encoding="utf-8"))
    chart = yaml.safe_load((ROOT / "charts/kvscale/Chart.yaml").read_text(encoding="utf-8"))
    repository, tag = build.image_ref()
    assert repository == values["image"]["repository"]
    assert tag == (values["image"]["tag"] or chart["appVersion"]) == PROJECT["version"]
    manifest = (ROOT / "manifests/base/deployment.yaml").read_text(encoding="utf-8")
    assert f"image: {repository}:{tag}" in manifest


def test_debian_lock_pins_the_interpreter() -> None:
    packages = {
        line.split(":")[0]: line.split("=", 1)[1] for line in build.locked_debian_packages()
    }
    for package in build.DEBIAN_PACKAGES:
        assert package in packages, package


def test_dockerfile_uses_the_locked_interpreter_wheels_and_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    packages = dict(line.split("=", 1) for line in build.locked_debian_packages())
    assert f"ARG PYTHON_DEBIAN_VERSION={packages['python3.11:amd64']}\n" in dockerfile
    assert "--require-hashes" in dockerfile and "image/requirements.lock" in dockerfile
    assert f"USER {build.UID}:{build.GID}" in dockerfile
    assert "matplotlib" not in dockerfile
