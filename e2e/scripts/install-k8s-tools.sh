#!/usr/bin/env bash
# Builds the chart-check tools from Go modules and caches them per version outside the repo:
#   helm        (helm.sh/helm/v3, `go install`)        -> helm lint --strict, helm template
#   kubeconform (github.com/yannh/kubeconform)         -> schema validation of rendered objects
#   psacheck    (e2e/tools/psacheck: the upstream k8s.io/pod-security-admission checks)
# and fetches the Prometheus Operator module (its CRDs give kubeconform the PodMonitor,
# ServiceMonitor and PrometheusRule schemas). Kubernetes' own schemas come from the
# kubernetes-validate Python package (a dev dependency), see e2e/scripts/chart-check.sh.
# Idempotent: a tool whose binary and stamp are cached is skipped (a warm run needs no Go).
#
# Usage: install-k8s-tools.sh [--check]   (--check: exit 0 when all are cached, builds nothing)
# Logs go to stderr; `install-k8s-tools.sh --dir` prints the tools' paths as shell assignments.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TOOLS_DIR=$CACHE_DIR/tools
HELM_DIR=$TOOLS_DIR/helm-$HELM_VERSION
KUBECONFORM_DIR=$TOOLS_DIR/kubeconform-$KUBECONFORM_VERSION
PSACHECK_SRC=$E2E_DIR/tools/psacheck
# The psacheck build is keyed by its sources (go.mod pins the pod-security-admission version).
psacheck_key() { cat "$PSACHECK_SRC/go.mod" "$PSACHECK_SRC/go.sum" "$PSACHECK_SRC/main.go" | sha256sum | cut -c1-16; }
PSACHECK_DIR=$TOOLS_DIR/psacheck-$(psacheck_key)
PROMOP_DIR=$TOOLS_DIR/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION

tool_stamp() { printf '%s %s %s\n' "$1" "$2" "$(uname -sm)"; }

all_cached() {
  stamp_is_current "$HELM_DIR" "$(tool_stamp helm "$HELM_VERSION")" helm &&
    stamp_is_current "$KUBECONFORM_DIR" "$(tool_stamp kubeconform "$KUBECONFORM_VERSION")" kubeconform &&
    stamp_is_current "$PSACHECK_DIR" "$(tool_stamp psacheck "$(psacheck_key)")" psacheck &&
    [ -f "$PROMOP_DIR/.stamp" ]
}

case "${1:-}" in
  --dir)
    printf 'HELM=%s\nKUBECONFORM=%s\nPSACHECK=%s\nPROMETHEUS_OPERATOR_CRDS=%s\n' \
      "$HELM_DIR/helm" "$KUBECONFORM_DIR/kubeconform" "$PSACHECK_DIR/psacheck" "$PROMOP_DIR"
    exit 0
    ;;
  --check)
    if all_cached; then
      log "chart-check tools cached under $TOOLS_DIR"
      exit 0
    fi
    log "chart-check tools missing under $TOOLS_DIR"
    exit 1
    ;;
esac

# One build at a time: CI may start this in the background and chart-check.sh call it again;
# the second waits here, then finds everything cached.
mkdir -p "$TOOLS_DIR"
exec 9>"$TOOLS_DIR/.lock"
flock 9
if all_cached; then
  log "chart-check tools cached under $TOOLS_DIR"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "Go is not installed; it builds helm, kubeconform and psacheck"

# go_install DIR STAMP PACKAGE@VERSION: `go install` into DIR, then write the stamp.
go_install() {
  local dir=$1 stamp=$2 package=$3 started=$SECONDS
  log "$package … building"
  rm -rf "$dir" && mkdir -p "$dir"
  GOBIN=$dir CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "$package"
  printf '%s' "$stamp" >"$dir/.stamp"
  log "$package … built in $((SECONDS - started)) s"
}

stamp_is_current "$HELM_DIR" "$(tool_stamp helm "$HELM_VERSION")" helm ||
  go_install "$HELM_DIR" "$(tool_stamp helm "$HELM_VERSION")" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
stamp_is_current "$KUBECONFORM_DIR" "$(tool_stamp kubeconform "$KUBECONFORM_VERSION")" kubeconform ||
  go_install "$KUBECONFORM_DIR" "$(tool_stamp kubeconform "$KUBECONFORM_VERSION")" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"

if ! stamp_is_current "$PSACHECK_DIR" "$(tool_stamp psacheck "$(psacheck_key)")" psacheck; then
  started=$SECONDS
  log "psacheck (k8s.io/pod-security-admission) … building"
  rm -rf "$PSACHECK_DIR" && mkdir -p "$PSACHECK_DIR"
  (cd "$PSACHECK_SRC" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags='-s -w' -o "$PSACHECK_DIR/psacheck" .)
  printf '%s' "$(tool_stamp psacheck "$(psacheck_key)")" >"$PSACHECK_DIR/.stamp"
  log "psacheck … built in $((SECONDS - started)) s"
fi

if [ ! -f "$PROMOP_DIR/.stamp" ]; then
  log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs … fetching the Go module"
  module_dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$module_dir/example/prometheus-operator-crd" ] || die "no CRDs in $module_dir"
  rm -rf "$PROMOP_DIR" && mkdir -p "$PROMOP_DIR"
  cp "$module_dir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$PROMOP_DIR/"
  chmod -R u+w "$PROMOP_DIR"
  printf '%s' "$PROMETHEUS_OPERATOR_VERSION" >"$PROMOP_DIR/.stamp"
fi
log "chart-check tools ready under $TOOLS_DIR"
