{{/* The operator's pod template, shared by the Deployment (one replica) and the HA StatefulSet. */}}
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
        {{- if .Values.ha.enabled }}
        - --peering={{ include "modeldeploy.peeringName" . }}
        - --priority=$(MODELDEPLOY_PEERING_PRIORITY)
        {{- else }}
        - --standalone
        {{- end }}
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
        {{- if .Values.ha.enabled }}
        - name: MODELDEPLOY_PEERING
          value: {{ include "modeldeploy.peeringName" . | quote }}
        - name: MODELDEPLOY_PEERING_PRIORITY
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
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
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
