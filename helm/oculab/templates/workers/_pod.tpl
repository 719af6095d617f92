{{/*
A worker pool's pod template, shared by its Deployment and its KEDA ScaledJob.
Call with (dict "root" $ "pool" $pool).
*/}}
{{- define "oculab.worker.podTemplate" -}}
{{- $root := .root -}}
{{- $pool := .pool -}}
{{- $name := toString $pool.name -}}
metadata:
  labels:
    {{- include "oculab.podLabels" (dict "root" $root "component" "worker" "pool" $name "extra" $pool.podLabels) | nindent 4 }}
  annotations:
    # A running training job must not be evicted by the cluster autoscaler.
    cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
    {{- include "oculab.podAnnotations" (dict "root" $root "component" "worker" "extra" $pool.podAnnotations) | nindent 4 }}
spec:
  {{- include "oculab.podCommon" $root | nindent 2 }}
  {{- if $pool.scaledJob }}
  restartPolicy: Never
  {{- end }}
  # Longer than OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS: on SIGTERM running jobs
  # hand themselves back to the queue before the pod is killed.
  terminationGracePeriodSeconds: {{ $pool.terminationGracePeriodSeconds | int }}
  {{- with $pool.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $pool.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  initContainers:
    {{- include "oculab.waitForSchema" $root | nindent 4 }}
  containers:
    - name: worker
      image: {{ include "oculab.image" (dict "root" $root "image" "worker") }}
      imagePullPolicy: {{ include "oculab.imagePullPolicy" (dict "root" $root "image" "worker") }}
      command: ["oculab"]
      args:
        - worker
        {{- range $pool.queues }}
        - --pool
        - {{ . | toString | quote }}
        {{- end }}
        {{- if $pool.slots }}
        - --slots
        - {{ $pool.slots | int | quote }}
        {{- end }}
        - --metrics-port
        - {{ $pool.metricsPort | int | quote }}
        {{- if $pool.scaledJob }}
        # One job, then exit 0 (or after idling): KEDA starts a pod per job, and a
        # scale-down never stops a running training.
        - --max-jobs
        - "1"
        - --idle-exit
        - {{ $pool.scaling.idleExitSeconds | int | quote }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $pool.metricsPort | int }}
          protocol: TCP
      envFrom:
        {{- include "oculab.envFrom" (dict "root" $root "component" "worker") | nindent 8 }}
      env:
        {{- include "oculab.env" $root | nindent 8 }}
        {{- if not $pool.gpu }}
        # A CPU pool sees no GPU, even on a node whose default runtime is NVIDIA's.
        - name: NVIDIA_VISIBLE_DEVICES
          value: void
        {{- end }}
        {{- with $pool.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      readinessProbe:
        tcpSocket:
          port: metrics
        periodSeconds: 10
        failureThreshold: 3
      {{- if $pool.livenessProbe.enabled }}
      # /healthz answers 503 once the worker's own heartbeat is stale (a hung
      # process): the kubelet restarts it and its GPU is freed. A busy training
      # keeps heart-beating, so it is never killed for being slow.
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        initialDelaySeconds: {{ $pool.livenessProbe.initialDelaySeconds | int }}
        periodSeconds: {{ $pool.livenessProbe.periodSeconds | int }}
        timeoutSeconds: {{ $pool.livenessProbe.timeoutSeconds | int }}
        failureThreshold: {{ $pool.livenessProbe.failureThreshold | int }}
      {{- end }}
      resources:
        {{- toYaml $pool.resources | nindent 8 }}
      securityContext:
        {{- include "oculab.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "oculab.volumeMounts" $root | nindent 8 }}
        - name: dshm
          mountPath: /dev/shm
        {{- with include "oculab.extraVolumeMounts" (dict "root" $root "extra" $pool.extraVolumeMounts) | trim }}{{ . | nindent 8 }}{{- end }}
  volumes:
    {{- include "oculab.volumes" $root | nindent 4 }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $pool.shmSize | quote }}
    {{- with include "oculab.extraVolumes" (dict "root" $root "extra" $pool.extraVolumes) | trim }}{{ . | nindent 4 }}{{- end }}
  {{- with include "oculab.dataNodeSelector" (dict "root" $root "nodeSelector" $pool.nodeSelector) | trim }}{{ . | nindent 2 }}{{- end }}
  {{- with $pool.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $pool.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $pool.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
A pool's KEDA triggers (ScaledObject and ScaledJob). The bundled Redis is addressed by
its fully qualified name: KEDA's operator resolves names from its own namespace.
Call with (dict "root" $ "pool" $pool).
*/}}
{{- define "oculab.keda.triggers" -}}
{{- $root := .root -}}
{{- $k := .pool.keda -}}
{{- $queues := list -}}
{{- range .pool.queues }}{{ $queues = append $queues (toString .) }}{{ end -}}
{{- $address := printf "%s:%d" $root.Values.broker.host (int $root.Values.broker.port) -}}
{{- if $root.Values.redis.enabled -}}
{{- $address = printf "%s-redis.%s.svc.%s:6379" (include "oculab.fullname" $root) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- end -}}
{{- if $k.prometheus.enabled }}
- type: prometheus
  metadata:
    serverAddress: {{ $root.Values.keda.prometheus.serverAddress | quote }}
    query: {{ printf "sum(max by (pool, state) (oculab_jobs{%s,pool=~%q,state=~\"queued|running\"})) or vector(0)" (include "oculab.promSelector" $root) (join "|" $queues) | quote }}
    threshold: {{ $k.jobsPerReplica | int | quote }}
    activationThreshold: "0"
{{- end }}
{{- if $k.redisList.enabled }}
{{- range $queues }}
- type: redis
  metadata:
    address: {{ $address | quote }}
    listName: {{ printf "dramatiq:%s" . | quote }}
    listLength: {{ $k.redisList.listLength | int | quote }}
    databaseIndex: {{ $root.Values.broker.db | int | quote }}
    {{- if and $root.Values.broker.tls (not $root.Values.redis.enabled) }}
    enableTLS: "true"
    {{- end }}
  {{- if include "oculab.broker.passwordRef" $root }}
  authenticationRef:
    name: {{ include "oculab.fullname" $root }}-broker
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}
