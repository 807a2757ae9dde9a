variable "name" {
  description = "Name of the cluster."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane (1.34)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the control plane's interfaces and the system nodes."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public API endpoint; empty: private endpoint only."
  type        = list(string)
}

variable "admin_role_arns" {
  description = "IAM roles given cluster-admin through EKS access entries."
  type        = list(string)
}

variable "system_instance_types" {
  description = "Instance types of the system node group."
  type        = list(string)
}

variable "system_node_count" {
  description = "Minimum, desired and maximum size of the system node group."
  type = object({
    min     = number
    desired = number
    max     = number
  })
}

variable "system_node_disk_gib" {
  description = "Root volume size of the system nodes, in GiB."
  type        = number
}

variable "log_retention_days" {
  description = "Days the control plane logs are kept."
  type        = number
}
