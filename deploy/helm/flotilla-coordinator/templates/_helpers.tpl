{{/* Chart name, at most 63 characters. */}}
{{- define "flotilla-coordinator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters. */}}
{{- define "flotilla-coordinator.fullname" -}}
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

{{/* Selector labels: stable for the life of the release. */}}
{{- define "flotilla-coordinator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla-coordinator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "flotilla-coordinator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flotilla-coordinator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: coordinator
app.kubernetes.io/part-of: flotilla
{{- end }}

{{- define "flotilla-coordinator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flotilla-coordinator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flotilla-coordinator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the certificate and key (and the CA unless tls.caSecret is set). */}}
{{- define "flotilla-coordinator.tlsSecret" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "flotilla-coordinator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The clusters file, as `serve --clusters` reads it. */}}
{{- define "flotilla-coordinator.clustersFile" -}}
{{- $names := dict }}
{{- range .Values.clusters }}
{{- if hasKey $names .name }}
{{- fail (printf "clusters: %q is listed twice; each cluster name must be unique" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- end }}
{{- dict "clusters" .Values.clusters | toYaml }}
{{- end }}
