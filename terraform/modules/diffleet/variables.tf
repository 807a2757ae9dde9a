variable "name" {
  description = "Name of the installation, prefixed to the Secrets Manager secrets."
  type        = string
}

variable "region" {
  description = "AWS region of the buckets."
  type        = string
}

variable "namespace" {
  description = "Namespace of the release."
  type        = string
}

variable "release_name" {
  description = "Name of the Helm release."
  type        = string
}

variable "chart_path" {
  description = "Path of the diffleet chart."
  type        = string
}

variable "image_registry" {
  description = "Registry (and path) of the diffleet images."
  type        = string
}

variable "image_tag" {
  description = "Tag of the diffleet images; empty: the chart's appVersion."
  type        = string
}

variable "amqp_url" {
  description = "AMQP URL of RabbitMQ, password included."
  type        = string
  sensitive   = true
}

variable "database_url" {
  description = "PostgreSQL URL of the API's database, password included."
  type        = string
  sensitive   = true
}

variable "rabbitmq_management_url" {
  description = "URL of RabbitMQ's management API."
  type        = string
}

variable "buckets" {
  description = "Names of the models, outputs and uploads buckets."
  type = object({
    models  = string
    outputs = string
    uploads = string
  })
}

variable "system_node_selector" {
  description = "Labels of the system nodes, where the operator and the API run."
  type        = map(string)
}

variable "gpu_pools" {
  description = "GPU pools by name, rendered as GPUPools (see the root module's gpu_pools)."
  type = map(object({
    gpu_type        = string
    gpu_memory_mib  = number
    gpus_per_worker = number
    min_replicas    = number
    max_replicas    = number
  }))
}

variable "otlp_endpoint" {
  description = "OTLP/HTTP endpoint the components send traces to; empty: none."
  type        = string
}

variable "prometheus_operator" {
  description = "Install the ServiceMonitor and PrometheusRule (the Prometheus Operator's CRDs must exist)."
  type        = bool
}

variable "grafana_dashboards" {
  description = "Install the dashboards ConfigMap for Grafana's sidecar."
  type        = bool
}

variable "extra_values" {
  description = "Further values files (YAML strings) for the chart, applied last."
  type        = list(string)
}
