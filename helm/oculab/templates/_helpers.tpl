{{/* vim: set filetype=mustache: */}}

{{/* ---- names and labels ------------------------------------------------------ */}}

{{- define "oculab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; kept short enough for suffixed child names. */}}
{{- define "oculab.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "oculab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. Call with (dict "root" $ "component" "api" ["pool" "gpu"]). */}}
{{- define "oculab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oculab.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
oculab.io/pool: {{ . }}
{{- end }}
{{- end -}}

{{/* All labels of an object. Same arguments as oculab.selectorLabels. */}}
{{- define "oculab.labels" -}}
{{ include "oculab.selectorLabels" . }}
helm.sh/chart: {{ include "oculab.chart" .root }}
app.kubernetes.io/part-of: oculab
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* Pod labels: selector labels plus the global and per-component extras. */}}
{{- define "oculab.podLabels" -}}
{{ include "oculab.labels" . }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "oculab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oculab.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---- images ------------------------------------------------------------------ */}}

{{/*
An image reference. Call with (dict "root" $ "image" "api"). global.imageRegistry
replaces the image's registry; a digest wins over the tag; Oculab images default to
the chart's appVersion.
*/}}
{{- define "oculab.image" -}}
{{- $img := index .root.Values.images .image -}}
{{- $registry := default $img.registry .root.Values.global.imageRegistry -}}
{{- $ref := $img.repository -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $ref $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .root.Chart.AppVersion ($img.tag | toString)) -}}
{{- end -}}
{{- end -}}

{{- define "oculab.imagePullPolicy" -}}
{{- (index .root.Values.images .image).pullPolicy -}}
{{- end -}}

{{- define "oculab.imagePullSecrets" -}}
{{- $secrets := concat (.Values.global.imagePullSecrets | default list) -}}
{{- with $secrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ---- security ---------------------------------------------------------------- */}}

{{- define "oculab.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "oculab.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/*
The pod-level settings every Oculab pod shares: service account (no token: Oculab
never calls the Kubernetes API), pull secrets and the pod security context.
*/}}
{{- define "oculab.podCommon" -}}
serviceAccountName: {{ include "oculab.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- include "oculab.imagePullSecrets" . }}
securityContext:
  {{- include "oculab.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/* ---- resolved-once state: secrets and pools -------------------------------------- */}}

{{/*
Computes, once per render, the values the chart's own Secret holds and caches them on
.Release (every template calls this first; Helm renders templates in no fixed order).
Each value is: given in values, else kept from the Secret already in the cluster
(lookup; empty offline and in `helm template`), else generated. Secrets that come from
an existingSecret are never copied here.
*/}}
{{- define "oculab.init" -}}
{{- if not (hasKey .Release "oculabState") -}}
{{- $root := . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "oculab.fullname" .) | default dict -}}
{{- $old := get $existing "data" | default dict -}}
{{- $data := dict -}}
{{- if not .Values.auth.secretKey.existingSecret -}}
{{- $_ := set $data "secret-key" (include "oculab.keepOrGenerate" (dict "old" $old "key" "secret-key" "length" 64)) -}}
{{- end -}}
{{- $db := .Values.database -}}
{{- if $db.url -}}
{{- $_ := set $data "database-url" $db.url -}}
{{- else if $db.password -}}
{{- $_ := set $data "database-password" $db.password -}}
{{- else if and .Values.postgresql.enabled (not $db.existingSecret) -}}
{{- $_ := set $data "database-password" (include "oculab.keepOrGenerate" (dict "old" $old "key" "database-password" "length" 32)) -}}
{{- end -}}
{{- $br := .Values.broker -}}
{{- if $br.url -}}
{{- $_ := set $data "broker-url" $br.url -}}
{{- else if $br.password -}}
{{- $_ := set $data "broker-password" $br.password -}}
{{- else if and .Values.redis.enabled (not $br.existingSecret) -}}
{{- $_ := set $data "broker-password" (include "oculab.keepOrGenerate" (dict "old" $old "key" "broker-password" "length" 32)) -}}
{{- end -}}
{{- $oidc := .Values.auth.oidc -}}
{{- if and $oidc.enabled $oidc.clientSecret (not $oidc.existingSecret) -}}
{{- $_ := set $data "oidc-client-secret" $oidc.clientSecret -}}
{{- end -}}
{{- $pools := list -}}
{{- range $entry := .Values.workers.pools -}}
{{- $pool := deepCopy $root.Values.workers.defaults -}}
{{- include "oculab.mergeInto" (dict "dst" $pool "src" (deepCopy $entry)) -}}
{{- if not (kindIs "bool" $pool.gpu) -}}
{{- $limits := (($pool.resources | default dict).limits | default dict) -}}
{{- $_ := set $pool "gpu" (gt (int (get $limits "nvidia.com/gpu" | default 0)) 0) -}}
{{- end -}}
{{- if not $pool.queues -}}
{{- $_ := set $pool "queues" (list $pool.name) -}}
{{- end -}}
{{- $_ := set $pool "resourceName" (printf "%s-worker-%s" (include "oculab.fullname" $root) ($pool.name | toString)) -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- $_ := set .Release "oculabState" (dict "secretData" $data "pools" $pools) -}}
{{- end -}}
{{- end -}}

{{- define "oculab.keepOrGenerate" -}}
{{- $old := get .old .key -}}
{{- if $old -}}
{{- $old | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/* Recursive merge of .src into the map .dst: maps merge, everything else replaces. */}}
{{- define "oculab.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- include "oculab.mergeInto" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "oculab.secretName" -}}
{{- include "oculab.fullname" . -}}
{{- end -}}

{{/* The comma lists OCULAB_POOLS and OCULAB_CPU_POOLS, derived from workers.pools. */}}
{{- define "oculab.poolNames" -}}
{{- include "oculab.init" . -}}
{{- $names := list -}}
{{- range .Release.oculabState.pools }}{{ $names = append $names (toString .name) }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "oculab.cpuPoolNames" -}}
{{- include "oculab.init" . -}}
{{- $names := list -}}
{{- range .Release.oculabState.pools }}{{ if not .gpu }}{{ $names = append $names (toString .name) }}{{ end }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{/* ---- connections ----------------------------------------------------------------- */}}

{{- define "oculab.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s-postgresql" (include "oculab.fullname" .) -}}
{{- else -}}
{{- .Values.database.host -}}
{{- end -}}
{{- end -}}

{{/* Where the database password lives, as YAML {name, key}; empty when there is none. */}}
{{- define "oculab.database.passwordRef" -}}
{{- $db := .Values.database -}}
{{- if $db.existingSecret -}}
name: {{ $db.existingSecret }}
key: {{ $db.existingSecretPasswordKey }}
{{- else if or $db.password .Values.postgresql.enabled -}}
name: {{ include "oculab.secretName" . }}
key: database-password
{{- end -}}
{{- end -}}

{{- define "oculab.broker.host" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis" (include "oculab.fullname" .) -}}
{{- else -}}
{{- .Values.broker.host -}}
{{- end -}}
{{- end -}}

{{- define "oculab.broker.passwordRef" -}}
{{- $br := .Values.broker -}}
{{- if $br.existingSecret -}}
name: {{ $br.existingSecret }}
key: {{ $br.existingSecretPasswordKey }}
{{- else if or $br.password .Values.redis.enabled -}}
name: {{ include "oculab.secretName" . }}
key: broker-password
{{- end -}}
{{- end -}}

{{/*
OCULAB_DATABASE_URL. A full URL comes from a Secret key. Otherwise the URL is composed
in the container without the password: libpq (psycopg) reads PGPASSWORD from the
environment, so the password never has to be URL-encoded into the URL.
*/}}
{{- define "oculab.env.database" -}}
{{- $db := .Values.database -}}
{{- if and $db.existingSecret $db.existingSecretUrlKey }}
- name: OCULAB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.existingSecretUrlKey }}
{{- else if $db.url }}
- name: OCULAB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "oculab.secretName" . }}
      key: database-url
{{- else }}
- name: OCULAB_DATABASE_USER
  value: {{ $db.user | quote }}
{{- with include "oculab.database.passwordRef" . | fromYaml }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- $query := "" }}
{{- if $db.sslMode }}{{ $query = printf "?sslmode=%s" $db.sslMode }}{{ end }}
- name: OCULAB_DATABASE_URL
  value: {{ printf "postgresql://$(OCULAB_DATABASE_USER)@%s:%d/%s%s" (include "oculab.database.host" .) (int $db.port) $db.name $query | quote }}
{{- end }}
{{- end -}}

{{/*
OCULAB_REDIS_URL, composed with Kubernetes' dependent variable expansion $(VAR) from
the password Secret (a password with URL-reserved characters must be stored
percent-encoded, or give a whole URL through existingSecretUrlKey).
*/}}
{{- define "oculab.env.broker" -}}
{{- $br := .Values.broker -}}
{{- if and $br.existingSecret $br.existingSecretUrlKey }}
- name: OCULAB_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $br.existingSecret }}
      key: {{ $br.existingSecretUrlKey }}
{{- else if $br.url }}
- name: OCULAB_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "oculab.secretName" . }}
      key: broker-url
{{- else }}
{{- $scheme := ternary "rediss" "redis" (and (not .Values.redis.enabled) $br.tls) }}
{{- $auth := "" }}
{{- with include "oculab.broker.passwordRef" . | fromYaml }}
{{- $auth = ":$(OCULAB_REDIS_PASSWORD)@" }}
- name: OCULAB_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
- name: OCULAB_REDIS_URL
  value: {{ printf "%s://%s%s:%d/%d" $scheme $auth (include "oculab.broker.host" .) (int $br.port) (int $br.db) | quote }}
{{- end }}
{{- end -}}

