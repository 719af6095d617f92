{{/*
Configuration checks, all at once. Returns YAML {errors: [...], warnings: [...]}:
validate.yaml fails the render with every error listed; NOTES.txt prints the warnings
and the next steps.
*/}}
{{- define "oculab.validate" -}}
{{- include "oculab.init" . -}}
{{- $errors := list -}}
{{- $warnings := list -}}
{{- $v := .Values -}}
{{- $pools := .Release.oculabState.pools -}}

{{- /* database */ -}}
{{- $db := $v.database -}}
{{- $dbFromSecretUrl := and $db.existingSecret $db.existingSecretUrlKey -}}
{{- if and $db.existingSecretUrlKey (not $db.existingSecret) -}}
{{- $errors = append $errors "database.existingSecretUrlKey needs database.existingSecret (the Secret that holds the URL)" -}}
{{- end -}}
{{- if $v.postgresql.enabled -}}
{{- if or $db.url $db.host $db.existingSecretUrlKey -}}
{{- $errors = append $errors "postgresql.enabled runs a bundled database: leave database.url, database.host and database.existingSecretUrlKey empty (or turn postgresql.enabled off to use your own)" -}}
{{- end -}}
{{- $warnings = append $warnings "postgresql.enabled: the bundled PostgreSQL is a single instance without backups, for trials only; use an external PostgreSQL in production" -}}
{{- else if not (or $db.url $db.host $dbFromSecretUrl) -}}
{{- $errors = append $errors "no database: set database.host (with database.existingSecret for the password), database.url, or database.existingSecret + database.existingSecretUrlKey; or postgresql.enabled=true for a trial" -}}
{{- else if and $db.url $db.host -}}
{{- $errors = append $errors "database.url and database.host are both set: give one" -}}
{{- else if and $db.host (not (or $db.existingSecret $db.password)) -}}
{{- $warnings = append $warnings "database.host is set without a password (database.existingSecret): fine only if PostgreSQL trusts the pods or uses client certificates" -}}
{{- end -}}

{{- /* broker */ -}}
{{- $br := $v.broker -}}
{{- $brFromSecretUrl := and $br.existingSecret $br.existingSecretUrlKey -}}
{{- if and $br.existingSecretUrlKey (not $br.existingSecret) -}}
{{- $errors = append $errors "broker.existingSecretUrlKey needs broker.existingSecret (the Secret that holds the URL)" -}}
{{- end -}}
{{- if $v.redis.enabled -}}
{{- if or $br.url $br.host $br.existingSecretUrlKey -}}
{{- $errors = append $errors "redis.enabled runs a bundled Redis: leave broker.url, broker.host and broker.existingSecretUrlKey empty (or turn redis.enabled off to use your own)" -}}
{{- end -}}
{{- $warnings = append $warnings "redis.enabled: the bundled Redis is a single instance, for trials; PostgreSQL stays the source of truth, so losing it only delays jobs" -}}
{{- else if not (or $br.url $br.host $brFromSecretUrl) -}}
{{- $errors = append $errors "no Redis: set broker.host (with broker.existingSecret for the password), broker.url, or broker.existingSecret + broker.existingSecretUrlKey; or redis.enabled=true for a trial" -}}
{{- else if and $br.url $br.host -}}
{{- $errors = append $errors "broker.url and broker.host are both set: give one" -}}
{{- end -}}

{{- /* auth */ -}}
{{- $oidc := $v.auth.oidc -}}
{{- if $oidc.enabled -}}
{{- if not (or $oidc.issuer $oidc.discoveryUrl) -}}
{{- $errors = append $errors "auth.oidc.enabled needs auth.oidc.issuer (e.g. https://keycloak.lab.example/realms/lab)" -}}
{{- end -}}
{{- if not $oidc.clientId -}}
{{- $errors = append $errors "auth.oidc.enabled needs auth.oidc.clientId (the client registered at the IdP)" -}}
{{- end -}}
{{- if and $oidc.clientSecret $oidc.existingSecret -}}
{{- $errors = append $errors "auth.oidc.clientSecret and auth.oidc.existingSecret are both set: give one (prefer existingSecret)" -}}
{{- end -}}
{{- else if not $v.auth.localAccounts -}}
{{- $errors = append $errors "auth.localAccounts is false and auth.oidc.enabled is false: nobody could log in" -}}
{{- end -}}

