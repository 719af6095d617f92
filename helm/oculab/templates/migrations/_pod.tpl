{{/* The migration Job's pod template; the Job's name hashes all of it. */}}
{{- define "oculab.migrations.podTemplate" -}}
{{- $m := .Values.migrations -}}
metadata:
  labels:
    {{- include "oculab.podLabels" (dict "root" . "component" "migrations") | nindent 4 }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- include "oculab.podCommon" . | nindent 2 }}
  restartPolicy: Never
  containers:
    - name: migrate
      image: {{ include "oculab.image" (dict "root" . "image" "api") }}
      imagePullPolicy: {{ include "oculab.imagePullPolicy" (dict "root" . "image" "api") }}
      command: ["oculab"]
      # Waits for the database to accept connections first (a bundled PostgreSQL
      # starts alongside), then migrates under an advisory lock: two runs never race.
      args: ["migrate", "--wait-db", {{ $m.waitForDatabaseSeconds | int | quote }}]
      env:
        {{- include "oculab.env.migrate" . | nindent 8 }}
        {{- with $m.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $m.resources | nindent 8 }}
      securityContext:
        {{- include "oculab.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- with include "oculab.extraVolumeMounts" (dict "root" . "extra" $m.extraVolumeMounts) | trim }}{{ . | nindent 8 }}{{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- with include "oculab.extraVolumes" (dict "root" . "extra" $m.extraVolumes) | trim }}{{ . | nindent 4 }}{{- end }}
{{- end -}}