{{/* The session/state signing key. */}}
{{- define "oculab.env.secretKey" -}}
- name: OCULAB_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (include "oculab.secretName" .) .Values.auth.secretKey.existingSecret }}
      key: {{ ternary .Values.auth.secretKey.existingSecretKey "secret-key" (not (empty .Values.auth.secretKey.existingSecret)) }}
{{- end -}}

{{- define "oculab.env.oidcSecret" -}}
{{- $oidc := .Values.auth.oidc -}}
{{- if and $oidc.enabled $oidc.existingSecret }}
- name: OCULAB_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $oidc.existingSecret }}
      key: {{ $oidc.existingSecretKey }}
{{- else if and $oidc.enabled $oidc.clientSecret }}
- name: OCULAB_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "oculab.secretName" . }}
      key: oidc-client-secret
{{- end }}
{{- end -}}

{{/*
The environment every Oculab process shares: the ConfigMap of non-secret settings
(envFrom) plus these Secret references. HOME and the caches point at /tmp because the
root filesystem is read-only.
*/}}
{{- define "oculab.env" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- include "oculab.env.database" . }}
{{- include "oculab.env.broker" . }}
{{ include "oculab.env.secretKey" . }}
{{- include "oculab.env.oidcSecret" . }}
{{- end -}}

