provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { "diffleet.io/installation" = var.name })
  }
}

# Both authenticate with a short-lived token from `aws eks get-token` (the AWS CLI must be
# on the PATH of whoever applies), so no long-lived cluster credential is stored anywhere.
provider "kubernetes" {
  host                   = module.eks.endpoint
  cluster_ca_certificate = base64decode(module.eks.certificate_authority)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes = {
    host                   = module.eks.endpoint
    cluster_ca_certificate = base64decode(module.eks.certificate_authority)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.name, "--region", var.region]
    }
  }
}
