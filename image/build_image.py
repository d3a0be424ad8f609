"""`make image`: the operator's OCI image archive, built without Docker (docs/image.md).

1. A Debian 12 root filesystem from Debian's packages (`mmdebstrap --variant=essential` plus
   python3.11), checked against `debian.lock`: a package version the mirror now serves that the
   lock does not name fails the build (refresh with `make image-lock-debian`).
2. A virtual environment at /opt/kvscale holding the hashed `requirements.lock` wheels and the
   kvscale wheel built from this checkout (no extras), installed inside the root filesystem by
   its own interpreter (pip runs from its pinned wheel and is not left in the image).
3. A `kvscale` user (uid/gid 10001) the image runs as; one layer and the config written by
   `umoci`; the OCI layout tarred into `dist/<name>-<tag>.oci.tar`.

Every stage is cached under `$XDG_CACHE_HOME/kvscale/image` (default ~/.cache), keyed by the
hash of its inputs, so an unchanged checkout rebuilds nothing. Runs as root (chroot, device
nodes); needs `mmdebstrap` and `umoci` (`image/install-tools.sh`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from lock_wheels import BUILD_LOCK, RUNTIME_LOCK, TARGET  # noqa: E402

SUITE = "bookworm"  # Debian 12
DEBIAN_PACKAGES = ("python3.11",)  # besides Debian's Essential set: the interpreter + stdlib
DEBIAN_LOCK = HERE / "debian.lock"
# Documentation, manuals and translations are not needed to run; licences are kept.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
UID = GID = 10001  # numeric, so runAsNonRoot can check it without reading /etc/passwd
USER = "kvscale"
VENV = "/opt/kvscale"
PORTS = ("8080/tcp", "8081/tcp")  # metrics, health (charts/kvscale/values.yaml)
SOURCES = ("pyproject.toml", "README.md", "operator")  # what the kvscale wheel is built from
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
# Commands inside the root filesystem see none of the host's pip/Python settings.
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kvscale" / "image"


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def source_bytes() -> bytes:
    """Every file the wheel is built from, in a stable order (names and contents)."""
    files = run("git", "ls-files", "-z", *SOURCES, cwd=ROOT, capture_output=True).stdout
    out = bytearray()
    for name in sorted(filter(None, files.split("\0"))):
        out += name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0"
    return bytes(out)


def image_ref() -> tuple[str, str]:
    """(repository, tag) the chart deploys by default; the project version must equal it."""
    chart = yaml.safe_load((ROOT / "charts/kvscale/Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((ROOT / "charts/kvscale/values.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    tag = values["image"]["tag"] or str(chart["appVersion"])
    if tag != project["version"]:
        raise SystemExit(f"chart image tag {tag} != project version {project['version']}")
    return str(values["image"]["repository"]), tag


def epoch() -> int:
    """SOURCE_DATE_EPOCH: the environment's, else the last commit's time."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    return int(run("git", "log", "-1", "--format=%ct", cwd=ROOT, capture_output=True).stdout)


def apt_sources() -> list[str]:
    """The host's apt sources for the suite (mmdebstrap reads the mirror from them)."""
    listed = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    legacy = Path("/etc/apt/sources.list")
    candidates = [*listed, *([legacy] if legacy.is_file() else [])]
    paths = [p for p in candidates if SUITE in p.read_text(encoding="utf-8")]
    if not paths:
        raise SystemExit(f"no apt source for Debian {SUITE}; fix: configure a Debian mirror")
    return [str(p) for p in paths]


def installed_packages(rootfs: Path) -> str:
    listing = run(
        CHROOT,
        rootfs,
        "dpkg-query",
        "-W",
        "-f=${Package}:${Architecture}=${Version}\\n",
        capture_output=True,
    ).stdout
    return "".join(sorted(listing.splitlines(keepends=True)))


def locked_debian_packages() -> list[str]:
    """`package:arch=version` lines of debian.lock."""
    lines = DEBIAN_LOCK.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def check_debian_lock(rootfs: Path, update: bool) -> None:
    got = installed_packages(rootfs)
    header = f"# Debian {SUITE} packages of the image: `make image-lock-debian`; do not edit.\n"
    if update:
        DEBIAN_LOCK.write_text(header + got, encoding="utf-8")
        return
    want = "".join(f"{line}\n" for line in locked_debian_packages())
    if got != want:
        extra = sorted(set(got.splitlines()) - set(want.splitlines()))
        missing = sorted(set(want.splitlines()) - set(got.splitlines()))
        raise SystemExit(
            f"image/debian.lock: the mirror served {extra} instead of {missing}; fix: review"
            " and run `make image-lock-debian` (Debian replaces versions on point releases)"
        )


