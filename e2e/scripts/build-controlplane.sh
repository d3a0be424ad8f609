#!/usr/bin/env bash
# Builds the e2e control plane from Go modules and caches the binaries per version:
#   etcd (wrapper around etcdmain), kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubectl (wrappers requiring k8s.io/kubernetes with every staging module replaced by its
#   published v0.X.Y), and kwok + kwokctl (plain `go install`).
# Idempotent: a component whose binaries and version stamp are in the cache is skipped, so a
# warm run does not even need Go. Run it under `nice` on a shared machine.
#
# Usage: build-controlplane.sh [--check]
#   --check   exit 0 when every binary is cached, 1 otherwise (builds nothing)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TOTAL_STEPS=6
BUILD_START_S=$SECONDS

if [ "${1:-}" = "--check" ]; then
  if binaries_are_cached; then
    log "all control-plane binaries cached under $CACHE_DIR/bin"
    exit 0
  fi
  log "control-plane binaries missing under $CACHE_DIR/bin"
  exit 1
fi

# run_timed LABEL STEP DIR CMD...: runs CMD (an executable, not a function) in DIR and prints
# "[STEP/6] LABEL … built in N s (peak RSS …)".
run_timed() {
  local label=$1 step=$2 dir=$3 started=$SECONDS rss_file timer=()
  shift 3
  log "[$step/$TOTAL_STEPS] $label … building"
  rss_file=$(mktemp)
  if [ -x /usr/bin/time ]; then
    timer=(/usr/bin/time -f '%M' -o "$rss_file")
  fi
  (cd "$dir" && "${timer[@]}" "$@") || { rm -f "$rss_file"; die "$label build failed"; }
  local rss_kib
  rss_kib=$(tail -n 1 "$rss_file" 2>/dev/null || true)
  rm -f "$rss_file"
  if [ -n "$rss_kib" ]; then
    log "[$step/$TOTAL_STEPS] $label … built in $((SECONDS - started)) s (peak RSS $((rss_kib / 1024)) MiB)"
  else
    log "[$step/$TOTAL_STEPS] $label … built in $((SECONDS - started)) s"
  fi
}

require_go() {
  command -v go >/dev/null 2>&1 ||
    die "Go is not installed (need Go >= 1.26 for k8s $K8S_VERSION); install it or copy cached binaries into $CACHE_DIR/bin"
}

# new_scratch_module MOD_DIR: a temporary copy of the wrapper sources without go.mod/go.sum, so a
# failed regeneration (offline, proxy error) never leaves the committed files half-written.
new_scratch_module() {
  local scratch
  scratch=$(mktemp -d)
  cp -r "$1"/. "$scratch"/
  rm -f "$scratch/go.mod" "$scratch/go.sum"
  printf '%s\n' "$scratch"
}

# install_scratch_module SCRATCH MOD_DIR: move the generated go.mod/go.sum into place.
install_scratch_module() {
  cp "$1/go.mod" "$1/go.sum" "$2"/
  rm -rf "$1"
}

