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

{{- define "modeldeploy.leaseName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.ha.leaseName -}}
{{- end -}}

{{/*
The rules the operator needs in every namespace it watches. One block, used by both the
ClusterRole (cluster-wide mode) and each Role (namespaced mode), so the two modes cannot drift.
*/}}
{{- define "modeldeploy.rbac.namespacedRules" -}}
# Exactly the requests the operator makes (tests/integration/chart/test_rbac_matches_usage.py
# compares these rules with the API server's audit log of real rollouts).
# The operator reads everything below from watch-fed caches (operator/modeldeploy/kube/cache.py):
# each kind is listed once and watched, selected by the modeldeploy.io/name label, and written
# only when the cached object differs from the desired one.
# The custom resource: listed and watched; read again after a conflicting status write; its
# status replaced in one write guarded by resourceVersion. It never writes the object itself.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch]
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [update]
# One Deployment per revision: created, its labels and replicas patched, deleted (with a UID
# precondition) once the revision is neither stable, previous nor aborted.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
# The Services traffic goes through: created, patched back when they drift.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# One immutable ConfigMap per revision's config: created, deleted with its revision; and the
# case sets of evaluation steps (the user's ConfigMaps), read (get) when an evaluation runs.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, delete]
# Pod readiness of each track, and relabelling a promoted track's pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# The gateway-api traffic router creates the named HTTPRoute if missing and sets its weights.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, watch, create, patch]
# Events explaining each decision (core/v1, a new one each time; Kopf's own posting is off).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- with concat .Values.rbac.analysisSecretNames .Values.rbac.notificationSecretNames | uniq }}
# Analysis provider credentials and webhook URLs (spec.notifications): these Secrets only, read only.
- apiGroups: [""]
  resources: [secrets]
  resourceNames:
    {{- toYaml . | nindent 4 }}
  verbs: [get]
{{- end }}
{{- end -}}

{{/*
Cluster-scoped rules, only in cluster-wide mode: Kopf watches CRDs to notice resources appearing.
(Kopf lists namespaces only when it watches some of them: the namespaced mode, which grants no
cluster-scoped rules; there Kopf is refused both, says so once, and uses the namespaces it was given.)
*/}}
{{- define "modeldeploy.rbac.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end -}}

{{/*
HA mode's leader election (operator/modeldeploy/kube/lease.py), in the release namespace only:
every replica reads the Lease, its holder renews it with a replace (`update`), and a replica that
finds it missing creates it. Kubernetes cannot limit `create` by resourceNames (the name is in the
body, not the URL), so `create` has a rule of its own and `get`/`update` reach this one Lease only.
*/}}
{{- define "modeldeploy.rbac.leaseRules" -}}
# Read by every replica, renewed (replaced) by its holder: this Lease only.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "modeldeploy.leaseName" . | quote }}]
  verbs: [get, update]
# Created when missing; Kubernetes cannot limit `create` by resourceNames.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
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
