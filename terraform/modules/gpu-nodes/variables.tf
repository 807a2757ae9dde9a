variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "node_security_group_id" {
  description = "Security group of the GPU nodes (the cluster security group)."
  type        = string
}

variable "system_node_selector" {
  description = "Labels of the system nodes, where the Karpenter controller runs."
  type        = map(string)
}

variable "karpenter_version" {
  description = "Version of Karpenter's Helm chart (oci://public.ecr.aws/karpenter/karpenter)."
  type        = string
}

variable "nvidia_device_plugin_version" {
  description = "Version of the NVIDIA device plugin's Helm chart."
  type        = string
}

variable "node_ami_alias" {
  description = "AMI alias of the GPU nodes (al2023@latest, or al2023@v<date> to pin one release)."
  type        = string
}

variable "node_root_volume_gib" {
  description = "Root volume size of a GPU node, in GiB (images; the model cache uses instance store)."
  type        = number
}

variable "node_expire_after" {
  description = "Age at which Karpenter replaces a GPU node (a Go duration, or Never)."
  type        = string
}

variable "consolidate_after" {
  description = "How long a GPU node stays empty before Karpenter removes it (a Go duration)."
  type        = string
}

variable "gpu_pools" {
  description = "GPU pools by name: the NodePool of each (see the root module's gpu_pools)."
  type = map(object({
    gpu_product    = string
    gpu_memory_mib = number
    instance_types = list(string)
    capacity_types = list(string)
    max_gpus       = number
  }))
}
