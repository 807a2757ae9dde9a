variable "name_prefix" {
  description = "Prefix of the role's name (IAM appends a unique suffix)."
  type        = string
}
