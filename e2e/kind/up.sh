#!/usr/bin/env bash
# Creates a kind cluster (needs Docker) for the kvscale e2e suite. kwok runs inside it as a
# controller (its release manifests, version pinned in e2e/controlplane/versions.env) and fakes
# the same six GPU nodes as the Docker-less kwokctl cluster (e2e/nodes/*.yaml): same names,
# labels and nvidia.com/gpu capacity, pods bound to them turn Running without a kubelet.
# Prints the kubeconfig path on stdout (progress goes to stderr), so:
#   KVSCALE_E2E_KUBECONFIG=$(e2e/kind/up.sh) .venv/bin/pytest -m e2e e2e
#
# Usage: up.sh [NAME]        (default name: kvscale-e2e-kind)
# Needs: a running Docker, kind >= v0.33.0, kubectl, the repo's .venv (or PYTHON=...), and the
#        network for the kind node image and kwok's release manifests and image.
# Env:   KVSCALE_E2E_WORKDIR  parent of the per-cluster dir holding the kubeconfig
#                             (default ${XDG_RUNTIME_DIR:-/tmp}/kvscale-e2e)
set -euo pipefail
# shellcheck source=../scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"

NAME=${1:-kvscale-e2e-kind}
[[ $NAME =~ ^[a-z0-9][-a-z0-9]*$ ]] || die "cluster name '$NAME': use lower-case letters, digits and '-'"
KIND_DIR=$E2E_DIR/kind
WORK_DIR=$(cluster_work_dir "$NAME")
KUBECONFIG_PATH=$WORK_DIR/kubeconfig
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$REPO_DIR/.venv/bin/python
  [ -x "$PYTHON" ] || PYTHON=python3
fi
KWOK_RELEASE_URL=https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION
# The fake nodes carry no taint (as on the kwokctl cluster), so a kwok pod scheduled onto one
# would be "run" by itself, i.e. by nobody: keep it on the kind node.
KWOK_ON_KIND_NODE='{"spec":{"template":{"spec":{
  "nodeSelector":{"node-role.kubernetes.io/control-plane":""},
  "tolerations":[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists","effect":"NoSchedule"}]}}}}'

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null ||
    die "$tool not found on PATH: this path needs Docker, kind and kubectl (e2e/kind/README.md)"
done
docker info >/dev/null 2>&1 ||
  die "Docker is not running (docker info failed); without Docker use the default kwokctl path"
if kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  die "kind cluster $NAME already exists; use it or run e2e/kind/down.sh $NAME first"
fi

on_exit() {
  local status=$?
  [ "$status" = 0 ] && return 0
  log "cluster $NAME is not ready (exit $status); inspect it with KUBECONFIG=$KUBECONFIG_PATH"
  log "or delete it with e2e/kind/down.sh $NAME"
}
trap on_exit EXIT

STARTED_S=$SECONDS
mkdir -p "$WORK_DIR"
log "creating kind cluster $NAME"
kind create cluster --name "$NAME" --config "$KIND_DIR/kind-config.yaml" \
  --kubeconfig "$KUBECONFIG_PATH" --wait 180s >&2
export KUBECONFIG=$KUBECONFIG_PATH

log "installing kwok $KWOK_VERSION (controller + fast stages) in kube-system"
kubectl apply -f "$KWOK_RELEASE_URL/kwok.yaml" >&2
kubectl apply -f "$KWOK_RELEASE_URL/stage-fast.yaml" >&2
kubectl -n kube-system patch deployment kwok-controller --type merge -p "$KWOK_ON_KIND_NODE" >&2
kubectl -n kube-system rollout status deployment/kwok-controller --timeout 180s >&2

log "creating the fake GPU nodes from e2e/nodes/"
"$PYTHON" "$E2E_DIR/cluster.py" prepare --kubeconfig "$KUBECONFIG_PATH" --nodes-dir "$E2E_DIR/nodes"
log "cluster $NAME ready in $((SECONDS - STARTED_S)) s"
printf '%s\n' "$KUBECONFIG_PATH"
