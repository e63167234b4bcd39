{{/* Names ------------------------------------------------------------------------------------------- */}}
{{- define "phifleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phifleet.fullname" -}}
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

{{- define "phifleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "phifleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "phifleet.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "phifleet.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "phifleet.modelClaim" -}}
{{- default (printf "%s-models" (include "phifleet.fullname" .)) .Values.model.pvc.existingClaim -}}
{{- end -}}

{{- define "phifleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------------------ */}}
{{- define "phifleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phifleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "phifleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "phifleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* A values error that fails `helm lint` too: lint only logs `fail` and `required` (as [INFO]), but an include
of an undefined template is an error in every mode, and its message carries ours with the field's name. */}}
{{- define "phifleet.invalid" -}}
{{- include (printf "invalid values: %s" .) dict -}}
{{- end -}}

{{/* Checks a JSON schema cannot express (relations between fields), and the cluster's KubeRay CRDs. The CRD check
uses `fail`: `helm lint` cannot pass --api-versions, so there it is only logged and lint stays clean. */}}
{{- define "phifleet.validate" -}}
{{- if and .Values.kuberay.checkCRDs (not (.Capabilities.APIVersions.Has "ray.io/v1")) -}}
{{- fail "this cluster does not serve ray.io/v1: install the KubeRay operator v1.7 first (helm repo add kuberay https://ray-project.github.io/kuberay-helm && helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0), or for offline rendering pass --api-versions ray.io/v1 or set kuberay.checkCRDs=false" -}}
{{- end -}}
{{- range $group := list "gpuWorkers" "cpuWorkers" -}}
{{- $g := index $.Values $group -}}
{{- if lt (int $g.maxReplicas) (int $g.minReplicas) -}}
{{- include "phifleet.invalid" (printf "%s.maxReplicas (%v) must be >= %s.minReplicas (%v)" $group $g.maxReplicas $group $g.minReplicas) -}}
{{- end -}}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) -}}
{{- include "phifleet.invalid" (printf "%s.replicas (%v) must be between %s.minReplicas (%v) and maxReplicas (%v)" $group $g.replicas $group $g.minReplicas $g.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $a := dig "deployment" "autoscaling" dict (.Values.serve.config | default dict) -}}
{{- if lt (int (dig "max_replicas" 1 $a)) (int (dig "min_replicas" 1 $a)) -}}
{{- include "phifleet.invalid" (printf "serve.config.deployment.autoscaling.max_replicas (%v) must be >= serve.config.deployment.autoscaling.min_replicas (%v)" (dig "max_replicas" 1 $a) (dig "min_replicas" 1 $a)) -}}
{{- end -}}
{{- $p := .Values.job.config.pool | default dict -}}
{{- if lt (int (dig "max_replicas" 1 $p)) (int (dig "min_replicas" 1 $p)) -}}
{{- include "phifleet.invalid" (printf "job.config.pool.max_replicas (%v) must be >= job.config.pool.min_replicas (%v)" (dig "max_replicas" 1 $p) (dig "min_replicas" 1 $p)) -}}
{{- end -}}
{{- if and .Values.workloadIdentity.enabled (not .Values.workloadIdentity.clientId) -}}
{{- include "phifleet.invalid" "workloadIdentity.enabled needs workloadIdentity.clientId (the managed identity's client id)" -}}
{{- end -}}
{{- with .Values.model.fetch.source -}}
{{- if eq $.Values.model.volume "none" -}}
{{- include "phifleet.invalid" "model.fetch.source needs a model volume to fetch into: set model.volume (emptyDir, hostPath or pvc)" -}}
{{- end -}}
{{- $fetched := printf "%s/%s" (trimSuffix "/" $.Values.model.mountPath) $.Values.model.fetch.path -}}
{{- range $part := list "serve" "job" -}}
{{- $v := index $.Values $part -}}
{{- $model := dig "engine" "model" "" ($v.config | default dict) -}}
{{- if and $v.enabled (ne $model $fetched) -}}
{{- include "phifleet.invalid" (printf "%s.config.engine.model (%s) must be %s, where model.fetch puts the weights (model.mountPath/model.fetch.path)" $part $model $fetched) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* What KubeRay v1.7.0's controller refuses (ray-operator/controllers/ray/utils/validation.go), refused here first:
the operator would only mark the object ValidationFailed and never start it. */ -}}
{{- if and .Values.serve.enabled (eq .Values.serve.upgradeStrategy "NewClusterWithIncrementalUpgrade") -}}
{{- $o := .Values.serve.clusterUpgradeOptions -}}
{{- if not $o.gatewayClassName -}}
{{- include "phifleet.invalid" "serve.upgradeStrategy NewClusterWithIncrementalUpgrade needs serve.clusterUpgradeOptions.gatewayClassName (a Gateway API GatewayClass)" -}}
{{- end -}}
{{- if gt (int $o.stepSizePercent) (int $o.maxSurgePercent) -}}
{{- include "phifleet.invalid" (printf "serve.clusterUpgradeOptions.stepSizePercent (%v) must be <= serve.clusterUpgradeOptions.maxSurgePercent (%v)" $o.stepSizePercent $o.maxSurgePercent) -}}
{{- end -}}
{{- if not .Values.autoscaler.enabled -}}
{{- include "phifleet.invalid" "serve.upgradeStrategy NewClusterWithIncrementalUpgrade needs autoscaler.enabled (KubeRay requires Ray's autoscaler for it)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.job.enabled (not .Values.job.shutdownAfterJobFinishes) (gt (int .Values.job.ttlSecondsAfterFinished) 0) -}}
{{- include "phifleet.invalid" "job.ttlSecondsAfterFinished must be 0 when job.shutdownAfterJobFinishes is false (KubeRay refuses a TTL for a cluster it does not delete)" -}}
{{- end -}}
{{- if not (or .Values.gpuWorkers.enabled .Values.cpuWorkers.enabled) -}}
{{- include "phifleet.invalid" "no worker group: enable gpuWorkers.enabled or cpuWorkers.enabled (replicas never run on the head)" -}}
{{- end -}}
{{- if not (or .Values.serve.enabled .Values.job.enabled) -}}
{{- include "phifleet.invalid" "nothing to render: enable serve.enabled or job.enabled" -}}
{{- end -}}
{{- if and .Values.serve.enabled .Values.apiKeys.enabled (not .Values.apiKeys.existingSecret) (not .Values.apiKeys.keys) -}}
{{- include "phifleet.invalid" "apiKeys.enabled needs apiKeys.existingSecret (create it: kubectl create secret generic phifleet-api-keys --from-literal=api-keys=sk-$(openssl rand -hex 24)) or apiKeys.keys; a key the chart generated would change on every helm template" -}}
{{- end -}}
{{- if and (eq .Values.rayAuth.mode "token") (semverCompare "<2.52.0" .Values.rayVersion) -}}
{{- include "phifleet.invalid" (printf "rayAuth.mode token needs rayVersion >= 2.52.0 (got %s); KubeRay refuses it" .Values.rayVersion) -}}
{{- end -}}
{{- $ft := .Values.head.gcsFaultTolerance -}}
{{- if and $ft.enabled (not $ft.redisAddress) -}}
{{- include "phifleet.invalid" "head.gcsFaultTolerance.enabled needs head.gcsFaultTolerance.redisAddress" -}}
{{- end -}}
{{- if and $ft.enabled (hasKey .Values.head.rayStartParams "redis-password") -}}
{{- include "phifleet.invalid" "head.rayStartParams.redis-password cannot be set with head.gcsFaultTolerance: use head.gcsFaultTolerance.redisPasswordSecret" -}}
{{- end -}}
{{- if hasKey .Values.head.rayStartParams "redis-username" -}}
{{- include "phifleet.invalid" "head.rayStartParams.redis-username is refused by KubeRay (GcsFaultToleranceOptions.RedisUsername instead)" -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if has .name (list "RAY_REDIS_ADDRESS" "REDIS_PASSWORD" "REDIS_USERNAME") -}}
{{- include "phifleet.invalid" (printf "extraEnv %s is refused by KubeRay: use head.gcsFaultTolerance" .name) -}}
{{- end -}}
{{- end -}}
{{- if .Values.serve.enabled -}}
{{- $d := dig "deployment" dict (.Values.serve.config | default dict) -}}
{{- include "phifleet.checkCapacity" (dict "root" $ "what" "serve.config.deployment" "replicas" (dig "autoscaling" "max_replicas" 1 $d) "gpus" (dig "num_gpus" 0 $d) "cpus" (dig "num_cpus" 0.5 $d)) -}}
{{- end -}}
{{- if .Values.job.enabled -}}
{{- $p := .Values.job.config.pool | default dict -}}
{{- include "phifleet.checkCapacity" (dict "root" $ "what" "job.config.pool" "replicas" (dig "max_replicas" 1 $p) "gpus" (dig "num_gpus" 0 $p) "cpus" (dig "num_cpus" 0.5 $p)) -}}
{{- end -}}
{{- end -}}

{{/* Ray CPUs of one worker pod of a group: its `num-cpus` start parameter, else the CPU limit (what KubeRay passes). */}}
{{- define "phifleet.podCPUs" -}}
{{- $c := toString (dig "num-cpus" (dig "limits" "cpu" "0" .resources) .rayStartParams) -}}
{{- if hasSuffix "m" $c -}}{{- divf (trimSuffix "m" $c) 1000 -}}{{- else -}}{{- float64 $c -}}{{- end -}}
{{- end -}}

{{/* The most replicas the worker groups can hold at their maxReplicas: more and the autoscaler can never place them
(the Serve app or job waits forever for resources). A GPU replica fits on GPU workers only; a CPU replica on any. */}}
{{- define "phifleet.checkCapacity" -}}
{{- $v := .root.Values -}}
{{- $gpus := float64 .gpus -}}
{{- $cpus := float64 .cpus -}}
{{- $capacity := 0 -}}
{{- if $v.gpuWorkers.enabled -}}
{{- $perPod := floor (divf (include "phifleet.podCPUs" $v.gpuWorkers) $cpus) -}}
{{- if gt $gpus 0.0 -}}
{{- $perPod = min $perPod (floor (divf $v.gpuWorkers.gpus $gpus)) -}}
{{- end -}}
{{- $capacity = add $capacity (mul (int $perPod) (int $v.gpuWorkers.maxReplicas)) -}}
{{- end -}}
{{- if and $v.cpuWorkers.enabled (eq $gpus 0.0) -}}
{{- $perPod := floor (divf (include "phifleet.podCPUs" $v.cpuWorkers) $cpus) -}}
{{- $capacity = add $capacity (mul (int $perPod) (int $v.cpuWorkers.maxReplicas)) -}}
{{- end -}}
{{- if gt (int .replicas) (int $capacity) -}}
{{- include "phifleet.invalid" (printf "%s asks for up to %v replicas of %v GPU / %v CPU, but the enabled worker groups hold at most %v at their maxReplicas: raise gpuWorkers/cpuWorkers.maxReplicas or lower the replicas" .what .replicas .gpus .cpus $capacity) -}}
{{- end -}}
{{- end -}}

{{/* The serve app's args: ServeConfig from values, with the chart-mounted API key file as auth.api_keys_file. */}}
{{- define "phifleet.serveArgs" -}}
{{- $cfg := deepCopy .Values.serve.config -}}
{{- if .Values.apiKeys.enabled -}}
{{- $auth := get $cfg "auth" | default dict -}}
{{- $_ := set $auth "api_keys_file" (printf "/etc/phifleet/secrets/%s" .Values.apiKeys.secretKey) -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* Serve's HTTP proxy: on the chart's serve port, idle keep-alive connections closed after the config's
http.keep_alive_timeout_s (90 is HttpConfig's default; tests/serve/test_hostile_http.py checks they agree). */}}
{{- define "phifleet.serveConfigV2" -}}
{{- $http := get (.Values.serve.config | default dict) "http" | default dict -}}
http_options:
  host: 0.0.0.0
  port: {{ .Values.serve.port }}
  keep_alive_timeout_s: {{ get $http "keep_alive_timeout_s" | default 90 | int }}
applications:
  - name: phifleet
    import_path: phifleet.serve.app:build_app
    route_prefix: /
    args: {{ include "phifleet.serveArgs" . }}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------------------------------- */}}
{{- define "phifleet.env" -}}
{{- if .Values.workloadIdentity.enabled }}
{{- /* adlfs is anonymous unless told otherwise: with this it uses DefaultAzureCredential (workload identity) */}}
- name: AZURE_STORAGE_ANON
  value: "false"
{{- end }}
{{- range $k, $v := .Values.rayEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "phifleet.volumes" -}}
{{- $root := .root -}}
- name: tmp
  emptyDir: {}
{{- if ne $root.Values.model.volume "none" }}
- name: models
{{- if eq $root.Values.model.volume "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "phifleet.modelClaim" $root }}
{{- else if eq $root.Values.model.volume "hostPath" }}
  hostPath:
    path: {{ $root.Values.model.hostPath }}
    type: DirectoryOrCreate
{{- else }}
  emptyDir:
    sizeLimit: {{ $root.Values.model.emptyDirSizeLimit }}
{{- end }}
{{- end }}
{{- if and .serve $root.Values.apiKeys.enabled }}
- name: api-keys
  secret:
    secretName: {{ include "phifleet.apiKeysSecret" $root }}
    defaultMode: 0440
{{- end }}
{{- if .job }}
- name: job-config
  configMap:
    name: {{ include "phifleet.fullname" $root }}-job
{{- end }}
{{- end -}}

{{- define "phifleet.volumeMounts" -}}
{{- $root := .root -}}
- name: tmp
  mountPath: /tmp
{{- if ne $root.Values.model.volume "none" }}
- name: models
  mountPath: {{ $root.Values.model.mountPath }}
{{- end }}
{{- if and .serve $root.Values.apiKeys.enabled }}
- name: api-keys
  mountPath: /etc/phifleet/secrets
  readOnly: true
{{- end }}
{{- if .job }}
- name: job-config
  mountPath: /etc/phifleet/job
  readOnly: true
{{- end }}
{{- end -}}

{{/* The weights' fetch (cluster/weights.py): fail-closed, one line per failure, a marker only after every file is
checked. Values reach the script as environment variables, never spliced into shell text. Not on a RayService's
head, which loads no model (a RayJob's head runs the driver, which reads the model's config). */}}
{{- define "phifleet.initContainers" -}}
{{- $root := .root -}}
{{- if and (ne $root.Values.model.volume "none") $root.Values.model.fetch.source (or (not .head) .job) }}
initContainers:
  - name: fetch-model
    image: {{ include "phifleet.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: ["/bin/sh", "-c"]
    args:
      - |
        set -eu
        exec python -m phifleet.cluster.weights --source "$PHIFLEET_WEIGHTS_SOURCE" --revision "$PHIFLEET_WEIGHTS_REVISION" --dest "$PHIFLEET_WEIGHTS_DEST"
    env:
      - {name: PHIFLEET_WEIGHTS_SOURCE, value: {{ $root.Values.model.fetch.source | quote }}}
      - {name: PHIFLEET_WEIGHTS_REVISION, value: {{ $root.Values.model.fetch.revision | quote }}}
      - {name: PHIFLEET_WEIGHTS_DEST, value: {{ printf "%s/%s" (trimSuffix "/" $root.Values.model.mountPath) $root.Values.model.fetch.path | quote }}}
      {{- include "phifleet.env" $root | nindent 6 }}
      {{- /* The Hub token: a reference to the Secret only (the value never passes through Helm), and only here,
      after extraEnv so the Secret wins; the Secret's name/key (not its value) lets a refusal name it. */}}
      {{- $token := $root.Values.model.fetch.tokenSecret | default dict }}
      {{- if $token.name }}
      - name: HF_TOKEN
        valueFrom:
          secretKeyRef: {name: {{ $token.name | quote }}, key: {{ $token.key | default "token" | quote }}}
      - {name: PHIFLEET_WEIGHTS_TOKEN_SECRET, value: {{ printf "%s/%s" $token.name ($token.key | default "token") | quote }}}
      {{- end }}
    securityContext: {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      requests: {cpu: "1", memory: 2Gi}
      limits: {cpu: "2", memory: 4Gi}
    volumeMounts: {{- include "phifleet.volumeMounts" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* checkov skips for Ray pods, each with its reason (pod annotations, read by `checkov --framework kubernetes`). */}}
{{- define "phifleet.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_8=KubeRay injects the Ray liveness probe (raylet and GCS health) into Ray containers
checkov.io/skip2: CKV_K8S_9=KubeRay injects the Ray readiness probe (and Serve's proxy health on workers)
checkov.io/skip3: CKV_K8S_15=IfNotPresent for immutable release tags (GPU nodes re-pulling a 10 GB image); image.pullPolicy sets it
checkov.io/skip4: CKV_K8S_22=Ray writes session files, logs and compiled kernels under /tmp and the home directory
checkov.io/skip5: CKV_K8S_40=the Ray image's user is uid 1000 and owns its home directory; still non-root
checkov.io/skip6: CKV_K8S_43=pin a digest with image.tag (tag@sha256:...); the default is the chart's appVersion tag
{{- if .head }}
checkov.io/skip7: CKV_K8S_38=the head pod's autoscaler sidecar calls the Kubernetes API to scale worker groups
{{- end }}
{{- with .root }}
{{- if and .Values.model.fetch.source (.Values.model.fetch.tokenSecret | default dict).name }}
checkov.io/skip8: CKV_K8S_35=the Hub token is HF_TOKEN (huggingface_hub's input) in the fetch init container only, from a secretKeyRef
{{- end }}
{{- end }}
{{- end -}}

{{/* One pod template: .root (chart context), .component, .group (values of the group), .gpu, .serve, .job */}}
{{- define "phifleet.podTemplate" -}}
{{- $root := .root -}}
metadata:
  annotations:
    {{- include "phifleet.checkovSkips" . | nindent 4 }}
  labels:
    {{- include "phifleet.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    {{- if $root.Values.workloadIdentity.enabled }}
    azure.workload.identity/use: "true"
    {{- end }}
spec:
  serviceAccountName: {{ include "phifleet.serviceAccountName" $root }}
  automountServiceAccountToken: {{ or .head false }}
  securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "phifleet.initContainers" . | nindent 2 }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" (.head | default false) }}
      image: {{ include "phifleet.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext: {{- toYaml $root.Values.securityContext | nindent 8 }}
      env: {{- include "phifleet.env" $root | nindent 8 }}
      {{- if .head }}
      ports:
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: serve, containerPort: {{ $root.Values.serve.port }}}
        - {name: metrics, containerPort: 8080}
      {{- else }}
      ports:
        - {name: serve, containerPort: {{ $root.Values.serve.port }}}
        - {name: metrics, containerPort: 8080}
      {{- end }}
      resources:
        requests:
          {{- toYaml .group.resources.requests | nindent 10 }}
          {{- if .gpu }}
          {{ $root.Values.gpuWorkers.gpuResource }}: {{ $root.Values.gpuWorkers.gpus }}
          {{- end }}
        limits:
          {{- toYaml .group.resources.limits | nindent 10 }}
          {{- if .gpu }}
          {{ $root.Values.gpuWorkers.gpuResource }}: {{ $root.Values.gpuWorkers.gpus }}
          {{- end }}
      volumeMounts: {{- include "phifleet.volumeMounts" . | nindent 8 }}
  volumes: {{- include "phifleet.volumes" . | nindent 4 }}
{{- end -}}

{{/* A RayClusterSpec: .root, .serve (mount API keys), .job (mount the job config) */}}
{{- define "phifleet.rayClusterSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
rayVersion: {{ $v.rayVersion | quote }}
enableInTreeAutoscaling: {{ $v.autoscaler.enabled }}
{{- if eq $v.rayAuth.mode "token" }}
authOptions:
  mode: token
{{- end }}
{{- with $v.head.gcsFaultTolerance }}
{{- if .enabled }}
gcsFaultToleranceOptions:
  redisAddress: {{ .redisAddress | quote }}
  {{- if .redisPasswordSecret.name }}
  redisPassword:
    valueFrom:
      secretKeyRef: {name: {{ .redisPasswordSecret.name | quote }}, key: {{ .redisPasswordSecret.key | quote }}}
  {{- end }}
{{- end }}
{{- end }}
{{- if $v.autoscaler.enabled }}
autoscalerOptions:
  idleTimeoutSeconds: {{ $v.autoscaler.idleTimeoutSeconds }}
  upscalingMode: {{ $v.autoscaler.upscalingMode }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  securityContext: {{- toYaml $v.securityContext | nindent 4 }}
  resources: {{- toYaml $v.autoscaler.resources | nindent 4 }}
{{- end }}
headGroupSpec:
  {{- /* A RayService's head advertises no CPUs (unless head.rayStartParams says otherwise): Serve's ingress and
  replicas land on workers, and the head (GCS, the Serve controller, the dashboard KubeRay calls) is not loaded with
  them. A RayJob's head keeps its CPUs: it runs the driver and Ray Data's CPU stages. */}}
  rayStartParams: {{- toYaml (ternary (merge (dict) $v.head.rayStartParams (dict "num-cpus" "0")) $v.head.rayStartParams (.serve | default false)) | nindent 4 }}
  template:
    {{- include "phifleet.podTemplate" (dict "root" $root "component" "ray-head" "group" $v.head "head" true "serve" .serve "job" .job) | nindent 4 }}
workerGroupSpecs:
  {{- if $v.gpuWorkers.enabled }}
  - groupName: {{ $v.gpuWorkers.groupName }}
    replicas: {{ $v.gpuWorkers.replicas }}
    minReplicas: {{ $v.gpuWorkers.minReplicas }}
    maxReplicas: {{ $v.gpuWorkers.maxReplicas }}
    rayStartParams: {{- toYaml $v.gpuWorkers.rayStartParams | nindent 6 }}
    template:
      {{- include "phifleet.podTemplate" (dict "root" $root "component" (.serve | ternary "serve-worker" "job-worker") "group" $v.gpuWorkers "gpu" true "serve" .serve "job" .job) | nindent 6 }}
  {{- end }}
  {{- if $v.cpuWorkers.enabled }}
  - groupName: {{ $v.cpuWorkers.groupName }}
    replicas: {{ $v.cpuWorkers.replicas }}
    minReplicas: {{ $v.cpuWorkers.minReplicas }}
    maxReplicas: {{ $v.cpuWorkers.maxReplicas }}
    rayStartParams: {{- toYaml $v.cpuWorkers.rayStartParams | nindent 6 }}
    template:
      {{- include "phifleet.podTemplate" (dict "root" $root "component" (.serve | ternary "serve-worker" "job-worker") "group" $v.cpuWorkers "serve" .serve "job" .job) | nindent 6 }}
  {{- end }}
{{- end -}}
