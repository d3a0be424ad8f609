"""`make image-smoke`: unpack the built OCI archive and run kvscale from its root filesystem.

Reads the archive with the standard library only (index -> manifest -> config and layers, each
blob checked against its digest), so a broken layout fails here and not at a registry. Runs
the image's entrypoint with `chroot --userspec`, as the image's user: needs root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from build_image import (
    CHROOT,
    CLEAN_ENV,
    ROOT,
    RUNTIME_LOCK,
    image_ref,
    installed_packages,
    locked_debian_packages,
)

pytestmark = pytest.mark.image

REPOSITORY, TAG = image_ref()
ARCHIVE = Path(
    os.environ.get("KVSCALE_IMAGE_ARCHIVE")
    or ROOT / "dist" / f"{REPOSITORY.replace('/', '-')}-{TAG}.oci.tar"
)


def blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    algorithm, hexdigest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / hexdigest).read_bytes()
    assert hashlib.new(algorithm, data).hexdigest() == hexdigest, descriptor["digest"]
    assert len(data) == descriptor["size"], descriptor["digest"]
    return data


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} not found; fix: run `make image` first")
    path = tmp_path_factory.mktemp("layout")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(path, filter="data")
    return path


@pytest.fixture(scope="module")
def manifest(layout: Path) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    tagged = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG
    ]
    assert len(tagged) == 1, index
    loaded: dict[str, Any] = json.loads(blob(layout, tagged[0]))
    return loaded


@pytest.fixture(scope="module")
def config(layout: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(blob(layout, manifest["config"]))
    return loaded


@pytest.fixture(scope="module")
def rootfs(
    layout: Path, manifest: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the smoke test chroots into the image; fix: run it as root")
    path = tmp_path_factory.mktemp("rootfs")
    path.chmod(0o755)  # a runtime's root directory; pytest makes its directories 0700
    for layer in manifest["layers"]:
        assert layer["mediaType"].endswith("tar+gzip"), layer["mediaType"]
        blob(layout, layer)  # digest check
        algorithm, hexdigest = layer["digest"].split(":")
        with tarfile.open(layout / "blobs" / algorithm / hexdigest) as tar:
            tar.extractall(path, filter="fully_trusted")  # root-owned files stay root-owned
    for mount in ("dev", "proc"):  # what a container runtime provides
        (path / mount).mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", "/dev", path / "dev"], check=True)
    yield path
    subprocess.run(["umount", path / "dev"], check=True)
    shutil.rmtree(path)


def in_image(rootfs: Path, config: dict[str, Any], *argv: str) -> str:
    """Run argv in the image as its configured user with its configured environment."""
    user = config["config"]["User"]
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    done = subprocess.run(
        [CHROOT, f"--userspec={user}", str(rootfs), *argv],
        env={**CLEAN_ENV, **env, "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_layout_is_tagged_as_the_chart_deploys_it(layout: Path) -> None:
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    values = (ROOT / "charts/kvscale/values.yaml").read_text(encoding="utf-8")
    assert f"repository: {REPOSITORY}" in values


def test_the_image_runs_kvscale_as_a_non_root_numeric_user(
    config: dict[str, Any], rootfs: Path
) -> None:
    runtime = config["config"]
    uid, gid = (int(part) for part in runtime["User"].split(":"))
    assert uid != 0 and gid != 0
    assert runtime["Entrypoint"] == ["kvscale"]
    assert runtime["Cmd"] == ["run", "--all-namespaces"]
    passwd = (rootfs / "etc/passwd").read_text(encoding="utf-8").splitlines()
    assert any(line.split(":")[2] == str(uid) for line in passwd)


def test_kvscale_version_runs_inside_the_image(config: dict[str, Any], rootfs: Path) -> None:
    entrypoint = config["config"]["Entrypoint"]
    assert in_image(rootfs, config, *entrypoint, "--version").strip() == f"kvscale {TAG}"


def test_the_operator_imports_and_the_simulator_extras_are_absent(
    config: dict[str, Any], rootfs: Path
) -> None:
    code = (
        "import importlib.util, kopf, kubernetes, prometheus_api_client, aiohttp\n"
        "import kvscale.controller.handlers, kvscale.metrics.prometheus\n"
        "print(importlib.util.find_spec('matplotlib') is None)"
    )
    assert in_image(rootfs, config, "python", "-c", code).strip() == "True"


def test_installed_python_and_debian_packages_are_the_locked_ones(
    config: dict[str, Any], rootfs: Path
) -> None:
    listed = in_image(
        rootfs,
        config,
        "python",
        "-c",
        "import importlib.metadata as m\n"
        "print('\\n'.join(sorted(f'{d.name.lower()}=={d.version}' for d in m.distributions())))",
    ).split()
    locked = [
        line.split()[0].replace("_", "-")
        for line in RUNTIME_LOCK.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert sorted(p.replace("_", "-") for p in listed) == sorted([*locked, f"kvscale=={TAG}"])
    assert installed_packages(rootfs).splitlines() == locked_debian_packages()
