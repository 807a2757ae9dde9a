# ---------------------------------------------------------------- installation

variable "name" {
  description = "Name of the installation: the EKS cluster, and the prefix of every resource name."
  type        = string
  default     = "diffleet"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 24 lowercase letters, digits and -, starting with a letter (it prefixes IAM role and bucket names)."
  }
}

variable "region" {
  description = "AWS region of the installation (one with P5, P4d and G4dn instances for the default pools)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "tags" {
  description = "Tags of every resource (the provider's default_tags)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_cidr" {
  description = "CIDR block of the VPC: a /16 (private /19 per zone, public /24 per zone)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && endswith(var.vpc_cidr, "/16")
    error_message = "vpc_cidr must be a /16 CIDR block such as 10.40.0.0/16."
  }
}

variable "availability_zones" {
  description = "Availability zones the VPC, the nodes, the database and the broker span: 2 or 3 of the region's, where the GPU instance types of gpu_pools are offered."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must name 2 or 3 distinct zones (RDS Multi-AZ and EKS need at least 2)."
  }

  validation {
    condition     = alltrue([for zone in var.availability_zones : can(regex("^${var.region}[a-z]$", zone))])
    error_message = "availability_zones must be zones of var.region, such as us-east-1a."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones instead of one per zone (cheaper, less available)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Days the VPC flow logs, the control plane's logs and the S3 access logs are kept."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention period (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

# ---------------------------------------------------------------- cluster

variable "kubernetes_version" {
  description = "Kubernetes minor version of the EKS cluster (the chart needs 1.30 or later)."
  type        = string
  default     = "1.34"

  validation {
    condition     = can(regex("^1\\.(3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version from 1.30 to 1.39, such as 1.34."
  }
}

variable "cluster_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the cluster's public API endpoint (where `tofu apply` and kubectl run); empty: private endpoint only, apply from inside the VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.cluster_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "cluster_public_access_cidrs must be CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "cluster_admin_role_arns" {
  description = "IAM roles given cluster-admin (EKS access entries), besides whoever applies this."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cluster_admin_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", arn))])
    error_message = "cluster_admin_role_arns must be IAM role ARNs."
  }
}

variable "system_instance_types" {
  description = "Instance types of the system node group (Karpenter, CoreDNS, the operator, the API)."
  type        = list(string)
  default     = ["m7i.xlarge", "m6i.xlarge"]

  validation {
    condition     = length(var.system_instance_types) > 0 && alltrue([for type in var.system_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", type))])
    error_message = "system_instance_types must list at least one EC2 instance type such as m7i.xlarge."
  }
}

variable "system_node_count" {
  description = "Minimum, desired and maximum size of the system node group."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 2, desired = 3, max = 6 }

  validation {
    condition     = var.system_node_count.min >= 2 && var.system_node_count.min <= var.system_node_count.desired && var.system_node_count.desired <= var.system_node_count.max && var.system_node_count.max <= 50
    error_message = "system_node_count must satisfy 2 <= min <= desired <= max <= 50 (two nodes at least: the operator and the API keep a replica through a node's loss)."
  }
}

# ---------------------------------------------------------------- GPU nodes

variable "karpenter_version" {
  description = "Version of Karpenter's Helm chart (oci://public.ecr.aws/karpenter/karpenter)."
  type        = string
  default     = "1.14.3"

  validation {
    condition     = can(regex("^1\\.[0-9]+\\.[0-9]+$", var.karpenter_version))
    error_message = "karpenter_version must be a Karpenter v1 release such as 1.14.3 (the NodePools are karpenter.sh/v1)."
  }
}

variable "nvidia_device_plugin_version" {
  description = "Version of the NVIDIA device plugin's Helm chart (https://nvidia.github.io/k8s-device-plugin)."
  type        = string
  default     = "0.17.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nvidia_device_plugin_version))
    error_message = "nvidia_device_plugin_version must be a release such as 0.17.1."
  }
}

variable "gpu_node_ami_alias" {
  description = "AMI alias of the GPU nodes: al2023@latest, or al2023@v<YYYYMMDD> to pin one release (recommended once tested)."
  type        = string
  default     = "al2023@latest"

  validation {
    condition     = can(regex("^al2023@(latest|v[0-9]{8})$", var.gpu_node_ami_alias))
    error_message = "gpu_node_ami_alias must be al2023@latest or al2023@vYYYYMMDD (the NVIDIA variant is chosen per instance type)."
  }
}

variable "gpu_node_root_volume_gib" {
  description = "Root volume of a GPU node, in GiB (container images: the worker image with CUDA is large)."
  type        = number
  default     = 200

  validation {
    condition     = var.gpu_node_root_volume_gib >= 100 && var.gpu_node_root_volume_gib <= 2000
    error_message = "gpu_node_root_volume_gib must be from 100 to 2000."
  }
}

variable "gpu_node_expire_after" {
  description = "Age at which Karpenter replaces a GPU node, once it is empty of workers (a duration such as 720h, or Never)."
  type        = string
  default     = "720h"

  validation {
    condition     = can(regex("^([0-9]+h|Never)$", var.gpu_node_expire_after))
    error_message = "gpu_node_expire_after must be hours such as 720h, or Never."
  }
}

variable "gpu_node_consolidate_after" {
  description = "How long a GPU node stays empty before Karpenter removes it (a duration such as 5m)."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.gpu_node_consolidate_after))
    error_message = "gpu_node_consolidate_after must be a duration such as 30s, 5m or 1h."
  }
}