{{- /* ingress and public URL */ -}}
{{- if $v.ingress.enabled -}}
{{- if not $v.ingress.host -}}
{{- $errors = append $errors "ingress.enabled needs ingress.host (e.g. oculab.lab.example)" -}}
{{- end -}}
{{- if and $v.ingress.tls.enabled (not $v.ingress.tls.secretName) -}}
{{- $errors = append $errors "ingress.tls.enabled needs ingress.tls.secretName (an existing TLS Secret, or the one cert-manager should create)" -}}
{{- end -}}
{{- end -}}
{{- $publicUrl := include "oculab.publicUrl" . -}}
{{- if and $v.publicUrl (not (regexMatch "^https?://[^/]+" $v.publicUrl)) -}}
{{- $errors = append $errors (printf "publicUrl %q must start with http:// or https://" $v.publicUrl) -}}
{{- end -}}
{{- if and $oidc.enabled (not (hasPrefix "https://" $publicUrl)) -}}
{{- $warnings = append $warnings "auth.oidc.enabled without an https public URL (ingress.tls.enabled or publicUrl): most IdPs refuse http redirect URIs and session cookies are not marked Secure" -}}
{{- end -}}
{{- if and (eq $v.forwardedAllowIps "*") (not (include "oculab.onlyIngressReachesApi" .)) -}}
{{- $warnings = append $warnings "forwardedAllowIps is \"*\" while the API is reachable by more than the ingress controller (networkPolicy disabled, networkPolicy.apiIngressFrom empty or a non-ClusterIP service): any client can forge X-Forwarded-For/Proto; list the ingress controller's addresses instead" -}}
{{- else if and (eq $v.forwardedAllowIps "auto") (not (include "oculab.onlyIngressReachesApi" .)) -}}
{{- $warnings = append $warnings "forwardedAllowIps is auto but the NetworkPolicy does not limit the API to the ingress controller, so the API trusts no X-Forwarded-For: the audit log and the rate limits see the controller's address for every client; set forwardedAllowIps to the controller's addresses (its pod CIDR)" -}}
{{- end -}}

{{- /* settings given as raw OCULAB_* variables */ -}}
{{- $managed := list "OCULAB_MODE" "OCULAB_DATA_DIR" "OCULAB_DATABASE_URL" "OCULAB_REDIS_URL" "OCULAB_SECRET_KEY" "OCULAB_PUBLIC_URL" "OCULAB_FORWARDED_ALLOW_IPS" "OCULAB_POOLS" "OCULAB_CPU_POOLS" "OCULAB_OIDC_CLIENT_SECRET" "OCULAB_ADMIN_PASSWORD" "OCULAB_CA_BUNDLE" "OCULAB_METRICS_PORT" "OCULAB_GPU_JOBS_PER_USER" "OCULAB_CPU_JOBS_PER_USER" "OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS" "OCULAB_LOCAL_ACCOUNTS" -}}
{{- range $key, $_ := $v.config.extra -}}
{{- if has $key $managed -}}
{{- $errors = append $errors (printf "config.extra.%s is set by the chart (or must come from a Secret); use the chart's own values" $key) -}}
{{- else if regexMatch "(SECRET|PASSWORD|TOKEN)" $key -}}
{{- $errors = append $errors (printf "config.extra.%s looks like a secret: secrets must not go into the ConfigMap" $key) -}}
{{- end -}}
{{- end -}}