{{- define "oculab.envFrom" -}}
- configMapRef:
    name: {{ include "oculab.fullname" . }}-config
{{- end -}}

{{/* Only what `oculab migrate` needs: the database. */}}
{{- define "oculab.env.migrate" -}}
- name: HOME
  value: /tmp
- name: OCULAB_DATA_DIR
  value: /tmp/oculab
{{- /* Server mode: a missing database URL fails instead of migrating a local SQLite. */}}
- name: OCULAB_MODE
  value: server
{{- include "oculab.env.database" . }}
{{ include "oculab.env.secretKey" . }}
{{- end -}}

{{/*
The init container that holds a pod until the migration Job has brought the schema to
the latest revision (`oculab migrate --wait`).
*/}}
{{- define "oculab.waitForSchema" -}}
- name: wait-for-schema
  image: {{ include "oculab.image" (dict "root" . "image" "api") }}
  imagePullPolicy: {{ include "oculab.imagePullPolicy" (dict "root" . "image" "api") }}
  command: ["oculab"]
  args: ["migrate", "--wait", {{ .Values.migrations.waitTimeoutSeconds | int | quote }}]
  env:
    {{- include "oculab.env.migrate" . | nindent 4 }}
  securityContext:
    {{- include "oculab.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 64Mi}
    limits: {memory: 256Mi}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* ---- storage ----------------------------------------------------------------------- */}}

