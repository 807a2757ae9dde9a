output "node_role_arn" {
  description = "IAM role of the GPU nodes Karpenter launches."
  value       = module.node_role.arn
}

output "controller_role_arn" {
  description = "IAM role of the Karpenter controller (EKS Pod Identity)."
  value       = aws_iam_role.controller.arn
}

output "interruption_queue" {
  description = "Name of the SQS queue of EC2 interruption events."
  value       = aws_sqs_queue.interruption.name
}

output "node_pools" {
  description = "Names of the Karpenter NodePools, one per GPU pool (installed once the release is)."
  value       = [for pool in local.node_pools : pool.metadata.name if helm_release.node_pools.status == "deployed"]
}

output "device_plugin_version" {
  description = "Chart version of the NVIDIA device plugin release."
  value       = helm_release.nvidia_device_plugin.version
}
