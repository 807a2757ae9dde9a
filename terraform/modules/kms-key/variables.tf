variable "description" {
  description = "What the key encrypts, shown in the KMS console."
  type        = string
}

variable "service_users" {
  description = "AWS services that encrypt with the key themselves (a log group's CloudWatch Logs), by statement id: the service principal and the conditions it is held to."
  type = map(object({
    service = string
    conditions = optional(list(object({
      test     = string
      variable = string
      values   = list(string)
    })), [])
  }))
  default = {}
}