# Rewrites the k8s wrapper go.mod from the upstream go.mod of K8S_VERSION, fetched through the
# module proxy: every `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.Y.Z`.
generate_k8s_module() {
  local mod_dir=$CONTROLPLANE_DIR/k8s staging_version=v0.${K8S_VERSION#v1.} started=$SECONDS
  # Up to date when it pins this version and `go mod tidy -diff` has nothing to change (a new
  # wrapper main with new imports makes it regenerate).
  if grep -Eq "^[[:space:]]*(require[[:space:]]+)?k8s.io/kubernetes $K8S_VERSION([[:space:]]|$)" \
    "$mod_dir/go.mod" 2>/dev/null && (cd "$mod_dir" && go mod tidy -diff >/dev/null 2>&1); then
    return 0
  fi
  log "generating k8s wrapper go.mod for $K8S_VERSION (staging modules -> $staging_version)"
  local upstream_gomod go_directive modules module
  upstream_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$upstream_gomod" ] || die "could not fetch the go.mod of k8s.io/kubernetes@$K8S_VERSION"
  modules=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' \
    "$upstream_gomod" | sort -u)
  [ -n "$modules" ] || die "no staging replaces found in $upstream_gomod"
  go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_gomod")
  local scratch
  scratch=$(new_scratch_module "$mod_dir")
  (
    cd "$scratch"
    go mod init kvscale.invalid/e2e/controlplane/k8s 2>/dev/null
    go mod edit -go="$go_directive" -require="k8s.io/kubernetes@$K8S_VERSION"
    for module in $modules; do
      go mod edit -replace="$module=$module@$staging_version"
    done
    go mod tidy
  ) || { rm -rf "$scratch"; die "could not generate the k8s wrapper go.mod"; }
  install_scratch_module "$scratch" "$mod_dir"
  log "k8s wrapper go.mod: $(wc -w <<<"$modules") staging replaces, tidied in $((SECONDS - started)) s"
}

generate_etcd_module() {
  local mod_dir=$CONTROLPLANE_DIR/etcd
  if grep -Eq "go.etcd.io/etcd/server/v3 $ETCD_VERSION([[:space:]]|$)" "$mod_dir/go.mod" 2>/dev/null &&
    (cd "$mod_dir" && go mod tidy -diff >/dev/null 2>&1); then
    return 0
  fi
  log "generating etcd wrapper go.mod for $ETCD_VERSION"
  local scratch server_gomod
  server_gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$server_gomod" ] || die "could not fetch the go.mod of go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  scratch=$(new_scratch_module "$mod_dir")
  (
    cd "$scratch"
    go mod init kvscale.invalid/e2e/controlplane/etcd 2>/dev/null
    # the server's own Go floor, not the local toolchain's version that `go mod init` writes
    go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$server_gomod")"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
  ) || { rm -rf "$scratch"; die "could not generate the etcd wrapper go.mod"; }
  install_scratch_module "$scratch" "$mod_dir"
}

# go_build LABEL STEP MODULE_DIR PACKAGE OUTPUT LDFLAGS: static, trimmed build, written atomically.
go_build() {
  local label=$1 step=$2 mod_dir=$3 package=$4 output=$5 ldflags=$6
  run_timed "$label" "$step" "$mod_dir" env CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$output.tmp" "$package"
  mv -f "$output.tmp" "$output"
}

build_etcd() {
  if stamp_is_current "$ETCD_BIN_DIR" "$(etcd_stamp)" etcd; then
    log "[1/$TOTAL_STEPS] etcd $ETCD_VERSION … cached"
    return 0
  fi
  require_go
  generate_etcd_module
  mkdir -p "$ETCD_BIN_DIR"
  go_build "etcd $ETCD_VERSION" 1 "$CONTROLPLANE_DIR/etcd" . "$ETCD_BIN_DIR/etcd" "-s -w"
  etcd_stamp >"$ETCD_BIN_DIR/.stamp"
}

# k8s_ldflags: stamp the version where /version (component-base) and kubectl (client-go) read it.
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.} pkg ldflags="-s -w"
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  printf '%s\n' "$ldflags"
}

build_kubernetes() {
  if stamp_is_current "$K8S_BIN_DIR" "$(k8s_stamp)" "${K8S_BINARIES[@]}"; then
    log "[2-5/$TOTAL_STEPS] kubernetes $K8S_VERSION … cached"
    return 0
  fi
  require_go
  generate_k8s_module
  # Same version stamp: only the missing binaries are built (e.g. one added to K8S_BINARIES).
  local same_version=0
  if [ -f "$K8S_BIN_DIR/.stamp" ] && [ "$(cat "$K8S_BIN_DIR/.stamp")" = "$(k8s_stamp)" ]; then
    same_version=1
  fi
  mkdir -p "$K8S_BIN_DIR"
  rm -f "$K8S_BIN_DIR/.stamp"
  local step=2 name ldflags
  ldflags=$(k8s_ldflags)
  for name in "${K8S_BINARIES[@]}"; do
    if [ "$same_version" = 1 ] && [ -x "$K8S_BIN_DIR/$name" ]; then
      log "[$step/$TOTAL_STEPS] $name $K8S_VERSION … cached"
    else
      go_build "$name $K8S_VERSION" "$step" "$CONTROLPLANE_DIR/k8s" "./cmd/$name" \
        "$K8S_BIN_DIR/$name" "$ldflags"
    fi
    step=$((step + 1))
  done
  k8s_stamp >"$K8S_BIN_DIR/.stamp"
}

install_kwok() {
  if stamp_is_current "$KWOK_BIN_DIR" "$(kwok_stamp)" kwok kwokctl; then
    log "[6/$TOTAL_STEPS] kwok + kwokctl $KWOK_VERSION … cached"
    return 0
  fi
  require_go
  mkdir -p "$KWOK_BIN_DIR"
  # kwok's go.mod has no replace directives, so the documented `go install` works as is.
  run_timed "kwok + kwokctl $KWOK_VERSION" 6 "$KWOK_BIN_DIR" env GOBIN="$KWOK_BIN_DIR" CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  kwok_stamp >"$KWOK_BIN_DIR/.stamp"
}

# One build at a time per cache: a second caller (CI's early background build and the e2e
# fixture, or two sessions) waits for the first and then finds everything cached.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_DIR/.build.lock; waiting for it"
  flock 9
fi

log "control plane: k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION; cache $CACHE_DIR/bin"
build_etcd
build_kubernetes
install_kwok
log "control plane ready in $((SECONDS - BUILD_START_S)) s"
