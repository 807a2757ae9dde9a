output "amqp_url" {
  description = "AMQP URL of the broker (TLS), password included."
  value       = local.amqp_url
  sensitive   = true
}

output "management_url" {
  description = "URL of the RabbitMQ management API and console."
  value       = aws_mq_broker.this.instances[0].console_url
}

output "secret_arn" {
  description = "Secrets Manager secret holding the broker's user, password and URL."
  value       = aws_secretsmanager_secret.user.arn
}
