#!/usr/bin/env bash
# Deletes a cluster made by cluster-up.sh and checks that none of its processes survive.
#
# Usage: cluster-down.sh [--keep-logs] [NAME]   (default name: kvscale-e2e)
#   --keep-logs   copy component logs to <work dir>/logs first (used after a failed test run)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEEP_LOGS=0
if [ "${1:-}" = "--keep-logs" ]; then
  KEEP_LOGS=1
  shift
fi
NAME=${1:-kvscale-e2e}
WORK_DIR=$(cluster_work_dir "$NAME")

if [ ! -d "$WORK_DIR/kwok/clusters/$NAME" ]; then
  log "cluster $NAME not found in $WORK_DIR; nothing to delete"
  exit 0
fi
if [ "$KEEP_LOGS" = 1 ]; then
  keep_cluster_logs "$NAME" "$WORK_DIR"
fi
# kwokctl stops the components itself; anything still running from the cluster dir is a leak.
delete_cluster "$NAME" "$WORK_DIR" || exit 1

if [ "$KEEP_LOGS" = 1 ]; then
  rm -rf "$WORK_DIR/kwok" "$WORK_DIR/kubeconfig"
  log "cluster $NAME deleted; logs kept in $WORK_DIR/logs"
else
  rm -rf "$WORK_DIR"
  log "cluster $NAME deleted; no processes left"
fi
