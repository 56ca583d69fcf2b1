{{- define "remediator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remediator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "remediator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remediator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "remediator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "remediator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "remediator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "remediator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* preStop sleep + drain budget + margin: SIGKILL never cuts the drain short. */}}
{{- define "remediator.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdown.preStopSeconds .Values.shutdown.timeoutSeconds .Values.shutdown.marginSeconds }}
{{- end }}

{{- define "remediator.scheme" -}}
{{- if .Values.secrets.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* The settings file: the chart's fixed paths over the user's `config`. */}}
{{- define "remediator.configYaml" -}}
{{- $fixed := dict
      "http" (dict "listen" (printf "0.0.0.0:%v" .Values.service.port))
      "journal" (dict "url" "sqlite:////var/lib/remediator/journal.db")
      "rules_path" "/etc/remediator/rules"
-}}
{{- $merged := mergeOverwrite (deepCopy .Values.config) $fixed -}}
{{- toYaml $merged }}
{{- end }}

{{/* Refusals that the schema cannot say as clearly. */}}
{{- define "remediator.validate" -}}
{{- if eq .Values.journal.type "postgres" }}
{{- fail "journal.type postgres: remediator has no PostgreSQL journal yet (the HA issue), so it cannot run more than one replica; use journal.type sqlite with replicas: 1" }}
{{- end }}
{{- if gt (int .Values.replicas) 1 }}
{{- fail "replicas > 1 needs a shared journal (journal.type postgres), which the daemon does not have yet; a SQLite journal runs exactly 1 replica" }}
{{- end }}
{{- if and (not .Values.secrets.webhookToken.secretName) (not .Values.secrets.principals.secretName) (not .Values.secrets.tls.clientCAKey) }}
{{- fail "no credential: set secrets.webhookToken.secretName or secrets.principals.secretName (the daemon refuses to listen beyond loopback without one)" }}
{{- end }}
{{- if hasKey .Values.config "journal" }}{{ if hasKey .Values.config.journal "url" }}
{{- fail "config.journal.url: the chart sets it (the journal volume at /var/lib/remediator)" }}
{{- end }}{{ end }}
{{- end }}
