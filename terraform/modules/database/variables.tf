variable "name" {
  description = "Name of the installation, prefixed to every resource name."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the database (at least two zones)."
  type        = list(string)
}

variable "client_security_group_id" {
  description = "Security group allowed to connect (the cluster security group of the nodes)."
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL version (major.minor)."
  type        = string
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "allocated_storage_gib" {
  description = "Initial storage, in GiB."
  type        = number
}

variable "max_allocated_storage_gib" {
  description = "Storage autoscaling ceiling, in GiB."
  type        = number
}

variable "multi_az" {
  description = "A standby in a second zone."
  type        = bool
}

variable "backup_retention_days" {
  description = "Days automated backups are kept."
  type        = number
}

variable "database" {
  description = "Name of the API's database."
  type        = string
}

variable "username" {
  description = "Master user name."
  type        = string
}