def _base_key() -> str:
    return digest(
        DEBIAN_LOCK.read_bytes(), SUITE.encode(), repr((DEBIAN_PACKAGES, DPKG_OPTIONS)).encode()
    )


def build_base(work: Path, update_lock: bool) -> Path:
    """Debian root filesystem tarball, cached by the lock and the package selection."""
    if not update_lock and (cache_dir() / f"base-{_base_key()}.tar").exists():
        return cache_dir() / f"base-{_base_key()}.tar"
    partial = work / "base.tar"
    run(
        "mmdebstrap", "--mode=root", "--variant=essential", "--quiet",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
        SUITE, partial, *apt_sources(),
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch())},
    )  # fmt: skip
    probe = work / "probe"
    extract(partial, probe)
    check_debian_lock(probe, update_lock)
    shutil.rmtree(probe)
    tarball = cache_dir() / f"base-{_base_key()}.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(partial, tarball)
    return tarball


def extract(tarball: Path, into: Path) -> None:
    into.mkdir(parents=True)
    run("tar", "--numeric-owner", "-xpf", tarball, "-C", into)


def build_tools() -> Path:
    """A venv with the pinned pip/setuptools/wheel, cached by the build lock."""
    venv = cache_dir() / f"tools-{digest(BUILD_LOCK.read_bytes())}"
    if not (venv / ".done").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run(sys.executable, "-m", "venv", venv)
        pip = venv / "bin/pip"
        run(pip, "install", "--quiet", "--require-hashes", "--no-deps", "-r", BUILD_LOCK)
        run(pip, "download", "--quiet", "--require-hashes", "--no-deps", "-r", BUILD_LOCK,
            "-d", venv / "wheels")  # fmt: skip
        (venv / ".done").touch()
    return venv


def download_wheels(tools: Path) -> Path:
    """The runtime wheels, verified against requirements.lock, cached by its hash."""
    wheels = cache_dir() / f"wheels-{digest(RUNTIME_LOCK.read_bytes())}"
    if not (wheels / ".done").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        run(
            tools / "bin/pip", "download", "--quiet", "--require-hashes", "--no-deps",
            "--only-binary=:all:", *TARGET, "-r", RUNTIME_LOCK, "-d", wheels,
        )  # fmt: skip
        (wheels / ".done").touch()
    return wheels


def install_python(rootfs: Path, tools: Path, wheels: Path) -> None:
    """The venv at /opt/kvscale, filled by the image's own interpreter, offline."""
    stage = rootfs / "kvscale-install"
    shutil.copytree(wheels, stage / "wheels")
    shutil.copy(RUNTIME_LOCK, stage / "requirements.lock")
    pip_wheel = next((tools / "wheels").glob("pip-*.whl"))
    shutil.copy(pip_wheel, stage)
    run(tools / "bin/pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", stage / "kvscale", ROOT)  # fmt: skip
    inside = "/kvscale-install"
    pip = (f"{VENV}/bin/python", f"{inside}/{pip_wheel.name}/pip", "install", "--isolated",
           "--quiet", "--no-index", "--no-cache-dir", "--no-deps")  # fmt: skip
    run(CHROOT, rootfs, "/usr/bin/python3.11", "-m", "venv", "--without-pip", VENV, env=CLEAN_ENV)
    run(CHROOT, rootfs, *pip, "--require-hashes", "-r", f"{inside}/requirements.lock",
        "--find-links", f"{inside}/wheels", env=CLEAN_ENV)  # fmt: skip
    kvscale_wheel = next((stage / "kvscale").glob("kvscale-*.whl")).name
    run(CHROOT, rootfs, *pip, f"{inside}/kvscale/{kvscale_wheel}", env=CLEAN_ENV)
    shutil.rmtree(stage)


