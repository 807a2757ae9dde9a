output "role_arns" {
  description = "IAM role of each component (operator, api, worker)."
  value       = { for component, role in aws_iam_role.component : component => role.arn }
}

output "associations" {
  description = "EKS Pod Identity association IDs of each component."
  value       = { for component, association in aws_eks_pod_identity_association.component : component => association.association_id }
}
