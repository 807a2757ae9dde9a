variable "name" {
  description = "Name of the installation, prefixed to every resource name."
  type        = string
}

variable "cluster_name" {
  description = "Name of the EKS cluster, tagged on the private subnets for Karpenter's discovery."
  type        = string
}

variable "cidr" {
  description = "CIDR block of the VPC (a /16)."
  type        = string
}

variable "availability_zones" {
  description = "Names of the availability zones to span (2 or 3)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway for every zone (cheaper, but a zone's outage cuts the others' egress)."
  type        = bool
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept."
  type        = number
}
