variable "name" {
  description = "Name of the broker."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the broker."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the broker (the first only, for a single instance)."
  type        = list(string)
}

variable "client_security_group_id" {
  description = "Security group allowed to connect (the cluster security group of the nodes)."
  type        = string
}

variable "engine_version" {
  description = "RabbitMQ engine version of Amazon MQ."
  type        = string
}

variable "instance_type" {
  description = "Broker instance type (mq.m5.large, ...)."
  type        = string
}

variable "cluster_mode" {
  description = "Three nodes across zones (CLUSTER_MULTI_AZ) instead of one."
  type        = bool
}

variable "maintenance_day" {
  description = "Day of the weekly maintenance window (03:00 UTC)."
  type        = string
}

variable "username" {
  description = "Name of the broker's user."
  type        = string
}
