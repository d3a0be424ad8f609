{{/* Name of the chart's objects. */}}
{{- define "kvscale.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kvscale.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kvscale.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kvscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kvscale.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces watched in namespace scope (default: the release namespace). */}}
{{- define "kvscale.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Rules on the workload objects (namespaced resources). Shared by the ClusterRole (cluster scope)
and the per-namespace Roles (namespace scope) so both modes grant exactly the same verbs.
Writes are server-side apply (PATCH); an apply that creates its object is authorized for
`create` as well. Client-side apply mode reads each object first (`get`). Nothing is deleted:
children carry an ownerReference with blockOwnerDeletion, which needs `update` on the owner's
`finalizers` subresource, and the garbage collector removes them.
*/}}
{{- define "kvscale.workloadRules" -}}
{{- $applied := list "create" "patch" -}}
{{- if eq .Values.reconcile.applyMode "client-side" }}{{ $applied = list "get" "create" "patch" }}{{ end -}}
- apiGroups: ["kvscale.dev"]
  resources: ["llmdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kvscale.dev"]
  resources: ["llmdeployments/status", "llmdeployments/scale"]
  verbs: ["patch"]
- apiGroups: ["kvscale.dev"]
  resources: ["llmdeployments/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: {{ toJson $applied }}
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: {{ toJson $applied }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.prometheus.podMonitorRBAC }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: {{ toJson $applied }}
{{- end }}
{{- end -}}
