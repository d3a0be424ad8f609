"""The Docker-only kind path (e2e/kind/) cannot run in CI, so check here what can be checked
without Docker: the kind config parses and pins a node image of the suite's Kubernetes minor,
the scripts parse (and pass shellcheck when it is installed), and the KVSCALE_E2E_KUBECONFIG
hook of e2e/cluster.py refuses a kubeconfig that does not exist, by name."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml

E2E_DIR = Path(__file__).resolve().parents[2] / "e2e"
KIND_DIR = E2E_DIR / "kind"
SCRIPTS = ("up.sh", "down.sh")
# kindest/node:vMAJOR.MINOR.PATCH@sha256:<64 hex>; no registry host before the repository.
NODE_IMAGE = re.compile(r"^kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}$")


@cache
def load_e2e_cluster_module() -> ModuleType:
    """e2e/cluster.py is a script next to the e2e conftest, not a package module."""
    spec = importlib.util.spec_from_file_location("kvscale_e2e_cluster", E2E_DIR / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_kind_config_pins_a_node_image_of_the_suites_kubernetes_minor() -> None:
    config = yaml.safe_load((KIND_DIR / "kind-config.yaml").read_text(encoding="utf-8"))
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"
    (node,) = config["nodes"]
    assert node["role"] == "control-plane"
    match = NODE_IMAGE.match(node["image"])
    assert match is not None, node["image"]
    pinned = load_e2e_cluster_module().read_versions().kubernetes  # e.g. v1.36.3
    assert f"v{match[1]}.{match[2]}." == pinned[: pinned.rindex(".") + 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_kind_script_is_executable_bash_that_parses(script: str) -> None:
    path = KIND_DIR / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_kind_script_passes_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        [shellcheck, "-x", "-P", "SCRIPTDIR", str(KIND_DIR / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_up_script_takes_kwok_version_and_nodes_from_the_shared_files() -> None:
    """One pin and one set of nodes for both clusters: nothing version-like is hard-coded."""
    text = (KIND_DIR / "up.sh").read_text(encoding="utf-8")
    assert "releases/download/$KWOK_VERSION" in text
    assert re.search(r"releases/download/v\d", text) is None
    assert '--nodes-dir "$E2E_DIR/nodes"' in text


def test_existing_kubeconfig_hook_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster = load_e2e_cluster_module()
    monkeypatch.delenv(cluster.EXISTING_KUBECONFIG_ENV, raising=False)
    assert cluster.existing_kubeconfig() is None
    monkeypatch.setenv(cluster.EXISTING_KUBECONFIG_ENV, str(tmp_path / "kubeconfig"))
    assert cluster.existing_kubeconfig() == tmp_path / "kubeconfig"


def test_existing_cluster_check_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    cluster = load_e2e_cluster_module()
    missing = tmp_path / "nope"
    with pytest.raises(cluster.ClusterStartError, match=r"KVSCALE_E2E_KUBECONFIG=.*no such file"):
        cluster.check_existing_cluster(missing)
