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

{{/* "true" with the PostgreSQL journal (several replicas), "" with SQLite. */}}
{{- define "remediator.postgres" -}}
{{- if eq .Values.journal.type "postgres" }}true{{ end }}
{{- end }}

{{/* "true" when the Deployment runs more than one pod at a time. */}}
{{- define "remediator.replicated" -}}
{{- if and (include "remediator.postgres" .) (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* Where the DSN Secret's key is mounted (REMEDIATOR_JOURNAL__URL_FILE). */}}
{{- define "remediator.journalUrlFile" -}}
/etc/remediator/secrets/journal/{{ .Values.journal.postgres.existingSecret.key }}
{{- end }}

{{/* The settings file: the chart's fixed paths over the user's `config`. With
     PostgreSQL the URL is not in it: the daemon reads it from the Secret's file. */}}
{{- define "remediator.configYaml" -}}
{{- $fixed := dict
      "http" (dict "listen" (printf "0.0.0.0:%v" .Values.service.port))
      "rules_path" "/etc/remediator/rules"
-}}
{{- if not (include "remediator.postgres" .) }}
{{- $_ := set $fixed "journal" (dict "url" "sqlite:////var/lib/remediator/journal.db") }}
{{- end }}
{{- $merged := mergeOverwrite (deepCopy .Values.config) $fixed -}}
{{- toYaml $merged }}
{{- end }}

{{/* Refusals that the schema cannot say as clearly. */}}
{{- define "remediator.validate" -}}
{{- if include "remediator.postgres" . }}
{{- if not .Values.journal.postgres.existingSecret.secretName }}
{{- fail "journal.type postgres needs journal.postgres.existingSecret.secretName: the Secret holding the journal's DSN (postgresql://USER:PASSWORD@HOST:5432/DB), mounted as a file (docs/install.md, \"Several replicas on PostgreSQL\")" }}
{{- end }}
{{- else if gt (int .Values.replicas) 1 }}
{{- fail "replicas > 1 needs the shared PostgreSQL journal (journal.type postgres); a SQLite journal runs exactly 1 replica" }}
{{- end }}
{{- if and (not .Values.secrets.webhookToken.secretName) (not .Values.secrets.principals.secretName) (not .Values.secrets.tls.clientCAKey) }}
{{- fail "no credential: set secrets.webhookToken.secretName or secrets.principals.secretName (the daemon refuses to listen beyond loopback without one)" }}
{{- end }}
{{- if hasKey .Values.config "journal" }}
{{- if hasKey .Values.config.journal "url" }}
{{- fail "config.journal.url: the chart sets the journal's URL (journal.type sqlite: the volume at /var/lib/remediator; postgres: journal.postgres.existingSecret)" }}
{{- end }}
{{- if hasKey .Values.config.journal "url_file" }}
{{- fail "config.journal.url_file: the chart sets it (journal.postgres.existingSecret)" }}
{{- end }}
{{- end }}
{{- end }}
