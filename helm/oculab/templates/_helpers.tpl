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

{{/*
The pod security context. OpenShift mode drops the fixed UID/GID/fsGroup so that the
SecurityContextConstraints (restricted-v2) assign the namespace's own range.
*/}}
{{- define "oculab.podSecurityContext" -}}
{{- $ctx := deepCopy .Values.podSecurityContext -}}
{{- if .Values.openshift.enabled -}}
{{- $ctx = omit $ctx "runAsUser" "runAsGroup" "fsGroup" "fsGroupChangePolicy" -}}
{{- end -}}
{{ toYaml $ctx }}
{{- end -}}

{{/* The pod security context of the bundled PostgreSQL and Redis (the official
images' user 999, or the SCC's range on OpenShift). */}}
{{- define "oculab.bundledPodSecurityContext" -}}
runAsNonRoot: true
{{- if not .Values.openshift.enabled }}
runAsUser: 999
runAsGroup: 999
fsGroup: 999
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
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
Computes, once per render, what several templates need and caches it on .Release
(every template calls this first; Helm renders templates in no fixed order):

- secretData: the values given in values.yaml that the chart's own Secret holds
  (never a generated one, so that two renders of the same values are identical);
- generate: the keys the generated Secret (<fullname>-generated) must hold, with their
  lengths; a pre-install/pre-upgrade hook Job creates the missing ones, once;