{{- define "oculab.storage.claimName" -}}
{{- default (printf "%s-data" (include "oculab.fullname" .)) .Values.storage.existingClaim -}}
{{- end -}}

{{- define "oculab.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "oculab.storage.claimName" . }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "oculab.volumeMounts" -}}
- name: data
  mountPath: {{ .Values.storage.mountPath }}
  {{- with .Values.storage.subPath }}
  subPath: {{ . }}
  {{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* ---- checksums ---------------------------------------------------------------------- */}}

{{/*
Checksum annotations: a change to the settings, to the chart's Secret, or (when the
cluster can be read) to a referenced existing Secret restarts the pods.
*/}}
{{- define "oculab.checksums" -}}
{{- include "oculab.init" . -}}
{{- $ext := list -}}
{{- range $name := list .Values.database.existingSecret .Values.broker.existingSecret .Values.auth.secretKey.existingSecret .Values.auth.oidc.existingSecret -}}
{{- if $name -}}
{{- $s := lookup "v1" "Secret" $.Release.Namespace $name | default dict -}}
{{- $ext = append $ext (get $s "data" | default dict) -}}
{{- end -}}
{{- end -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ list .Release.oculabState.secretData $ext | toJson | sha256sum }}
{{- end -}}

{{/* Pod annotations: checksums, the global extras, then the component's own. */}}
{{- define "oculab.podAnnotations" -}}
{{ include "oculab.checksums" .root }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---- monitoring ------------------------------------------------------------------- */}}

{{/* Label matchers for this release's API series (every API replica reports the same
job counts, read from PostgreSQL: aggregate with max). */}}
{{- define "oculab.promSelector" -}}
{{- default (printf "namespace=%q,job=%q" .Release.Namespace (printf "%s-api" (include "oculab.fullname" .))) .Values.keda.prometheus.selector -}}
{{- end -}}

{{- define "oculab.promWorkerSelector" -}}
{{- printf "namespace=%q,job=%q" .Release.Namespace (printf "%s-workers" (include "oculab.fullname" .)) -}}
{{- end -}}

{{/* ---- network policy ----------------------------------------------------------------- */}}

{{/* Any pod of this release. */}}
{{- define "oculab.releasePeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "oculab.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Egress every Oculab pod needs: DNS, PostgreSQL and Redis (the bundled pods, or any
address on the configured port: an external server's address is not known here).
Call with (dict "root" $ "oidc" bool "api" bool).
*/}}
{{- define "oculab.egressRules" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- if $v.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "oculab.selectorLabels" (dict "root" $root "component" "postgresql") | nindent 10 }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ $v.database.port | int }}, protocol: TCP}
{{- end }}
{{- if $v.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "oculab.selectorLabels" (dict "root" $root "component" "redis") | nindent 10 }}
  ports:
    - {port: 6379, protocol: TCP}
{{- else }}
- ports:
    - {port: {{ $v.broker.port | int }}, protocol: TCP}
{{- end }}
{{- if and .oidc $v.auth.oidc.enabled }}
{{- $u := urlParse (default $v.auth.oidc.issuer $v.auth.oidc.discoveryUrl) }}
{{- $port := 443 }}
{{- if contains ":" $u.host }}{{ $port = int (last (splitList ":" $u.host)) }}{{ else if eq $u.scheme "http" }}{{ $port = 80 }}{{ end }}
# The IdP (discovery, token endpoint, JWKS).
- ports:
    - {port: {{ $port }}, protocol: TCP}
{{- end }}
{{- if .api }}
- to:
    - podSelector:
        matchLabels:
          {{- include "oculab.selectorLabels" (dict "root" $root "component" "api") | nindent 10 }}
  ports:
    - {port: 8000, protocol: TCP}
{{- end }}
{{- with $v.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy for pods that serve nothing: no inbound traffic, only the egress
every Oculab pod needs. Call with (dict "root" $ "component" "scheduler" ["api" true]). */}}
{{- define "oculab.networkPolicy.egressOnly" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "oculab.fullname" .root }}-{{ .component }}
  labels:
    {{- include "oculab.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "oculab.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  egress:
    {{- include "oculab.egressRules" (dict "root" .root "api" .api) | nindent 4 }}
{{- end -}}
