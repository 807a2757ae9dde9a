# The diffleet release: its namespace, the Secrets the chart references (existingSecret),
# and the chart itself (../charts/diffleet), wired to RabbitMQ, PostgreSQL and the
# buckets, with the GPUPools whose nodes modules/gpu-nodes provides.

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of"    = "diffleet"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }
}

# ---------------------------------------------------------------- API keys

# The API's signing keys, generated here and kept in Secrets Manager, where whoever
# verifies webhook signatures or mints tokens outside the API reads them.
resource "random_password" "api" {
  for_each = local.api_keys

  length  = 64
  special = false
}

locals {
  api_keys = {
    jwt             = "HS256 key of the API's bearer JWTs (DIFFLEET_API_JWT_SECRET)"
    webhook-signing = "HMAC-SHA256 key of the API's webhook bodies (DIFFLEET_API_WEBHOOK_SECRET)"
  }
}

module "secrets_key" {
  source = "../kms-key"

  description = "${var.name}: the API's signing keys in Secrets Manager"
}

resource "aws_secretsmanager_secret" "api" {
  # checkov:skip=CKV2_AWS_57: a new key is made by tainting random_password.api and applying, which updates the Kubernetes Secret too and rolls the API; a Secrets Manager rotation would leave the cluster's copy behind
  for_each = local.api_keys

  name_prefix = "${var.name}/${each.key}-"
  description = each.value
  kms_key_id  = module.secrets_key.arn
}

resource "aws_secretsmanager_secret_version" "api" {
  for_each = local.api_keys

  secret_id     = aws_secretsmanager_secret.api[each.key].id
  secret_string = random_password.api[each.key].result
}

# ---------------------------------------------------------------- Kubernetes Secrets

locals {
  # The chart's secrets.<value>: the key the chart reads, and what it holds.
  secret_keys = {
    amqp            = "url"
    database        = "url"
    jwt             = "secret"
    webhook-signing = "secret"
  }
  secret_values = {
    amqp            = var.amqp_url
    database        = var.database_url
    jwt             = random_password.api["jwt"].result
    webhook-signing = random_password.api["webhook-signing"].result
  }
}

resource "kubernetes_secret_v1" "this" {
  for_each = local.secret_keys

  metadata {
    name      = "${var.release_name}-${each.key}"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels = {
      "app.kubernetes.io/part-of"    = "diffleet"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  data = { (each.value) = local.secret_values[each.key] }
  type = "Opaque"
}

# ---------------------------------------------------------------- release

locals {
  gpu_pools = [for name, pool in var.gpu_pools : {
    name          = name
    gpuType       = pool.gpu_type
    vramGiB       = floor(pool.gpu_memory_mib / 1024)
    gpusPerWorker = pool.gpus_per_worker
    minReplicas   = pool.min_replicas
    maxReplicas   = pool.max_replicas
    # The labels modules/gpu-nodes puts on the pool's nodes, whatever the GPUPool is named.
    nodeSelector = { "diffleet.io/pool" = name }
  }]

  values = {
    image = {
      registry = var.image_registry
      tag      = var.image_tag
    }
    telemetry = { otlpEndpoint = var.otlp_endpoint }
    endpoints = {
      rabbitmqManagementUrl = var.rabbitmq_management_url
      s3                    = { region = var.region }
      buckets               = var.buckets
    }
    secrets = {
      amqp           = { existingSecret = kubernetes_secret_v1.this["amqp"].metadata[0].name }
      database       = { existingSecret = kubernetes_secret_v1.this["database"].metadata[0].name }
      jwt            = { existingSecret = kubernetes_secret_v1.this["jwt"].metadata[0].name }
      webhookSigning = { existingSecret = kubernetes_secret_v1.this["webhook-signing"].metadata[0].name }
      # EKS Pod Identity gives each ServiceAccount its role (modules/workload-identity).
      s3 = { useServiceAccountRole = true }
    }
    operator = { nodeSelector = var.system_node_selector }
    api      = { nodeSelector = var.system_node_selector }
    gpuPools = local.gpu_pools
    metrics = {
      serviceMonitor = { enabled = var.prometheus_operator }
      prometheusRule = { enabled = var.prometheus_operator }
    }
    dashboards = { enabled = var.grafana_dashboards }
  }
}

resource "helm_release" "diffleet" {
  name      = var.release_name
  namespace = kubernetes_namespace_v1.this.metadata[0].name
  chart     = var.chart_path
  # Covers the pre-delete drain hook, which waits drain.timeoutSeconds (600 s) for
  # running jobs.
  timeout = 900
  wait    = true
  atomic  = true

  values = concat([yamlencode(local.values)], var.extra_values)
}