- pools: workers.pools merged over workers.defaults, with their GPU resources.
*/}}
{{- define "oculab.init" -}}
{{- if not (hasKey .Release "oculabState") -}}
{{- $root := . -}}
{{- $data := dict -}}
{{- $generate := dict -}}
{{- if not .Values.auth.secretKey.existingSecret -}}
{{- $_ := set $generate "secret-key" 64 -}}
{{- end -}}
{{- $db := .Values.database -}}
{{- if $db.url -}}
{{- $_ := set $data "database-url" $db.url -}}
{{- else if $db.password -}}
{{- $_ := set $data "database-password" $db.password -}}
{{- else if and .Values.postgresql.enabled (not $db.existingSecret) -}}
{{- $_ := set $generate "database-password" 32 -}}
{{- end -}}
{{- $br := .Values.broker -}}
{{- if $br.url -}}
{{- $_ := set $data "broker-url" $br.url -}}
{{- else if $br.password -}}
{{- $_ := set $data "broker-password" $br.password -}}
{{- else if and .Values.redis.enabled (not $br.existingSecret) -}}
{{- $_ := set $generate "broker-password" 32 -}}
{{- end -}}
{{- $oidc := .Values.auth.oidc -}}
{{- if and $oidc.enabled $oidc.clientSecret (not $oidc.existingSecret) -}}
{{- $_ := set $data "oidc-client-secret" $oidc.clientSecret -}}
{{- end -}}
{{- $kedaObjects := or (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") .Values.forceCRDs.keda -}}
{{- $kedaJobs := or (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledJob") .Values.forceCRDs.keda -}}
{{- $pools := list -}}
{{- range $entry := .Values.workers.pools -}}
{{- $pool := deepCopy $root.Values.workers.defaults -}}
{{- include "oculab.mergeInto" (dict "dst" $pool "src" (deepCopy $entry)) -}}
{{- /* GPU resources: whole GPUs, time-sliced replicas (gpu.shared) and MIG instances. */ -}}
{{- $limits := (($pool.resources | default dict).limits | default dict) -}}
{{- $gpuCount := 0 -}}
{{- $gpuResources := list -}}
{{- $migCount := 0 -}}
{{- range $key := keys $limits | sortAlpha -}}
{{- if or (eq $key "nvidia.com/gpu") (eq $key "nvidia.com/gpu.shared") (hasPrefix "nvidia.com/mig-" $key) -}}
{{- $n := int (get $limits $key | default 0) -}}
{{- if gt $n 0 -}}
{{- $gpuCount = add $gpuCount $n -}}
{{- $gpuResources = append $gpuResources $key -}}
{{- if hasPrefix "nvidia.com/mig-" $key }}{{ $migCount = add $migCount $n }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $pool "gpuCount" $gpuCount -}}
{{- $_ := set $pool "gpuResources" $gpuResources -}}
{{- $_ := set $pool "migCount" $migCount -}}
{{- if not (kindIs "bool" $pool.gpu) -}}
{{- $_ := set $pool "gpu" (gt $gpuCount 0) -}}
{{- end -}}
{{- /* Slots follow the GPU resource count: one job per GPU, MIG instance or time slice. */ -}}
{{- if and $pool.gpu (not $pool.slots) (gt $gpuCount 0) -}}
{{- $_ := set $pool "slots" $gpuCount -}}
{{- end -}}
{{- if not $pool.queues -}}
{{- $_ := set $pool "queues" (list $pool.name) -}}
{{- end -}}
{{- $_ := set $pool "resourceName" (printf "%s-worker-%s" (include "oculab.fullname" $root) ($pool.name | toString)) -}}
{{- $_ := set $pool "scaledJob" (eq (toString $pool.scaling.mode) "scaledJob") -}}
{{- /* KEDA objects are rendered only when the cluster serves their API (or forced). */ -}}
{{- $_ := set $pool "scaledObject" (and $pool.keda.enabled (not $pool.scaledJob) $kedaObjects) -}}
{{- $_ := set $pool "kedaMissing" (or (and $pool.keda.enabled (not $pool.scaledJob) (not $kedaObjects)) (and $pool.scaledJob (not $kedaJobs))) -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- $_ := set .Release "oculabState" (dict "secretData" $data "generate" $generate "pools" $pools) -}}
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

{{/* The Secret the hook Job creates once with generated values (session key, bundled
database and Redis passwords); not managed by Helm, so it survives uninstall. */}}
{{- define "oculab.generatedSecretName" -}}
{{- printf "%s-generated" (include "oculab.fullname" .) -}}
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
{{- else if $db.password -}}
name: {{ include "oculab.secretName" . }}
key: database-password
{{- else if .Values.postgresql.enabled -}}
name: {{ include "oculab.generatedSecretName" . }}
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
{{- else if $br.password -}}
name: {{ include "oculab.secretName" . }}
key: broker-password
{{- else if .Values.redis.enabled -}}
name: {{ include "oculab.generatedSecretName" . }}
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
OCULAB_REDIS_URL without a password, plus OCULAB_REDIS_PASSWORD from the Secret: the
server puts it into the URL percent-encoded, so any password works as stored.
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
{{- with include "oculab.broker.passwordRef" . | fromYaml }}
- name: OCULAB_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
- name: OCULAB_REDIS_URL
  value: {{ printf "%s://%s:%d/%d" $scheme (include "oculab.broker.host" .) (int $br.port) (int $br.db) | quote }}
{{- end }}
{{- end -}}

{{/* The session/state signing key. */}}
{{- define "oculab.env.secretKey" -}}
- name: OCULAB_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (include "oculab.generatedSecretName" .) .Values.auth.secretKey.existingSecret }}
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

{{/* ---- CA bundle and extra env/volumes ------------------------------------------- */}}

{{- define "oculab.caBundleFile" -}}
/etc/oculab/ca/ca-bundle.pem
{{- end -}}

{{/* The CA bundle's env: Oculab's own setting (httpx/authlib, psycopg, redis) and the
variables Python's ssl module, requests and libpq read. */}}
{{- define "oculab.env.caBundle" -}}
{{- $ca := .Values.caBundle -}}
{{- if or $ca.configMap $ca.secret }}
{{- $file := include "oculab.caBundleFile" . }}
- name: OCULAB_CA_BUNDLE
  value: {{ $file }}
- name: SSL_CERT_FILE
  value: {{ $file }}
- name: REQUESTS_CA_BUNDLE
  value: {{ $file }}
- name: PGSSLROOTCERT
  value: {{ $file }}
{{- end }}
{{- end -}}

{{/* Volumes every Oculab pod adds: the CA bundle, global extraVolumes, then the
component's. Call with (dict "root" $ "extra" list). */}}
{{- define "oculab.extraVolumes" -}}
{{- $ca := .root.Values.caBundle -}}
{{- if $ca.configMap }}
- name: ca-bundle
  configMap:
    name: {{ $ca.configMap }}
    items:
      - {key: {{ $ca.key | quote }}, path: ca-bundle.pem}
{{- else if $ca.secret }}
- name: ca-bundle
  secret:
    secretName: {{ $ca.secret }}
    items:
      - {key: {{ $ca.key | quote }}, path: ca-bundle.pem}
{{- end }}
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Mounts every Oculab container adds (init containers too): the CA bundle, read-only,
global extraVolumeMounts, then the component's. Call with (dict "root" $ "extra" list). */}}
{{- define "oculab.extraVolumeMounts" -}}
{{- $ca := .root.Values.caBundle -}}
{{- if or $ca.configMap $ca.secret }}
- name: ca-bundle
  mountPath: /etc/oculab/ca
  readOnly: true
{{- end }}
{{- with .root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The environment every Oculab process shares: the ConfigMaps of non-secret settings
(envFrom) plus these Secret references, the CA bundle and the global extraEnv. HOME and
the caches point at /tmp because the root filesystem is read-only.
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
{{- include "oculab.env.caBundle" . }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ConfigMaps a component reads: the common one and its own. The API also reads
the scheduler's (per-user limits, shown by the admin queue) without restarting when
it changes. Call with (dict "root" $ "component" "api"). */}}
{{- define "oculab.envFrom" -}}
{{- $base := printf "%s-config" (include "oculab.fullname" .root) -}}
- configMapRef:
    name: {{ $base }}
- configMapRef:
    name: {{ $base }}-{{ .component }}
{{- if eq .component "api" }}
- configMapRef:
    name: {{ $base }}-scheduler
{{- end }}
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
{{- include "oculab.env.caBundle" . }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The init container that holds a pod until the schema is usable by this release's code
(`oculab migrate --check --wait`): at its latest revision, or newer when every newer
migration is marked backward-compatible (a rollback after an upgrade that migrated).
*/}}
{{- define "oculab.waitForSchema" -}}
- name: wait-for-schema
  image: {{ include "oculab.image" (dict "root" . "image" "api") }}
  imagePullPolicy: {{ include "oculab.imagePullPolicy" (dict "root" . "image" "api") }}
  command: ["oculab"]
  args: ["migrate", "--check", "--wait", {{ .Values.migrations.waitTimeoutSeconds | int | quote }}]
  env:
    {{- include "oculab.env.migrate" . | nindent 4 }}
  securityContext:
    {{- include "oculab.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.waitResources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- with include "oculab.extraVolumeMounts" (dict "root" .) | trim }}{{ . | nindent 4 }}{{- end }}
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
Checksum annotations: a change to the settings this component reads (the common
ConfigMap and its own), to the chart's Secret, or (when the cluster can be read) to a
referenced existing Secret restarts its pods; a change only another component reads
does not. Call with (dict "root" $ "component" "api").
*/}}
{{- define "oculab.checksums" -}}
{{- $root := .root -}}
{{- include "oculab.init" $root -}}
{{- $ext := list -}}
{{- range $name := list $root.Values.database.existingSecret $root.Values.broker.existingSecret $root.Values.auth.secretKey.existingSecret $root.Values.auth.oidc.existingSecret -}}
{{- if $name -}}
{{- $s := lookup "v1" "Secret" $root.Release.Namespace $name | default dict -}}
{{- $ext = append $ext (get $s "data" | default dict) -}}
{{- end -}}
{{- end -}}
checksum/config: {{ list (include "oculab.config.common" $root) (include (printf "oculab.config.%s" .component) $root) | toJson | sha256sum }}
checksum/secret: {{ list $root.Release.oculabState.secretData $ext | toJson | sha256sum }}
{{- end -}}

{{/* Pod annotations: checksums, the global extras, then the component's own.
Call with (dict "root" $ "component" "api" "extra" map). */}}
{{- define "oculab.podAnnotations" -}}
{{ include "oculab.checksums" . }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pins a pod that mounts the data volume to singleNode.hostname: merged into the
component's nodeSelector. Call with (dict "root" $ "nodeSelector" map). */}}
{{- define "oculab.dataNodeSelector" -}}
{{- $sel := deepCopy (.nodeSelector | default dict) -}}
{{- if .root.Values.singleNode.enabled -}}
{{- $_ := set $sel "kubernetes.io/hostname" .root.Values.singleNode.hostname -}}
{{- end -}}
{{- with $sel }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* ---- monitoring ------------------------------------------------------------------- */}}

{{/* "true" when the cluster serves the Prometheus operator's kind (or forceCRDs says
to assume it): a ServiceMonitor without its CRD would fail the whole install.
Call with (dict "root" $ "kind" "ServiceMonitor"). */}}
{{- define "oculab.hasMonitoringCRD" -}}
{{- if or .root.Values.forceCRDs.monitoring (.root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) -}}true{{- end -}}
{{- end -}}

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

{{/* An egress rule to the given peers (none: any address) on the given TCP ports.
Call with (dict "to" list "ports" list). */}}
{{- define "oculab.egressTo" -}}
{{- if .to -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
{{- else -}}
- ports:
{{- end }}
    {{- range .ports }}
    - {port: {{ . | int }}, protocol: TCP}
    {{- end }}
{{- end -}}

{{/* DNS: the configured ports (53, and 5353 where OpenShift's DNS listens) over UDP
and TCP, to the configured peers (none: any). */}}
{{- define "oculab.egressDns" -}}
{{- $dns := .Values.networkPolicy.egress.dns -}}
{{- if $dns.to -}}
- to:
    {{- toYaml $dns.to | nindent 4 }}
  ports:
{{- else -}}
- ports:
{{- end }}
    {{- range $dns.ports }}
    - {port: {{ . | int }}, protocol: UDP}
    - {port: {{ . | int }}, protocol: TCP}
    {{- end }}
{{- end -}}

{{/*
Egress every Oculab pod needs: DNS, PostgreSQL and Redis (the bundled pods, or the
configured port to networkPolicy.egress.<service>.to: CIDRs or namespace selectors
where the external server lives; empty: any address).
Call with (dict "root" $ "oidc" bool "api" bool).
*/}}
{{- define "oculab.egressRules" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $eg := $v.networkPolicy.egress -}}
{{ include "oculab.egressDns" $root }}
{{- if $v.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "oculab.selectorLabels" (dict "root" $root "component" "postgresql") | nindent 10 }}
  ports:
    - {port: 5432, protocol: TCP}
{{- else }}
{{ include "oculab.egressTo" (dict "to" $eg.database.to "ports" (list $v.database.port)) }}
{{- end }}
{{- if $v.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "oculab.selectorLabels" (dict "root" $root "component" "redis") | nindent 10 }}
  ports:
    - {port: 6379, protocol: TCP}
{{- else }}
{{ include "oculab.egressTo" (dict "to" $eg.broker.to "ports" (list $v.broker.port)) }}
{{- end }}
{{- if and .oidc $v.auth.oidc.enabled }}
{{- $u := urlParse (default $v.auth.oidc.issuer $v.auth.oidc.discoveryUrl) }}
{{- $port := 443 }}
{{- if contains ":" $u.host }}{{ $port = int (last (splitList ":" $u.host)) }}{{ else if eq $u.scheme "http" }}{{ $port = 80 }}{{ end }}
# The IdP (discovery, token endpoint, JWKS).
{{ include "oculab.egressTo" (dict "to" $eg.identityProvider.to "ports" (list $port)) }}
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
