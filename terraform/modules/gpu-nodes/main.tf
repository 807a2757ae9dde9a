# GPU nodes on demand: Karpenter (its controller role through EKS Pod Identity, the role
# of the nodes it launches, the queue of EC2 interruption events), an EC2NodeClass and
# one NodePool per diffleet GPU pool, carrying the labels and the taint that GPUPools
# select, and the NVIDIA device plugin, which advertises nvidia.com/gpu on those nodes.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  ec2_arn    = "arn:${local.partition}:ec2:${local.region}"
  # What every node Karpenter launches is tagged with, and what its role may act on.
  owned_tag = "aws:ResourceTag/kubernetes.io/cluster/${var.cluster_name}"
  # What launching an instance creates, which Karpenter creates and tags as this cluster's.
  launched_resources = [
    for type in ["fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request"] :
    "${local.ec2_arn}:*:${type}/*"
  ]
}

# ---------------------------------------------------------------- nodes' role

module "node_role" {
  source = "../node-role"

  name_prefix = "${var.cluster_name}-gpu-"
}

# Lets the nodes Karpenter launches join the cluster.
resource "aws_eks_access_entry" "node" {
  cluster_name  = var.cluster_name
  principal_arn = module.node_role.arn
  type          = "EC2_LINUX"
}

# ---------------------------------------------------------------- interruption queue

# EC2 tells of Spot interruptions, rebalance recommendations, scheduled maintenance and
# instance state changes here; Karpenter drains the node ahead of them.
resource "aws_sqs_queue" "interruption" {
  name                      = "${var.cluster_name}-karpenter-interruption"
  message_retention_seconds = 300
  sqs_managed_sse_enabled   = true
}