def add_user(rootfs: Path) -> None:
    with (rootfs / "etc/passwd").open("a", encoding="utf-8") as passwd:
        passwd.write(f"{USER}:x:{UID}:{GID}:kvscale operator:/nonexistent:/usr/sbin/nologin\n")
    with (rootfs / "etc/group").open("a", encoding="utf-8") as group:
        group.write(f"{USER}:x:{GID}:\n")


def write_layout(rootfs: Path, work: Path, ref: tuple[str, str], out: Path) -> None:
    """One layer, the runtime config, the OCI layout as a tar archive."""
    repository, tag = ref
    created = datetime.fromtimestamp(epoch(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    layer, layout = work / "layer.tar", work / "layout"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.iterdir()):
            tar.add(path, arcname=path.name, filter=_normalise(epoch()))
    image = f"{layout}:{tag}"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run("umoci", "raw", "add-layer", "--image", image, "--history.created", created,
        "--history.created_by", "image/build_image.py", layer)  # fmt: skip
    run(
        "umoci", "config", "--image", image, "--created", created, "--author", "kvscale",
        "--history.created", created, "--history.created_by", "image/build_image.py",
        f"--config.user={UID}:{GID}", "--config.entrypoint=kvscale",
        "--config.cmd=run", "--config.cmd=--all-namespaces", "--config.workingdir=/",
        f"--config.env=PATH={VENV}/bin:/usr/bin:/bin",
        "--config.env=PYTHONDONTWRITEBYTECODE=1", "--config.env=PYTHONUNBUFFERED=1",
        *(f"--config.exposedports={p}" for p in PORTS),
        f"--config.label=org.opencontainers.image.version={tag}",
        f"--config.label=org.opencontainers.image.title={repository}",
        f"--manifest.annotation=org.opencontainers.image.ref.name={tag}",
    )  # fmt: skip
    run("umoci", "gc", "--layout", layout)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.iterdir()):
            tar.add(path, arcname=path.name, filter=_normalise(epoch()))


#: Left out of the layer: the runtime provides /dev, /proc, /sys; logs of the build itself.
_SKIPPED = ("dev/", "proc/", "sys/", "var/log/", "tmp/", "run/")


def _normalise(mtime: int) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """Fixed owner names and clamped times, so the tar depends on content, not on the run."""

    def apply(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name.startswith(_SKIPPED):
            return None
        info.mtime = min(info.mtime, mtime)
        info.uname = info.gname = ""
        return info

    return apply


def build() -> Path:
    ref = image_ref()
    name = f"{ref[0].replace('/', '-')}-{ref[1]}.oci.tar"
    inputs = [DEBIAN_LOCK.read_bytes(), RUNTIME_LOCK.read_bytes(), BUILD_LOCK.read_bytes(),
              Path(__file__).read_bytes(), source_bytes(), repr(ref).encode()]  # fmt: skip
    cached = cache_dir() / f"image-{digest(*inputs)}" / name
    if not cached.exists():
        with tempfile.TemporaryDirectory(prefix="kvscale-image-") as tmp:
            work = Path(tmp)
            rootfs = work / "rootfs"
            extract(build_base(work, update_lock=False), rootfs)
            tools = build_tools()
            install_python(rootfs, tools, download_wheels(tools))
            add_user(rootfs)
            write_layout(rootfs, work, ref, work / name)
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(work / name, cached)
    prune_cache(keep={cached.parent, cache_dir() / f"base-{_base_key()}.tar"})
    target = ROOT / "dist" / name
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copy(cached, target)
    return target


def prune_cache(keep: set[Path]) -> None:
    """Drop the base and image entries of earlier inputs (tools and wheels are small)."""
    for entry in cache_dir().glob("*"):
        if entry.name.startswith(("base-", "image-")) and entry not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def update_debian_lock() -> None:
    with tempfile.TemporaryDirectory(prefix="kvscale-image-") as tmp:
        build_base(Path(tmp), update_lock=True)
    print(f"wrote {DEBIAN_LOCK.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--update-debian-lock", action="store_true", help="rewrite image/debian.lock"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("image/build_image.py needs root (chroot, device nodes); fix: run as root")
    started = time.monotonic()
    if args.update_debian_lock:
        update_debian_lock()
        return 0
    archive = build()
    size_mib = archive.stat().st_size / 2**20
    print(f"{archive.relative_to(ROOT)}: {size_mib:.1f} MiB in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
