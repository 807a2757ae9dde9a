output "address" {
  description = "Host name of the database."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the database."
  value       = aws_db_instance.this.port
}

output "database" {
  description = "Name of the API's database."
  value       = aws_db_instance.this.db_name
}

output "master_secret_arn" {
  description = "Secrets Manager secret holding the master user name and password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "url" {
  description = "PostgreSQL URL of the API's database, password included, TLS required."
  value = format(
    "postgresql://%s@%s:%d/%s?sslmode=require",
    local.master_userinfo,
    aws_db_instance.this.address,
    aws_db_instance.this.port,
    aws_db_instance.this.db_name,
  )
  sensitive = true
}