variable "gpu_pools" {
  description = <<-EOT
    GPU pools by name (a DNS label): each a Karpenter NodePool whose nodes carry
    diffleet.io/pool=<name>, nvidia.com/gpu.product, nvidia.com/gpu.memory (MiB per GPU)
    and the taint nvidia.com/gpu=present:NoSchedule, and a GPUPool of the release.
    gpu_type: a job's gpuClass; instance_types: what Karpenter may launch; max_gpus: the
    NodePool's limit; min/max_replicas and gpus_per_worker: the GPUPool's.
  EOT
  type = map(object({
    gpu_type        = string
    gpu_product     = string
    gpu_memory_mib  = number
    instance_types  = list(string)
    capacity_types  = optional(list(string), ["on-demand"])
    max_gpus        = number
    gpus_per_worker = optional(number, 1)
    min_replicas    = optional(number, 0)
    max_replicas    = number
  }))
  default = {
    h100 = {
      gpu_type       = "h100"
      gpu_product    = "NVIDIA-H100-80GB-HBM3"
      gpu_memory_mib = 81920
      instance_types = ["p5.48xlarge"]
      max_gpus       = 16
      max_replicas   = 16
    }
    a100 = {
      gpu_type       = "a100"
      gpu_product    = "NVIDIA-A100-SXM4-40GB"
      gpu_memory_mib = 40960
      instance_types = ["p4d.24xlarge"]
      max_gpus       = 16
      max_replicas   = 16
    }
    t4 = {
      gpu_type       = "t4"
      gpu_product    = "Tesla-T4"
      gpu_memory_mib = 16384
      instance_types = ["g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge", "g4dn.8xlarge", "g4dn.12xlarge", "g4dn.16xlarge"]
      max_gpus       = 32
      max_replicas   = 32
    }
  }

  validation {
    condition     = length(var.gpu_pools) > 0 && alltrue([for name, pool in var.gpu_pools : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", name)) && can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", pool.gpu_type)) && pool.gpu_type != "any"])
    error_message = "gpu_pools must name at least one pool; pool names and gpu_type must be DNS labels, and gpu_type may not be any."
  }

  validation {
    condition     = alltrue([for pool in values(var.gpu_pools) : length(pool.instance_types) > 0 && alltrue([for type in pool.instance_types : can(regex("^(p[0-9]+[a-z]*|g[0-9]+[a-z]*)\\.[a-z0-9]+$", type))])])
    error_message = "Each pool's instance_types must list GPU instance types (p*, g* families) such as p5.48xlarge or g4dn.xlarge."
  }

  validation {
    condition     = alltrue([for pool in values(var.gpu_pools) : length(pool.capacity_types) > 0 && alltrue([for capacity in pool.capacity_types : contains(["on-demand", "spot", "reserved"], capacity)])])
    error_message = "Each pool's capacity_types must be among on-demand, spot and reserved."
  }

  validation {
    condition     = alltrue([for pool in values(var.gpu_pools) : pool.gpu_memory_mib >= 1024 && pool.gpu_memory_mib <= 1048576 && pool.gpu_memory_mib % 1024 == 0])
    error_message = "Each pool's gpu_memory_mib must be whole GiB from 1024 to 1048576 MiB (the GPUPool's vramGiB is 1 to 1024)."
  }

  validation {
    condition     = alltrue([for pool in values(var.gpu_pools) : pool.gpus_per_worker >= 1 && pool.gpus_per_worker <= 16 && pool.max_gpus >= pool.gpus_per_worker && pool.min_replicas >= 0 && pool.min_replicas <= pool.max_replicas && pool.max_replicas <= 1000])
    error_message = "Each pool needs 1 <= gpus_per_worker <= 16, max_gpus >= gpus_per_worker and 0 <= min_replicas <= max_replicas <= 1000."
  }
}

# ---------------------------------------------------------------- storage

variable "bucket_prefix" {
  description = "Prefix of the bucket names (<prefix>-models, -outputs, -uploads); bucket names are global, so make it yours."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,44}[a-z0-9]$", var.bucket_prefix))
    error_message = "bucket_prefix must be 3 to 46 lowercase letters, digits and -, neither starting nor ending with -."
  }
}

