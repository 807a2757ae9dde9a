output "buckets" {
  description = "Bucket names by role (models, outputs, uploads)."
  value       = { for role, bucket in aws_s3_bucket.this : role => bucket.id }
}

output "bucket_arns" {
  description = "Bucket ARNs by role (models, outputs, uploads)."
  value       = { for role, bucket in aws_s3_bucket.this : role => bucket.arn }
}

output "kms_key_arn" {
  description = "KMS key encrypting the buckets' objects."
  value       = aws_kms_key.buckets.arn
}
