#!/usr/bin/env bash
# Deletes the kind cluster made by up.sh, and its kubeconfig.
#
# Usage: down.sh [NAME]      (default name: kvscale-e2e-kind)
set -euo pipefail
# shellcheck source=../scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"

NAME=${1:-kvscale-e2e-kind}
[[ $NAME =~ ^[a-z0-9][-a-z0-9]*$ ]] || die "cluster name '$NAME': use lower-case letters, digits and '-'"
command -v kind >/dev/null || die "kind not found on PATH"

if kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind delete cluster --name "$NAME" >&2
  log "kind cluster $NAME deleted"
else
  log "kind cluster $NAME not found; nothing to delete"
fi
rm -rf "$(cluster_work_dir "$NAME")"
