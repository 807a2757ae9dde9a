output "cluster_name" {
  description = "Name of the EKS cluster (aws eks update-kubeconfig --name <this>)."
  value       = module.eks.name
}

output "cluster_endpoint" {
  description = "URL of the cluster's API server."
  value       = module.eks.endpoint
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = module.network.vpc_id
}

output "buckets" {
  description = "Bucket names by role (models, outputs, uploads)."
  value       = module.storage.buckets
}

output "database_address" {
  description = "Host name of the RDS PostgreSQL instance."
  value       = module.database.address
}

output "database_master_secret_arn" {
  description = "Secrets Manager secret of the database's master user (generated and rotated by RDS)."
  value       = module.database.master_secret_arn
}

output "rabbitmq_management_url" {
  description = "URL of the RabbitMQ management console (reachable from inside the VPC)."
  value       = module.broker.management_url
}

output "rabbitmq_secret_arn" {
  description = "Secrets Manager secret of the RabbitMQ user (username, password, url)."
  value       = module.broker.secret_arn
}

output "api_key_secret_arns" {
  description = "Secrets Manager secrets of the API's JWT and webhook signing keys."
  value       = module.diffleet.api_key_secret_arns
}

output "component_role_arns" {
  description = "IAM role of each diffleet component (operator, api, worker), bound by EKS Pod Identity."
  value       = module.workload_identity.role_arns
}

output "karpenter" {
  description = "Karpenter's controller role, the GPU nodes' role, its interruption queue and the NodePools."
  value = {
    controller_role_arn = module.gpu_nodes.controller_role_arn
    node_role_arn       = module.gpu_nodes.node_role_arn
    interruption_queue  = module.gpu_nodes.interruption_queue
    node_pools          = module.gpu_nodes.node_pools
  }
}

output "release" {
  description = "Namespace, name and chart version of the diffleet release."
  value       = merge(module.diffleet.release, { namespace = module.diffleet.namespace })
}
