{{/*
The non-secret settings, split by the component that reads them, so that a change
restarts only the pods that use it (each pod's checksum/config covers the common map
and its own). One YAML map of OCULAB_* strings each.
*/}}

{{/* Read by every Oculab process. */}}
{{- define "oculab.config.common" -}}
{{- include "oculab.init" . -}}
{{- $c := .Values.config -}}
OCULAB_DATA_DIR: {{ .Values.storage.mountPath | quote }}
OCULAB_LOG_LEVEL: {{ $c.logLevel | quote }}
OCULAB_SEED_DEMO: "false"
OCULAB_POOLS: {{ include "oculab.poolNames" . | quote }}
OCULAB_CPU_POOLS: {{ include "oculab.cpuPoolNames" . | quote }}
OCULAB_HEARTBEAT_INTERVAL_SECONDS: {{ $c.heartbeatIntervalSeconds | toString | quote }}
OCULAB_HEARTBEAT_TIMEOUT_SECONDS: {{ $c.heartbeatTimeoutSeconds | toString | quote }}
OCULAB_GPU_JOB_TIME_LIMIT_HOURS: {{ $c.gpuJobTimeLimitHours | toString | quote }}
OCULAB_CPU_JOB_TIME_LIMIT_HOURS: {{ $c.cpuJobTimeLimitHours | toString | quote }}
OCULAB_MAX_UPLOAD_BYTES: {{ $c.maxUploadBytes | int64 | quote }}
OCULAB_MAX_IMPORT_BYTES: {{ $c.maxImportBytes | int64 | quote }}
OCULAB_MAX_MODEL_BYTES: {{ $c.maxModelBytes | int64 | quote }}
{{- range $key, $value := $c.extra }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Read by the API only: sign-in, the public URL, proxy headers, the metrics port. */}}
{{- define "oculab.config.api" -}}
{{- $oidc := .Values.auth.oidc -}}
OCULAB_FORWARDED_ALLOW_IPS: {{ include "oculab.forwardedAllowIps" . | quote }}
{{- with include "oculab.publicUrl" . }}
OCULAB_PUBLIC_URL: {{ . | quote }}
{{- end }}
OCULAB_LOCAL_ACCOUNTS: {{ .Values.auth.localAccounts | quote }}
OCULAB_METRICS_PORT: {{ .Values.api.metricsPort | int | quote }}
{{- if $oidc.enabled }}
{{- with $oidc.issuer }}
OCULAB_OIDC_ISSUER: {{ . | quote }}
{{- end }}
{{- with $oidc.discoveryUrl }}
OCULAB_OIDC_DISCOVERY_URL: {{ . | quote }}
{{- end }}
OCULAB_OIDC_CLIENT_ID: {{ $oidc.clientId | quote }}
OCULAB_OIDC_SCOPES: {{ $oidc.scopes | quote }}
OCULAB_OIDC_GROUPS_CLAIM: {{ $oidc.groupsClaim | quote }}
OCULAB_OIDC_USERNAME_CLAIM: {{ $oidc.usernameClaim | quote }}
{{- with $oidc.displayName }}
OCULAB_OIDC_DISPLAY_NAME: {{ . | quote }}
{{- end }}
OCULAB_OIDC_ADMIN_GROUPS: {{ $oidc.adminGroups | toJson | quote }}
OCULAB_OIDC_PROJECT_ROLES: {{ $oidc.projectRoles | toJson | quote }}
{{- with $oidc.jwtAudience }}
OCULAB_OIDC_JWT_AUDIENCE: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Read by the scheduler: the per-user limits it admits jobs by. Changing one
restarts only the scheduler (running jobs keep running). */}}
{{- define "oculab.config.scheduler" -}}
{{- $c := .Values.config -}}
OCULAB_GPU_JOBS_PER_USER: {{ $c.gpuJobsPerUser | int64 | quote }}
OCULAB_CPU_JOBS_PER_USER: {{ $c.cpuJobsPerUser | int64 | quote }}
{{- end -}}

{{/* Read by the workers. */}}
{{- define "oculab.config.worker" -}}
{{- $c := .Values.config -}}
OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS: {{ $c.workerShutdownTimeoutSeconds | toString | quote }}
{{- end -}}
