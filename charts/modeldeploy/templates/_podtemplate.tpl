{{/* The operator Deployment's pod template. */}}
{{- define "modeldeploy.podTemplate" -}}
metadata:
  labels:
    {{- include "modeldeploy.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "modeldeploy.serviceAccountName" . }}
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: operator
      image: {{ include "modeldeploy.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --liveness=http://0.0.0.0:{{ .Values.health.port }}{{ .Values.health.path }}
        - --log-format={{ .Values.operator.logFormat }}
        {{- if .Values.operator.verbose }}
        - --verbose
        {{- end }}
        {{- if .Values.watchNamespaces }}
        {{- range .Values.watchNamespaces }}
        - --namespace={{ . }}
        {{- end }}
        {{- else }}
        - --all-namespaces
        {{- end }}
        # No Kopf peering in either mode: one replica, or a Lease held by one of several (env below).
        - --standalone
        {{- with .Values.operator.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: MODELDEPLOY_METRICS_PORT
          value: {{ .Values.metrics.port | quote }}
        - name: MODELDEPLOY_WATCH_TIMEOUT
          value: {{ .Values.operator.watchTimeoutSeconds | quote }}
        - name: MODELDEPLOY_RESYNC_SECONDS
          value: {{ .Values.operator.resyncSeconds | quote }}
        - name: MODELDEPLOY_WORKERS
          value: {{ .Values.operator.workers | quote }}
        - name: MODELDEPLOY_QUERY_CONCURRENCY
          value: {{ .Values.operator.queryConcurrency | quote }}
        # Always set: empty means no provider address at all, never "any address".
        - name: MODELDEPLOY_ALLOWED_PROVIDER_ADDRESSES
          value: {{ join "," .Values.analysis.allowedProviderAddresses | quote }}
        - name: MODELDEPLOY_POD_TEMPLATE_POLICY
          value: {{ .Values.podTemplatePolicy.mode | quote }}
        - name: MODELDEPLOY_ALLOWED_SERVICE_ACCOUNTS
          value: {{ join "," .Values.podTemplatePolicy.allowedServiceAccounts | quote }}
        {{- with .Values.notifications.defaultWebhook }}
        {{- if .secretName }}
        # The webhook of ModelDeployments without spec.notifications (README, Notifications).
        - name: MODELDEPLOY_DEFAULT_WEBHOOK_SECRET
          value: {{ printf "%s/%s/%s" $.Release.Namespace .secretName .secretKey | quote }}
        - name: MODELDEPLOY_DEFAULT_WEBHOOK_FORMAT
          value: {{ .format | quote }}
        - name: MODELDEPLOY_DEFAULT_WEBHOOK_EVENTS
          value: {{ join "," .events | quote }}
        {{- end }}
        {{- end }}
        {{- if .Values.ha.enabled }}
        # Leader election: the Lease (in POD_NAMESPACE) is held under this pod's name (POD_NAME).
        - name: MODELDEPLOY_LEADER_ELECTION
          value: "true"
        - name: MODELDEPLOY_LEASE_NAME
          value: {{ include "modeldeploy.leaseName" . | quote }}
        - name: MODELDEPLOY_LEASE_SECONDS
          value: {{ .Values.ha.leaseSeconds | quote }}
        {{- end }}
        {{- with .Values.operator.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: health
          containerPort: {{ .Values.health.port }}
          protocol: TCP
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: {{ .Values.health.path }}
          port: health
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: {{ .Values.health.path }}
          port: health
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    # The root filesystem is read-only; Python and Kopf get a small scratch /tmp.
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $affinity := deepCopy .Values.affinity }}
  {{- if and .Values.ha.enabled (not (hasKey $affinity "podAntiAffinity")) }}
  {{- $_ := set $affinity "podAntiAffinity" (include "modeldeploy.ha.podAntiAffinity" . | fromYaml) }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}


{{/* HA mode's default: replicas on different nodes where the scheduler can, so one node's loss
leaves a replica to take over the Lease. */}}
{{- define "modeldeploy.ha.podAntiAffinity" -}}
preferredDuringSchedulingIgnoredDuringExecution:
  - weight: 100
    podAffinityTerm:
      topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "modeldeploy.selectorLabels" . | nindent 10 }}
{{- end -}}
