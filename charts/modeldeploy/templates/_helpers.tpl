{{/* Names, labels and the shared RBAC rules of the modeldeploy chart. */}}

{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldeploy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "modeldeploy.peeringName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.ha.peeringName -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it watches. One block, used by both the
ClusterRole (cluster-wide mode) and each Role (namespaced mode), so the two modes cannot drift.
*/}}
{{- define "modeldeploy.rbac.namespacedRules" -}}
# The custom resource: read it, write its status. `patch` on the object is for Kopf's own
# bookkeeping annotations only; the operator never writes the spec (no `update`).
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [get, patch, update]
# The objects a rollout owns: one Deployment per track (scaled through its scale
# subresource), Services, a ConfigMap per revision.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# Pod readiness of each track, and relabelling a promoted track's pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
# The gateway-api traffic router creates and weights HTTPRoutes.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, update, patch]
# Events explaining each decision (core/v1; Kopf's own event posting is turned off).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- with .Values.rbac.analysisSecretNames }}
# Analysis provider credentials: these Secrets only, read only.
- apiGroups: [""]
  resources: [secrets]
  resourceNames:
    {{- toYaml . | nindent 4 }}
  verbs: [get]
{{- end }}
{{- if and .Values.ha.enabled .Values.watchNamespaces }}
# Kopf peering in namespaced mode: one KopfPeering per watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* Cluster-scoped rules, only in cluster-wide mode: Kopf's discovery of namespaces and CRDs. */}}
{{- define "modeldeploy.rbac.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- if .Values.ha.enabled }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* The PodMonitor's namespace selector: explicit, else the watched namespaces, else any. */}}
{{- define "modeldeploy.podMonitor.namespaceSelector" -}}
{{- if .Values.monitoring.podMonitor.namespaceSelector -}}
{{- toYaml .Values.monitoring.podMonitor.namespaceSelector -}}
{{- else if .Values.watchNamespaces -}}
matchNames:
{{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}
