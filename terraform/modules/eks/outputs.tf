output "name" {
  description = "Name of the cluster."
  value       = aws_eks_cluster.this.name
}

output "endpoint" {
  description = "URL of the cluster's API server."
  value       = aws_eks_cluster.this.endpoint
}

output "certificate_authority" {
  description = "Base64-encoded certificate authority of the API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS attaches to the control plane and the nodes."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "system_node_group" {
  description = "Name of the system managed node group (the nodes are ready once it is created)."
  value       = aws_eks_node_group.system.node_group_name
}

output "addons" {
  description = "Versions of the EKS add-ons, by name (created once the system nodes are up)."
  value       = merge({ for name, addon in aws_eks_addon.node : name => addon.addon_version }, { coredns = aws_eks_addon.coredns.addon_version })
}
