#!/usr/bin/env bash
# The chart and the engine objects checked with real tools (built by install-k8s-tools.sh):
#   1. helm lint --strict, for each values set below;
#   2. kubeconform -strict against Kubernetes' own OpenAPI-derived schemas for every release
#      from the chart's kubeVersion floor to the newest the kubernetes-validate package ships
#      (no -ignore-missing-schemas: a kind without a schema fails), plus schemas generated from
#      the CRDs (ours and the Prometheus Operator's) for custom resources; it validates the
#      chart's renders, its CRDs, examples/ and the engine objects the operator renders for
#      every example (e2e/scripts/render_engine_objects.py: the operator's own reconcile);
#   3. Pod Security Standards with the upstream k8s.io/pod-security-admission checks: the
#      chart's pods at "restricted"; every engine pod at "baseline" (the engine image's default
#      user is root) and those a template makes non-root at "restricted".
# Usage: chart-check.sh   (PYTHON=path/to/python overrides the repo's .venv interpreter)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROOT=$(cd "$E2E_DIR/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CHART=$ROOT/charts/kvscale
RELEASE_NAMESPACE=kvscale-system
MIN_K8S=1.28.0 # the chart's kubeVersion floor (Chart.yaml)

"$E2E_DIR/scripts/install-k8s-tools.sh"
eval "$("$E2E_DIR/scripts/install-k8s-tools.sh" --dir)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

k8s_schemas=$("$PYTHON" -c 'import kubernetes_validate, pathlib
print(pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema")')
mapfile -t versions < <(
  find "$k8s_schemas" -maxdepth 1 -name 'v1.*-local-strict' -printf '%f\n' |
    sed 's/^v\(.*\)-local-strict$/\1/' |
    { printf '%s\n' "$MIN_K8S"; cat; } | sort -uV | sed -n "/^${MIN_K8S//./\\.}\$/,\$p"
)
[ "${#versions[@]}" -gt 0 ] || die "no Kubernetes schemas under $k8s_schemas"
latest=${versions[-1]}
# kubernetes-validate's schemas point into their _definitions.json with a root-relative $ref
# (its own resolver maps it); kubeconform needs a real URL: cached rewritten copies.
kv_version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')
schema_dir=$CACHE_DIR/tools/k8s-schemas-kubernetes-validate-$kv_version
for version in "${versions[@]}"; do
  dir=$schema_dir/v$version-local-strict
  [ -f "$dir/.stamp" ] && continue
  rm -rf "$dir" && mkdir -p "$dir"
  for file in "$k8s_schemas/v$version-local-strict"/*.json; do
    sed "s#\"/api/_definitions.json#\"file://$dir/_definitions.json#g" "$file" >"$dir/${file##*/}"
  done
  touch "$dir/.stamp"
done
log "Kubernetes schemas: ${versions[*]} (kubernetes-validate $kv_version)"

# name|helm --set arguments
values_sets=(
  "default|"
  "namespaced|scope=namespace,watchNamespaces={team-a,team-b}"
  "single|replicaCount=1,leaderElection.enabled=false"
  "everything|prometheus.url=http://prometheus:9090,prometheusRule.enabled=true,dashboard.enabled=true,metrics.serviceMonitor.enabled=true,reconcile.applyMode=client-side"
)

log "helm lint --strict ($HELM_VERSION)"
for entry in "${values_sets[@]}"; do
  name=${entry%%|*} set=${entry#*|}
  "$HELM" lint --strict --quiet --kube-version "$latest" ${set:+--set "$set"} "$CHART" >"$work/lint-$name.log" ||
    { cat "$work/lint-$name.log" >&2; die "helm lint --strict failed for values set '$name'"; }
done

log "rendering the engine objects the operator applies for every example"
"$PYTHON" "$E2E_DIR/scripts/render_engine_objects.py" >"$work/engine-objects.yaml"

log "CRD schemas for kubeconform (kvscale + Prometheus Operator $PROMETHEUS_OPERATOR_VERSION)"
"$PYTHON" "$E2E_DIR/scripts/crd_schemas.py" "$work/crd-schemas" \
  "$ROOT"/crds/*.yaml "$PROMETHEUS_OPERATOR_CRDS"/monitoring.coreos.com_{podmonitors,servicemonitors,prometheusrules}.yaml

log "kubeconform -strict ($KUBECONFORM_VERSION)"
for version in "${versions[@]}"; do
  files=()
  for entry in "${values_sets[@]}"; do
    name=${entry%%|*} set=${entry#*|}
    out=$work/chart-$name-$version.yaml
    "$HELM" template kvscale "$CHART" --namespace "$RELEASE_NAMESPACE" --include-crds \
      --kube-version "$version" ${set:+--set "$set"} >"$out"
    files+=("$out")
  done
  "$KUBECONFORM" -strict -summary -kubernetes-version "$version" \
    -schema-location "$schema_dir/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$work/crd-schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "${files[@]}" "$ROOT"/examples/*.yaml "$work/engine-objects.yaml" ||
    die "kubeconform: objects invalid for Kubernetes $version"
done

log "Pod Security: the chart's pods at restricted"
cat "$work"/chart-*-"$latest".yaml | "$PSACHECK" -level restricted ||
  die "the chart's pods violate Pod Security 'restricted'"
log "Pod Security: every engine pod at baseline"
"$PSACHECK" -level baseline <"$work/engine-objects.yaml" ||
  die "the engine pods the operator renders violate Pod Security 'baseline'"
log "Pod Security: the engine pods a template makes non-root at restricted"
"$PYTHON" "$E2E_DIR/scripts/render_engine_objects.py" --non-root-only >"$work/engine-non-root.yaml"
"$PSACHECK" -level restricted <"$work/engine-non-root.yaml" ||
  die "an engine pod set to run as non-root violates Pod Security 'restricted'"
log "chart-check passed"