variable "outputs_retention_days" {
  description = "Days a generated image is kept in the outputs bucket before S3 expires it."
  type        = number
  default     = 30

  validation {
    condition     = var.outputs_retention_days >= 1 && var.outputs_retention_days <= 3650 && floor(var.outputs_retention_days) == var.outputs_retention_days
    error_message = "outputs_retention_days must be a whole number of days from 1 to 3650."
  }
}

variable "uploads_retention_days" {
  description = "Days an uploaded input image is kept in the uploads bucket."
  type        = number
  default     = 7

  validation {
    condition     = var.uploads_retention_days >= 1 && var.uploads_retention_days <= 3650 && floor(var.uploads_retention_days) == var.uploads_retention_days
    error_message = "uploads_retention_days must be a whole number of days from 1 to 3650."
  }
}

# ---------------------------------------------------------------- PostgreSQL

variable "postgres_version" {
  description = "PostgreSQL version of RDS (major.minor)."
  type        = string
  default     = "17.6"

  validation {
    condition     = can(regex("^1[5-9]\\.[0-9]+$", var.postgres_version))
    error_message = "postgres_version must be major.minor with major 15 or later, such as 17.6."
  }
}

variable "postgres_instance_class" {
  description = "RDS instance class of the API's database."
  type        = string
  default     = "db.m7g.large"

  validation {
    condition     = startswith(var.postgres_instance_class, "db.")
    error_message = "postgres_instance_class must be an RDS instance class such as db.m7g.large."
  }
}

variable "postgres_storage_gib" {
  description = "Initial storage of the database, in GiB (autoscaling up to five times as much)."
  type        = number
  default     = 50

  validation {
    condition     = var.postgres_storage_gib >= 20 && var.postgres_storage_gib <= 13000
    error_message = "postgres_storage_gib must be from 20 to 13000."
  }
}

variable "postgres_multi_az" {
  description = "A standby of the database in a second zone."
  type        = bool
  default     = true
}

variable "postgres_backup_retention_days" {
  description = "Days automated backups (point-in-time recovery) are kept."
  type        = number
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 7 && var.postgres_backup_retention_days <= 35
    error_message = "postgres_backup_retention_days must be from 7 to 35."
  }
}

# ---------------------------------------------------------------- RabbitMQ

variable "rabbitmq_version" {
  description = "RabbitMQ engine version of Amazon MQ."
  type        = string
  default     = "3.13"

  validation {
    condition     = can(regex("^[34]\\.[0-9]+(\\.[0-9]+)?$", var.rabbitmq_version))
    error_message = "rabbitmq_version must be a RabbitMQ version Amazon MQ offers, such as 3.13."
  }
}

variable "rabbitmq_instance_type" {
  description = "Amazon MQ broker instance type."
  type        = string
  default     = "mq.m5.large"

  validation {
    condition     = startswith(var.rabbitmq_instance_type, "mq.")
    error_message = "rabbitmq_instance_type must be an Amazon MQ instance type such as mq.m5.large."
  }
}

variable "rabbitmq_cluster_mode" {
  description = "Three broker nodes across zones (CLUSTER_MULTI_AZ) instead of a single instance."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- release

variable "image_registry" {
  description = "Registry (and path) of the diffleet images (diffleet-operator, diffleet-api, diffleet-gpu-worker)."
  type        = string
  default     = "ghcr.io/diffleet"

  validation {
    condition     = length(var.image_registry) > 0 && !endswith(var.image_registry, "/")
    error_message = "image_registry must be a registry path without a trailing /, such as 111122223333.dkr.ecr.us-east-1.amazonaws.com/diffleet."
  }
}

variable "image_tag" {
  description = "Tag of the diffleet images; empty: the chart's appVersion."
  type        = string
  default     = ""
}

variable "otlp_endpoint" {
  description = "OTLP/HTTP endpoint of a trace collector (http://collector:4318); empty: no traces."
  type        = string
  default     = ""

  validation {
    condition     = var.otlp_endpoint == "" || can(regex("^https?://", var.otlp_endpoint))
    error_message = "otlp_endpoint must be empty or an http(s) URL."
  }
}

variable "prometheus_operator" {
  description = "Install the release's ServiceMonitor and PrometheusRule (the Prometheus Operator's CRDs must be in the cluster)."
  type        = bool
  default     = false
}

variable "grafana_dashboards" {
  description = "Install the release's dashboards ConfigMap (labelled for Grafana's dashboard sidecar)."
  type        = bool
  default     = false
}

variable "diffleet_extra_values" {
  description = "Further values files (YAML strings) for the diffleet chart, applied last (resources, replicas, ...)."
  type        = list(string)
  default     = []
}
