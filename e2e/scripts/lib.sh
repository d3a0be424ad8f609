# shellcheck shell=bash
# Shared settings for the e2e control-plane scripts (sourced, not executed).
# Pinned versions come from e2e/controlplane/versions.env; an environment variable of the
# same name overrides a pin (e.g. K8S_VERSION=v1.36.1 e2e/scripts/build-controlplane.sh).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTROLPLANE_DIR=$E2E_DIR/controlplane

# shellcheck source-path=SCRIPTDIR source=pins.sh
. "$E2E_DIR/scripts/pins.sh"
read_pins "$CONTROLPLANE_DIR/versions.env"
export K8S_VERSION ETCD_VERSION KWOK_VERSION

# Binaries are cached per version outside the repo, so a warm run skips the build entirely.
CACHE_DIR=${KVSCALE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvscale-e2e}
K8S_BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION
ETCD_BIN_DIR=$CACHE_DIR/bin/etcd-$ETCD_VERSION
KWOK_BIN_DIR=$CACHE_DIR/bin/kwok-$KWOK_VERSION

log() {
  printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# stamp_is_current DIR CONTENT FILE... : the stamp matches and every binary is executable.
stamp_is_current() {
  local dir=$1 content=$2 name
  shift 2
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$content" ] || return 1
  for name in "$@"; do
    [ -x "$dir/$name" ] || return 1
  done
}

k8s_stamp() { printf 'k8s.io/kubernetes %s %s\n' "$K8S_VERSION" "$(uname -sm)"; }
etcd_stamp() { printf 'go.etcd.io/etcd/server/v3 %s %s\n' "$ETCD_VERSION" "$(uname -sm)"; }
kwok_stamp() { printf 'sigs.k8s.io/kwok %s %s\n' "$KWOK_VERSION" "$(uname -sm)"; }

# kubectl is built too: kwokctl's readiness probe shells out to it and would download one.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# binaries_are_cached: true when all five components are present for the pinned versions.
binaries_are_cached() {
  stamp_is_current "$K8S_BIN_DIR" "$(k8s_stamp)" "${K8S_BINARIES[@]}" &&
    stamp_is_current "$ETCD_BIN_DIR" "$(etcd_stamp)" etcd &&
    stamp_is_current "$KWOK_BIN_DIR" "$(kwok_stamp)" kwok kwokctl
}

# Per-cluster state lives outside the repo: kubeconfig, kwokctl's workdir (PKI, component logs).
cluster_work_dir() {
  printf '%s/%s\n' "${KVSCALE_E2E_WORKDIR:-${XDG_RUNTIME_DIR:-/tmp}/kvscale-e2e}" "$1"
}

KWOK_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller)

# keep_cluster_logs NAME WORK_DIR: copy every component's log to WORK_DIR/logs and say where.
keep_cluster_logs() {
  local name=$1 work_dir=$2 component
  mkdir -p "$work_dir/logs"
  for component in "${KWOK_COMPONENTS[@]}"; do
    KWOK_WORKDIR=$work_dir/kwok "$KWOK_BIN_DIR/kwokctl" logs "$component" --name "$name" \
      >"$work_dir/logs/$component.log" 2>/dev/null || rm -f "$work_dir/logs/$component.log"
  done
  if [ -d "$work_dir/kwok/clusters/$name/logs" ]; then
    cp -r "$work_dir/kwok/clusters/$name/logs/." "$work_dir/logs/" 2>/dev/null || true
  fi
  mv -f "$work_dir/kwokctl-create.log" "$work_dir/logs/" 2>/dev/null || true
  log "component logs kept in $work_dir/logs"
}

# cluster_pids WORK_DIR: PIDs of processes started from this cluster's directory (our own).
cluster_pids() {
  pgrep -f -- "$1/kwok/clusters/" || true
}

# delete_cluster NAME WORK_DIR: kwokctl delete, then make sure no component survived; a survivor
# is stopped by PID, named, and makes this return 1.
delete_cluster() {
  local name=$1 work_dir=$2 leftover
  KWOK_WORKDIR=$work_dir/kwok "$KWOK_BIN_DIR/kwokctl" delete cluster --name "$name" >&2 || true
  for _ in $(seq 1 20); do
    [ -z "$(cluster_pids "$work_dir")" ] && return 0
    sleep 0.5
  done
  leftover=$(cluster_pids "$work_dir")
  [ -z "$leftover" ] && return 0
  log "stray processes after deleting $name (stopping them): $(tr '\n' ' ' <<<"$leftover")"
  # shellcheck disable=SC2086  # one PID per word
  kill $leftover 2>/dev/null || true
  return 1
}
