variable "name" {
  description = "Name of the installation, prefixed to the key alias and the access-log bucket."
  type        = string
}

variable "bucket_prefix" {
  description = "Prefix of the bucket names: <prefix>-models, <prefix>-outputs, <prefix>-uploads."
  type        = string
}

variable "outputs_retention_days" {
  description = "Days a generated image is kept in the outputs bucket."
  type        = number
}

variable "uploads_retention_days" {
  description = "Days an input image is kept in the uploads bucket."
  type        = number
}

variable "models_noncurrent_retention_days" {
  description = "Days an overwritten or deleted model file stays recoverable."
  type        = number
}

variable "access_log_retention_days" {
  description = "Days the buckets' access logs are kept."
  type        = number
}
