variable "name" {
  description = "Name of the installation, prefixed to the role names."
  type        = string
}

variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "namespace" {
  description = "Namespace of the diffleet release (its workers run there too)."
  type        = string
}

variable "service_accounts" {
  description = "ServiceAccount names of the operator, the api and the worker."
  type = object({
    operator = string
    api      = string
    worker   = string
  })
}

variable "bucket_arns" {
  description = "ARNs of the models, outputs and uploads buckets."
  type = object({
    models  = string
    outputs = string
    uploads = string
  })
}

variable "kms_key_arn" {
  description = "KMS key of the buckets."
  type        = string
}
