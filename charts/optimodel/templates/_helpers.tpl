{{/* Names. The operator's objects are named after the release, so two releases never collide. */}}
{{- define "optimodel.fullname" -}}
{{- if contains "optimodel" .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-optimodel-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "optimodel.selectorLabels" -}}
app.kubernetes.io/name: optimodel-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "optimodel.labels" -}}
{{ include "optimodel.selectorLabels" . }}
app.kubernetes.io/part-of: optimodel
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "optimodel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "optimodel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag of one entry of .Values.image; the tag defaults to the chart's appVersion. */}}
{{- define "optimodel.image" -}}
{{- $image := index .root.Values.image .name -}}
{{- printf "%s:%s" $image.repository (toString (default .root.Chart.AppVersion $image.tag)) -}}
{{- end -}}

{{/* Namespaces the operator watches when rbac.scope is namespaced (default: the release's own). */}}
{{- define "optimodel.watchNamespaces" -}}
{{- if .Values.rbac.watchNamespaces -}}
{{- join "," .Values.rbac.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules on OptimizedModels and their children (a ClusterRole, or a Role per watched namespace). */}}
{{- define "optimodel.rules" }}
# OptimizedModels: watch them, write their status, keep kopf's bookkeeping annotations.
- apiGroups: [optimodel.io]
  resources: [optimizedmodels]
  verbs: [get, list, watch, patch]
- apiGroups: [optimodel.io]
  resources: [optimizedmodels/status]
  verbs: [get, patch]
- apiGroups: [optimodel.io]
  resources: [optimizedmodels/finalizers]
  verbs: [update]  # ownerReferences with blockOwnerDeletion on the children
# Their children: optimization Jobs, server Deployments (scaled at each rollout step) and Services.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]  # delete: a Job failed for a transient reason is rerun
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch]
# HTTPRoutes named in rollout.trafficRouting.gatewayAPI: read them and set their backend weights.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# Pods: read only, for the reason a Job's pod failed (its termination message).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
