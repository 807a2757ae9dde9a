output "namespace" {
  description = "Namespace of the release."
  value       = helm_release.diffleet.namespace
}

output "release" {
  description = "Name and chart version of the release."
  value       = { name = helm_release.diffleet.name, version = helm_release.diffleet.metadata.version }
}

output "api_key_secret_arns" {
  description = "Secrets Manager secrets of the API's JWT and webhook signing keys."
  value       = { for key, secret in aws_secretsmanager_secret.api : key => secret.arn }
}
