{{/*
The release's name prefix, as `helm create` makes it: the release name when it contains
the chart name (release `diffleet` -> diffleet-operator, diffleet-api, diffleet-worker).
*/}}
{{- define "diffleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "diffleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of a component: (dict "ctx" $ "component" "api").
*/}}
{{- define "diffleet.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of every object of a component: (dict "ctx" $ "component" "api"). part-of=diffleet
is also what the local pod runner looks for.
*/}}
{{- define "diffleet.labels" -}}
{{ include "diffleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: diffleet
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "diffleet.chart" .ctx }}
{{- end -}}

{{/*
An image of the release: (dict "ctx" $ "repository" "diffleet-api").
*/}}
{{- define "diffleet.image" -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .repository (.ctx.Values.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}

{{- define "diffleet.workerImage" -}}
{{- include "diffleet.image" (dict "ctx" . "repository" .Values.worker.image.repository) -}}
{{- end -}}

{{/*
The address servers bind: the pod's IP (POD_IP, first in diffleet.commonEnv) or every
address.
*/}}
{{- define "diffleet.bindHost" -}}
{{- if .Values.listenOnPodIP -}}$(POD_IP){{- else -}}0.0.0.0{{- end -}}
{{- end -}}

{{/*
Settings every component reads: (dict "ctx" $ "service" "diffleet-api").
*/}}
{{- define "diffleet.commonEnv" -}}
{{- $v := .ctx.Values -}}
{{- /* POD_IP first, so that later values can refer to $(POD_IP). */ -}}
{{ if $v.listenOnPodIP -}}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
{{ end -}}
- name: DIFFLEET_DEVELOPMENT_MODE
  value: {{ $v.developmentMode | quote }}
- name: DIFFLEET_LOG_FORMAT
  value: {{ $v.logging.format | quote }}
- name: DIFFLEET_LOG_LEVEL
  value: {{ $v.logging.level | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
{{- with $v.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $v.telemetry.sampleRatio | quote }}
{{- end }}
{{- with $v.endpoints.rabbitmqManagementUrl }}
- name: DIFFLEET_RABBITMQ_MANAGEMENT_URL
  value: {{ . | quote }}
{{- end }}
{{ include "diffleet.amqpEnv" .ctx }}
{{ include "diffleet.s3Env" .ctx }}
{{- end -}}

{{/*
The secret references. `required` makes `helm install` and `helm template` fail, naming
the value, when a component's Secret is not given; `helm lint` renders in lint mode, where
`required` only logs the missing value, so `helm lint --strict` passes on the default
values (which can name no Secret of a cluster) without a lint-only switch in the chart.
*/}}
{{- define "diffleet.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secrets.%s.existingSecret is required (%s)" .value .what) .secret.existingSecret | quote }}
      key: {{ .key | quote }}
{{- end -}}

{{- define "diffleet.amqpEnv" -}}
{{ include "diffleet.secretEnv" (dict "name" "DIFFLEET_AMQP_URL" "value" "amqp" "what" "a Secret with the AMQP URL" "secret" .Values.secrets.amqp "key" .Values.secrets.amqp.key) }}
{{- end -}}

{{/*
S3: the endpoint, region and buckets, and the keys unless the ServiceAccount's IAM role
gives the credentials (then boto3 finds them itself).
*/}}
{{- define "diffleet.s3Env" -}}
{{- $v := .Values -}}
- name: AWS_DEFAULT_REGION
  value: {{ $v.endpoints.s3.region | quote }}
{{- with $v.endpoints.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
- name: DIFFLEET_BUCKETS__MODELS
  value: {{ $v.endpoints.buckets.models | quote }}
- name: DIFFLEET_BUCKETS__OUTPUTS
  value: {{ $v.endpoints.buckets.outputs | quote }}
- name: DIFFLEET_BUCKETS__UPLOADS
  value: {{ $v.endpoints.buckets.uploads | quote }}
{{- if not $v.secrets.s3.useServiceAccountRole }}
{{ include "diffleet.secretEnv" (dict "name" "AWS_ACCESS_KEY_ID" "value" "s3" "what" "a Secret with the S3 access key, unless secrets.s3.useServiceAccountRole" "secret" $v.secrets.s3 "key" $v.secrets.s3.accessKeyIdKey) }}
{{ include "diffleet.secretEnv" (dict "name" "AWS_SECRET_ACCESS_KEY" "value" "s3" "what" "a Secret with the S3 access key, unless secrets.s3.useServiceAccountRole" "secret" $v.secrets.s3 "key" $v.secrets.s3.secretAccessKeyKey) }}
{{- end }}
{{- end -}}

{{/*
The pod security context of every diffleet pod: the images run as user 10001.
*/}}
{{- define "diffleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "diffleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Prometheus' annotation convention for a pod serving /metrics on `port`.
*/}}
{{- define "diffleet.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/*
The env of a worker of the release's GPUPools (the operator adds the pool's own, its id,
node and namespace).
*/}}
{{- define "diffleet.workerEnv" -}}
{{ include "diffleet.commonEnv" (dict "ctx" . "service" "diffleet-worker") }}
{{- end -}}

{{/*
Suppressions of checkov's checks that do not fit diffleet, each with its reason (checkov
reads them from the workload's annotations): a list of check ids.
*/}}
{{- define "diffleet.checkovSkips" -}}
{{- $reasons := dict
  "CKV_K8S_15" "release tags are immutable: IfNotPresent (image.pullPolicy) is enough"
  "CKV_K8S_21" "Events of cluster-scoped GPUPools go to default: the API reads them there only"
  "CKV_K8S_35" "the components read every setting from env (pydantic-settings), secrets included"
  "CKV_K8S_38" "the container is a Kubernetes client: it needs its ServiceAccount token"
  "CKV_K8S_43" "images are pinned by release tag (image.tag)"
-}}
{{- range $index, $id := . }}
checkov.io/skip{{ add1 $index }}: {{ printf "%s=%s" $id (get $reasons $id) | quote }}
{{- end }}
{{- end -}}
