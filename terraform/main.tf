# diffleet on AWS: a VPC, an EKS cluster with a system node group, GPU nodes on demand
# (Karpenter NodePools per pool, the NVIDIA device plugin), the three S3 buckets, RDS
# PostgreSQL, Amazon MQ for RabbitMQ, an IAM role per component (EKS Pod Identity) and the
# diffleet Helm release wired to all of them.

locals {
  cluster_name = var.name
  namespace    = "diffleet-system"
  release_name = "diffleet"
  # The chart's ServiceAccounts, <fullname>-<component> (fullname = the release name).
  service_accounts = {
    operator = "${local.release_name}-operator"
    api      = "${local.release_name}-api"
    worker   = "${local.release_name}-worker"
  }
  system_node_selector = { "diffleet.io/node-role" = "system" }
}

module "network" {
  source = "./modules/network"

  name                    = var.name
  cluster_name            = local.cluster_name
  cidr                    = var.vpc_cidr
  availability_zones      = var.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  flow_log_retention_days = var.log_retention_days
}

module "eks" {
  source = "./modules/eks"

  name                  = local.cluster_name
  kubernetes_version    = var.kubernetes_version
  subnet_ids            = module.network.private_subnet_ids
  public_access_cidrs   = var.cluster_public_access_cidrs
  admin_role_arns       = var.cluster_admin_role_arns
  system_instance_types = var.system_instance_types
  system_node_count     = var.system_node_count
  system_node_disk_gib  = 50
  log_retention_days    = var.log_retention_days
}

module "gpu_nodes" {
  source = "./modules/gpu-nodes"

  cluster_name                 = module.eks.name
  node_security_group_id       = module.eks.cluster_security_group_id
  system_node_selector         = local.system_node_selector
  karpenter_version            = var.karpenter_version
  nvidia_device_plugin_version = var.nvidia_device_plugin_version
  node_ami_alias               = var.gpu_node_ami_alias
  node_root_volume_gib         = var.gpu_node_root_volume_gib
  node_expire_after            = var.gpu_node_expire_after
  consolidate_after            = var.gpu_node_consolidate_after
  gpu_pools                    = var.gpu_pools

  # Karpenter and the device plugin run on the system nodes, with the add-ons up.
  depends_on = [module.eks]
}

module "storage" {
  source = "./modules/storage"

  name                             = var.name
  bucket_prefix                    = var.bucket_prefix
  outputs_retention_days           = var.outputs_retention_days
  uploads_retention_days           = var.uploads_retention_days
  models_noncurrent_retention_days = 30
  access_log_retention_days        = var.log_retention_days
}

module "database" {
  source = "./modules/database"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_id  = module.eks.cluster_security_group_id
  engine_version            = var.postgres_version
  instance_class            = var.postgres_instance_class
  allocated_storage_gib     = var.postgres_storage_gib
  max_allocated_storage_gib = var.postgres_storage_gib * 5
  multi_az                  = var.postgres_multi_az
  backup_retention_days     = var.postgres_backup_retention_days
  database                  = "diffleet"
  username                  = "diffleet"
}

module "broker" {
  source = "./modules/broker"

  name                     = var.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.private_subnet_ids
  client_security_group_id = module.eks.cluster_security_group_id
  engine_version           = var.rabbitmq_version
  instance_type            = var.rabbitmq_instance_type
  cluster_mode             = var.rabbitmq_cluster_mode
  maintenance_day          = "SUNDAY"
  username                 = "diffleet"
}

module "workload_identity" {
  source = "./modules/workload-identity"

  name             = var.name
  cluster_name     = module.eks.name
  namespace        = local.namespace
  service_accounts = local.service_accounts
  bucket_arns      = module.storage.bucket_arns
  kms_key_arn      = module.storage.kms_key_arn
}

module "diffleet" {
  source = "./modules/diffleet"

  name                    = var.name
  region                  = var.region
  namespace               = local.namespace
  release_name            = local.release_name
  chart_path              = "${path.root}/../charts/diffleet"
  image_registry          = var.image_registry
  image_tag               = var.image_tag
  amqp_url                = module.broker.amqp_url
  database_url            = module.database.url
  rabbitmq_management_url = module.broker.management_url
  buckets                 = module.storage.buckets
  system_node_selector    = local.system_node_selector
  gpu_pools               = var.gpu_pools
  otlp_endpoint           = var.otlp_endpoint
  prometheus_operator     = var.prometheus_operator
  grafana_dashboards      = var.grafana_dashboards
  extra_values            = var.diffleet_extra_values

  # The pods start with their IAM roles associated and their GPU nodes possible.
  depends_on = [module.workload_identity, module.gpu_nodes]
}
