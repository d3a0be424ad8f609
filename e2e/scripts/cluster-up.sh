#!/usr/bin/env bash
# Starts a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kwok) from the cached binaries with `kwokctl create cluster --runtime binary`, creates the fake
# GPU nodes in e2e/nodes/ and waits until they are Ready and the default ServiceAccount exists.
# Prints the kubeconfig path on stdout (everything else goes to stderr).
# On failure the component logs are copied to <work dir>/logs and the cluster is deleted.
#
# Usage: cluster-up.sh [NAME]        (default name: kvscale-e2e)
# Env:   KVSCALE_E2E_WORKDIR  parent of the per-cluster work dir (default ${XDG_RUNTIME_DIR:-/tmp}/kvscale-e2e)
#        KVSCALE_E2E_WAIT     how long kwokctl waits for the control plane (default 3m)
#        PYTHON               interpreter with the kubernetes client (default: the repo's .venv)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NAME=${1:-kvscale-e2e}
WORK_DIR=$(cluster_work_dir "$NAME")
KUBECONFIG_PATH=$WORK_DIR/kubeconfig
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$REPO_DIR/.venv/bin/python
  [ -x "$PYTHON" ] || PYTHON=python3
fi

binaries_are_cached ||
  die "control-plane binaries missing in $CACHE_DIR/bin; run e2e/scripts/build-controlplane.sh"
if [ -d "$WORK_DIR/kwok/clusters/$NAME" ]; then
  die "cluster $NAME already exists in $WORK_DIR; run e2e/scripts/cluster-down.sh $NAME first"
fi
rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR"
# kubectl's discovery cache (kwokctl's probes, our /readyz check) stays in the work dir too.
export KUBECACHEDIR=$WORK_DIR/kube-cache

on_exit() {
  local status=$?
  [ "$status" = 0 ] && return 0
  log "cluster $NAME failed to come up (exit $status)"
  keep_cluster_logs "$NAME" "$WORK_DIR"
  delete_cluster "$NAME" "$WORK_DIR" || true
  log "logs: $WORK_DIR/logs"
}
trap on_exit EXIT

STARTED_S=$SECONDS
log "creating cluster $NAME (k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION) in $WORK_DIR"
# --config binds every component to 127.0.0.1; --kubeconfig keeps kwokctl away from
# ~/.kube/config; every binary is a local path, so kwokctl downloads nothing. kwokctl probes
# readiness with the first `kubectl` on PATH (downloading one if there is none), hence our own
# version-matched kubectl goes first.
PATH=$K8S_BIN_DIR:$PATH KWOK_KUBECTL_BINARY=$K8S_BIN_DIR/kubectl KWOK_WORKDIR=$WORK_DIR/kwok \
  "$KWOK_BIN_DIR/kwokctl" create cluster \
  --config "$CONTROLPLANE_DIR/kwokctl.yaml" \
  --name "$NAME" \
  --runtime binary \
  --kubeconfig "$KUBECONFIG_PATH" \
  --etcd-binary "$ETCD_BIN_DIR/etcd" \
  --kube-apiserver-binary "$K8S_BIN_DIR/kube-apiserver" \
  --kube-controller-manager-binary "$K8S_BIN_DIR/kube-controller-manager" \
  --kube-scheduler-binary "$K8S_BIN_DIR/kube-scheduler" \
  --kwok-controller-binary "$KWOK_BIN_DIR/kwok" \
  --wait "${KVSCALE_E2E_WAIT:-3m}" 2>&1 | tee "$WORK_DIR/kwokctl-create.log" >&2
# kwokctl exits 0 even when its wait timed out, so check readiness ourselves.
"$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null ||
  die "kube-apiserver is not ready after kwokctl create"
log "control plane up in $((SECONDS - STARTED_S)) s; creating fake GPU nodes"

"$PYTHON" "$E2E_DIR/cluster.py" prepare --kubeconfig "$KUBECONFIG_PATH" --nodes-dir "$E2E_DIR/nodes"
log "cluster $NAME ready in $((SECONDS - STARTED_S)) s"
printf '%s\n' "$KUBECONFIG_PATH"