data "aws_iam_policy_document" "interruption_queue" {
  statement {
    sid       = "EventBridgeSends"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.interruption.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "sqs.amazonaws.com"]
    }
  }

  statement {
    sid       = "DenyHTTP"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.interruption.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "interruption" {
  queue_url = aws_sqs_queue.interruption.url
  policy    = data.aws_iam_policy_document.interruption_queue.json
}

locals {
  interruption_events = {
    health-scheduled-change = { source = ["aws.health"], detail-type = ["AWS Health Event"] }
    spot-interruption       = { source = ["aws.ec2"], detail-type = ["EC2 Spot Instance Interruption Warning"] }
    rebalance               = { source = ["aws.ec2"], detail-type = ["EC2 Instance Rebalance Recommendation"] }
    instance-state-change   = { source = ["aws.ec2"], detail-type = ["EC2 Instance State-change Notification"] }
  }
}

resource "aws_cloudwatch_event_rule" "interruption" {
  for_each = local.interruption_events

  name          = "${var.cluster_name}-${each.key}"
  event_pattern = jsonencode(each.value)
}

resource "aws_cloudwatch_event_target" "interruption" {
  for_each = local.interruption_events

  rule = aws_cloudwatch_event_rule.interruption[each.key].name
  arn  = aws_sqs_queue.interruption.arn
}

# ---------------------------------------------------------------- controller's role

data "aws_iam_policy_document" "pod_identity_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

# Karpenter's own policy (its CloudFormation reference), scoped to this cluster's tags.
data "aws_iam_policy_document" "controller" {
  statement {
    sid     = "RunInstancesOnSelectedResources"
    actions = ["ec2:RunInstances", "ec2:CreateFleet"]
    resources = [
      "${local.ec2_arn}::image/*",
      "${local.ec2_arn}::snapshot/*",
      "${local.ec2_arn}:*:security-group/*",
      "${local.ec2_arn}:*:subnet/*",
      "${local.ec2_arn}:*:capacity-reservation/*",
    ]
  }

  statement {
    sid       = "UseOwnLaunchTemplates"
    actions   = ["ec2:RunInstances", "ec2:CreateFleet"]
    resources = ["${local.ec2_arn}:*:launch-template/*"]
    condition {
      test     = "StringEquals"
      variable = local.owned_tag
      values   = ["owned"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:ResourceTag/karpenter.sh/nodepool"
      values   = ["*"]
    }
  }

  statement {
    sid       = "CreateTaggedResources"
    actions   = ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"]
    resources = local.launched_resources
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes.io/cluster/${var.cluster_name}"
      values   = ["owned"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/eks:eks-cluster-name"
      values   = [var.cluster_name]
    }
    condition {
      test     = "StringLike"
      variable = "aws:RequestTag/karpenter.sh/nodepool"
      values   = ["*"]
    }
  }

  statement {
    sid       = "TagOnCreation"
    actions   = ["ec2:CreateTags"]
    resources = local.launched_resources
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes.io/cluster/${var.cluster_name}"
      values   = ["owned"]
    }
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]
    }
  }

  statement {
    sid       = "TagOwnInstances"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:*:instance/*"]
    condition {
      test     = "StringEquals"
      variable = local.owned_tag
      values   = ["owned"]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
    }
  }

  statement {
    sid     = "DeleteOwnResources"
    actions = ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"]
    resources = [
      "${local.ec2_arn}:*:instance/*",
      "${local.ec2_arn}:*:launch-template/*",
    ]
    condition {
      test     = "StringEquals"
      variable = local.owned_tag
      values   = ["owned"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:ResourceTag/karpenter.sh/nodepool"
      values   = ["*"]
    }
  }

  statement {
    sid = "RegionalReads"
    actions = [
      "ec2:DescribeAvailabilityZones",
      "ec2:DescribeCapacityReservations",
      "ec2:DescribeImages",
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceTypeOfferings",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplates",
      "ec2:DescribePlacementGroups",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSpotPriceHistory",
      "ec2:DescribeSubnets",
    ]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.region]
    }
  }

  statement {
    sid       = "AmiParameters"
    actions   = ["ssm:GetParameter"]
    resources = ["arn:${local.partition}:ssm:${local.region}::parameter/aws/service/*"]
  }

  statement {
    sid       = "Prices"
    actions   = ["pricing:GetProducts"]
    resources = ["*"]
  }

  statement {
    sid       = "InterruptionQueue"
    actions   = ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]
    resources = [aws_sqs_queue.interruption.arn]
  }

  statement {
    sid       = "PassNodeRole"
    actions   = ["iam:PassRole"]
    resources = [module.node_role.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  statement {
    sid       = "CreateTaggedInstanceProfiles"
    actions   = ["iam:CreateInstanceProfile", "iam:TagInstanceProfile"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:instance-profile/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes.io/cluster/${var.cluster_name}"
      values   = ["owned"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/topology.kubernetes.io/region"
      values   = [local.region]
    }
  }

  statement {
    sid = "ManageOwnInstanceProfiles"
    actions = [
      "iam:AddRoleToInstanceProfile",
      "iam:RemoveRoleFromInstanceProfile",
      "iam:DeleteInstanceProfile",
      "iam:TagInstanceProfile",
    ]
    resources = ["arn:${local.partition}:iam::${local.account_id}:instance-profile/*"]
    condition {
      test     = "StringEquals"
      variable = local.owned_tag
      values   = ["owned"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/topology.kubernetes.io/region"
      values   = [local.region]
    }
  }

  statement {
    sid       = "ReadInstanceProfiles"
    actions   = ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:instance-profile/*"]
  }

  statement {
    sid       = "ApiServerEndpoint"
    actions   = ["eks:DescribeCluster"]
    resources = ["arn:${local.partition}:eks:${local.region}:${local.account_id}:cluster/${var.cluster_name}"]
  }
}

resource "aws_iam_role" "controller" {
  name_prefix        = "${var.cluster_name}-karpenter-"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_assume.json
}

resource "aws_iam_role_policy" "controller" {
  role   = aws_iam_role.controller.id
  policy = data.aws_iam_policy_document.controller.json
}

resource "aws_eks_pod_identity_association" "controller" {
  cluster_name    = var.cluster_name
  namespace       = local.karpenter_namespace
  service_account = local.karpenter_service_account
  role_arn        = aws_iam_role.controller.arn
}

# ---------------------------------------------------------------- Karpenter

locals {
  karpenter_namespace       = "kube-system"
  karpenter_service_account = "karpenter"
}

resource "helm_release" "karpenter" {
  name       = "karpenter"
  namespace  = local.karpenter_namespace
  repository = "oci://public.ecr.aws/karpenter"
  chart      = "karpenter"
  version    = var.karpenter_version
  wait       = true
  timeout    = 600

  values = [yamlencode({
    replicas       = 2
    serviceAccount = { name = local.karpenter_service_account }
    settings = {
      clusterName       = var.cluster_name
      interruptionQueue = aws_sqs_queue.interruption.name
    }
    # On the system nodes, never on a node it launched itself.
    nodeSelector = var.system_node_selector
    controller = {
      resources = {
        requests = { cpu = "500m", memory = "1Gi" }
        limits   = { memory = "1Gi" }
      }
    }
  })]

  depends_on = [
    aws_eks_pod_identity_association.controller,
    aws_iam_role_policy.controller,
  ]
}

# ---------------------------------------------------------------- node pools

locals {
  gpu_taint = { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" }

  node_class = {
    apiVersion = "karpenter.k8s.aws/v1"
    kind       = "EC2NodeClass"
    metadata   = { name = "gpu" }
    spec = {
      role = module.node_role.name
      # The al2023 alias picks the NVIDIA variant (driver and container toolkit
      # installed) for GPU instance types.
      amiSelectorTerms           = [{ alias = var.node_ami_alias }]
      subnetSelectorTerms        = [{ tags = { "karpenter.sh/discovery" = var.cluster_name } }]
      securityGroupSelectorTerms = [{ id = var.node_security_group_id }]
      metadataOptions = {
        httpEndpoint            = "enabled"
        httpProtocolIPv6        = "disabled"
        httpPutResponseHopLimit = 1
        httpTokens              = "required"
      }
      # The workers' model cache lives on the local NVMe disks of these instance types.
      instanceStorePolicy = "RAID0"
      blockDeviceMappings = [{
        deviceName = "/dev/xvda"
        ebs = {
          volumeSize          = "${var.node_root_volume_gib}Gi"
          volumeType          = "gp3"
          encrypted           = true
          deleteOnTermination = true
        }
      }]
    }
  }

  node_pools = [for name, pool in var.gpu_pools : {
    apiVersion = "karpenter.sh/v1"
    kind       = "NodePool"
    metadata   = { name = name }
    spec = {
      template = {
        metadata = {
          labels = {
            "diffleet.io/pool"       = name
            "nvidia.com/gpu.product" = pool.gpu_product
            "nvidia.com/gpu.memory"  = tostring(pool.gpu_memory_mib)
            # What NVIDIA's GPU feature discovery would set; the device plugin's default
            # affinity selects it.
            "nvidia.com/gpu.present" = "true"
          }
        }
        spec = {
          nodeClassRef = { group = "karpenter.k8s.aws", kind = "EC2NodeClass", name = "gpu" }
          taints       = [local.gpu_taint]
          requirements = [
            { key = "node.kubernetes.io/instance-type", operator = "In", values = pool.instance_types },
            { key = "karpenter.sh/capacity-type", operator = "In", values = pool.capacity_types },
            { key = "kubernetes.io/arch", operator = "In", values = ["amd64"] },
          ]
          expireAfter = var.node_expire_after
        }
      }
      disruption = {
        # Only empty nodes go: a busy worker is never moved to consolidate.
        consolidationPolicy = "WhenEmpty"
        consolidateAfter    = var.consolidate_after
      }
      limits = { "nvidia.com/gpu" = tostring(pool.max_gpus) }
    }
  }]
}

resource "helm_release" "node_pools" {
  name      = "diffleet-gpu-node-pools"
  namespace = local.karpenter_namespace
  chart     = "${path.module}/manifests-chart"

  values = [yamlencode({ manifests = concat([local.node_class], local.node_pools) })]

  depends_on = [helm_release.karpenter, aws_eks_access_entry.node]
}

# ---------------------------------------------------------------- device plugin

resource "helm_release" "nvidia_device_plugin" {
  name       = "nvidia-device-plugin"
  namespace  = "kube-system"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.nvidia_device_plugin_version

  values = [yamlencode({
    tolerations = [{ key = local.gpu_taint.key, operator = "Exists", effect = "NoSchedule" }]
  })]
}