{{- /* worker pools */ -}}
{{- $names := list -}}
{{- $cpuPools := 0 -}}
{{- range $pool := $pools -}}
{{- $name := toString $pool.name -}}
{{- if has $name $names -}}
{{- $errors = append $errors (printf "workers.pools: the pool name %q is used twice (each pool is one Dramatiq queue and one Deployment)" $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- $gpus := int $pool.gpuCount -}}
{{- if $pool.gpu -}}
{{- if eq $gpus 0 -}}
{{- $warnings = append $warnings (printf "workers.pools[%s] is a GPU pool without a GPU limit (nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-*): its pods get no GPU from the device plugin" $name) -}}
{{- end -}}
{{- if gt (int $pool.migCount) 1 -}}
{{- $errors = append $errors (printf "workers.pools[%s] requests %d MIG instances per pod: CUDA lets a process use one MIG instance, so give each pod exactly one and scale the replicas instead" $name (int $pool.migCount)) -}}
{{- end -}}
{{- if and (or $pool.keda.enabled $pool.scaledJob) (eq (int $pool.keda.minReplicas) 0) -}}
{{- $warnings = append $warnings (printf "workers.pools[%s] may scale to zero: predict requests answer 503 until a worker has started (OCULAB_PREDICT_QUEUE_SECONDS)" $name) -}}
{{- end -}}
{{- else -}}
{{- $cpuPools = add1 $cpuPools -}}
{{- if gt $gpus 0 -}}
{{- $errors = append $errors (printf "workers.pools[%s] requests %s but has gpu: false: set gpu: true (it would otherwise be listed in OCULAB_CPU_POOLS)" $name (join ", " $pool.gpuResources)) -}}
{{- end -}}
{{- end -}}
{{- if le (int $pool.terminationGracePeriodSeconds) (int $v.config.workerShutdownTimeoutSeconds) -}}
{{- $errors = append $errors (printf "workers.pools[%s].terminationGracePeriodSeconds (%d) must be greater than config.workerShutdownTimeoutSeconds (%d): running jobs would be killed before they hand themselves back" $name (int $pool.terminationGracePeriodSeconds) (int $v.config.workerShutdownTimeoutSeconds)) -}}
{{- end -}}
{{- if and $pool.scaledJob $pool.kedaMissing -}}
{{- $errors = append $errors (printf "workers.pools[%s].scaling.mode is scaledJob but the cluster serves no keda.sh/v1alpha1 ScaledJob: install KEDA first, or set forceCRDs.keda=true when rendering without cluster access (helm template without --api-versions)" $name) -}}
{{- else if $pool.kedaMissing -}}
{{- $warnings = append $warnings (printf "workers.pools[%s].keda.enabled but the cluster serves no keda.sh/v1alpha1 ScaledObject: no autoscaling, the pool runs %d replica(s); install KEDA, or set forceCRDs.keda=true" $name (int $pool.replicas)) -}}
{{- end -}}
{{- if or $pool.keda.enabled $pool.scaledJob -}}
{{- if and $pool.keda.prometheus.enabled (not $v.keda.prometheus.serverAddress) -}}
{{- $errors = append $errors (printf "workers.pools[%s].keda.prometheus needs keda.prometheus.serverAddress (the Prometheus that scrapes the API)" $name) -}}
{{- end -}}
{{- if and $pool.keda.redisList.enabled (not $v.redis.enabled) (not $br.host) -}}
{{- $errors = append $errors (printf "workers.pools[%s].keda.redisList needs broker.host (KEDA connects to Redis itself) or redis.enabled" $name) -}}
{{- end -}}
{{- if not (or $pool.keda.prometheus.enabled $pool.keda.redisList.enabled) -}}
{{- $errors = append $errors (printf "workers.pools[%s].keda.enabled needs a trigger: keda.prometheus or keda.redisList" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $pool := $pools -}}
{{- range $q := $pool.queues -}}
{{- if not (has (toString $q) $names) -}}
{{- $errors = append $errors (printf "workers.pools[%s].queues names %q, which is not a pool" (toString $pool.name) (toString $q)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $cpuPools 0 -}}
{{- $errors = append $errors "workers.pools needs at least one CPU pool (gpu: false): imports, exports and model checks run there" -}}
{{- end -}}

{{- /* storage: pods on different nodes cannot share a ReadWriteOnce volume */ -}}
{{- $mode := $v.storage.accessMode -}}
{{- if $v.storage.existingClaim -}}
{{- $pvc := lookup "v1" "PersistentVolumeClaim" .Release.Namespace $v.storage.existingClaim | default dict -}}
{{- with (get $pvc "spec" | default dict).accessModes -}}
{{- if has "ReadWriteMany" . -}}{{- $mode = "ReadWriteMany" -}}{{- else -}}{{- $mode = first . -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- /* A single-node trial: RWO works when every pod that mounts it runs on one node. */ -}}
{{- $pinned := list -}}
{{- $single := $v.singleNode -}}
{{- if $single.enabled -}}
{{- if not $single.hostname -}}
{{- $errors = append $errors "singleNode.enabled needs singleNode.hostname (the node's kubernetes.io/hostname label: kubectl get nodes -L kubernetes.io/hostname)" -}}
{{- end -}}
{{- $pinned = append $pinned $single.hostname -}}
{{- else -}}
{{- $pinned = append $pinned (get ($v.api.nodeSelector | default dict) "kubernetes.io/hostname" | default "") -}}
{{- range $pool := $pools -}}
{{- $pinned = append $pinned (get ($pool.nodeSelector | default dict) "kubernetes.io/hostname" | default "") -}}
{{- end -}}
{{- end -}}
{{- $oneNode := and (first $pinned) (eq (len (uniq $pinned)) 1) (eq $mode "ReadWriteOnce") -}}
{{- if and (ne $mode "ReadWriteMany") (not $oneNode) -}}
{{- $users := list -}}
{{- $apiPods := int $v.api.replicas -}}
{{- if $v.api.autoscaling.enabled -}}{{- $apiPods = int $v.api.autoscaling.maxReplicas -}}{{- end -}}
{{- if gt $apiPods 0 -}}{{- $users = append $users (printf "api (%d replicas)" $apiPods) -}}{{- end -}}
{{- range $pool := $pools -}}
{{- if or (gt (int $pool.replicas) 0) $pool.keda.enabled $pool.scaledJob -}}
{{- $users = append $users (printf "workers %s" (toString $pool.name)) -}}
{{- end -}}
{{- end -}}
{{- if or (gt (len $users) 1) (gt $apiPods 1) -}}
{{- $errors = append $errors (printf "storage: the claim %s is %s but would be shared by %s; pods on different nodes cannot share it: use a ReadWriteMany storage class (NFS, CephFS, ...) via storage.storageClass, or a ReadWriteMany storage.existingClaim; on a single-node cluster (k3s, kind) set singleNode.enabled and singleNode.hostname to pin them to one node" (include "oculab.storage.claimName" .) $mode (join ", " $users)) -}}
{{- end -}}
{{- end -}}
{{- if and (not $v.storage.existingClaim) (not $v.storage.storageClass) (eq $mode "ReadWriteMany") -}}
{{- $warnings = append $warnings "storage.storageClass is empty: the cluster's default storage class must support ReadWriteMany" -}}
{{- end -}}

{{- /* secrets: without the generator hook, nothing may need a generated value */ -}}
{{- if not $v.generatedSecrets.enabled -}}
{{- range $key := keys .Release.oculabState.generate | sortAlpha -}}
{{- if eq $key "secret-key" -}}
{{- $errors = append $errors "generatedSecrets.enabled is false: set auth.secretKey.existingSecret (a Secret with a random key of at least 32 characters)" -}}
{{- else if eq $key "database-password" -}}
{{- $errors = append $errors "generatedSecrets.enabled is false: the bundled PostgreSQL needs database.existingSecret (its password)" -}}
{{- else if eq $key "broker-password" -}}
{{- $errors = append $errors "generatedSecrets.enabled is false: the bundled Redis needs broker.existingSecret (its password)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.caBundle.configMap $v.caBundle.secret -}}
{{- $errors = append $errors "caBundle.configMap and caBundle.secret are both set: give one" -}}
{{- end -}}
{{- range $kind, $on := dict "ServiceMonitor" $v.monitoring.serviceMonitor.enabled "PrometheusRule" $v.monitoring.prometheusRule.enabled -}}
{{- if and $on (not (include "oculab.hasMonitoringCRD" (dict "root" $ "kind" $kind))) -}}
{{- $warnings = append $warnings (printf "monitoring: the cluster serves no monitoring.coreos.com/v1 %s, so none was rendered: install the Prometheus operator's CRDs, or set forceCRDs.monitoring=true" $kind) -}}
{{- end -}}
{{- end -}}
{{- if $db.password -}}
{{- $warnings = append $warnings "database.password is a plain value in your values file: prefer database.existingSecret" -}}
{{- end -}}
{{- if $br.password -}}
{{- $warnings = append $warnings "broker.password is a plain value in your values file: prefer broker.existingSecret" -}}
{{- end -}}
{{- if $oidc.clientSecret -}}
{{- $warnings = append $warnings "auth.oidc.clientSecret is a plain value in your values file: prefer auth.oidc.existingSecret" -}}
{{- end -}}
{{- if and $v.api.autoscaling.enabled (lt (int $v.api.autoscaling.maxReplicas) (int $v.api.autoscaling.minReplicas)) -}}
{{- $errors = append $errors "api.autoscaling.maxReplicas must be at least api.autoscaling.minReplicas" -}}
{{- end -}}
{{- dict "errors" $errors "warnings" $warnings | toYaml -}}
{{- end -}}

{{/* "true" when nothing but the ingress controller (and metrics scrapers) can
connect to the API pods: the NetworkPolicy is on, names who may, and the Service is
ClusterIP. */}}
{{- define "oculab.onlyIngressReachesApi" -}}
{{- $np := .Values.networkPolicy -}}
{{- if and $np.enabled $np.apiIngressFrom (eq .Values.api.service.type "ClusterIP") -}}true{{- end -}}
{{- end -}}

{{/* OCULAB_FORWARDED_ALLOW_IPS: "auto" trusts whoever connects only while that can
be nothing but the ingress controller; otherwise no proxy. Any other value as given. */}}
{{- define "oculab.forwardedAllowIps" -}}
{{- if ne (toString .Values.forwardedAllowIps) "auto" -}}
{{- .Values.forwardedAllowIps -}}
{{- else if include "oculab.onlyIngressReachesApi" . -}}
*
{{- end -}}
{{- end -}}

{{/* The public URL the chart sets (OCULAB_PUBLIC_URL); may be empty. */}}
{{- define "oculab.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- trimSuffix "/" .Values.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- end -}}
{{- end -}}
