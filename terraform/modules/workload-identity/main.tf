# One IAM role per diffleet component, given to its ServiceAccount through EKS Pod
# Identity, allowed only what the component does with each bucket:
#   operator  models: list, read (it verifies a model's files and digests)
#   api       models: multipart upload, delete (POST /v1/models:upload, undone on error);
#             outputs: read (the download URLs it signs), list, delete (diffleet-admin purge);
#             uploads: write, read, list, delete (input images; health check; purge)
#   worker    models: list, read (cold loads); uploads: read (input images);
#             outputs: write (results), read (a job may take an earlier output as input)

data "aws_region" "current" {}

locals {
  bucket_access = {
    operator = {
      models = ["s3:ListBucket", "s3:GetObject"]
    }
    api = {
      models  = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:DeleteObject"]
      outputs = ["s3:ListBucket", "s3:GetObject", "s3:DeleteObject"]
      uploads = ["s3:ListBucket", "s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    }
    worker = {
      models  = ["s3:ListBucket", "s3:GetObject"]
      outputs = ["s3:PutObject", "s3:GetObject"]
      uploads = ["s3:GetObject"]
    }
  }
  # s3:ListBucket applies to the bucket, every other action to its objects.
  writes = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "component" {
  for_each = local.bucket_access

  dynamic "statement" {
    for_each = { for bucket, actions in each.value : bucket => actions if contains(actions, "s3:ListBucket") }
    content {
      sid       = "List${title(statement.key)}"
      actions   = ["s3:ListBucket"]
      resources = [var.bucket_arns[statement.key]]
    }
  }

  dynamic "statement" {
    for_each = each.value
    content {
      sid       = "Objects${title(statement.key)}"
      actions   = [for action in statement.value : action if action != "s3:ListBucket"]
      resources = ["${var.bucket_arns[statement.key]}/*"]
    }
  }

  # The buckets' key, only through S3: reading needs Decrypt, writing GenerateDataKey too.
  statement {
    sid = "BucketKey"
    actions = concat(
      ["kms:Decrypt"],
      length(setintersection(flatten(values(each.value)), local.writes)) > 0 ? ["kms:GenerateDataKey"] : [],
    )
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "component" {
  for_each = local.bucket_access

  name_prefix        = "${var.name}-${each.key}-"
  description        = "diffleet ${each.key} (${var.namespace}/${var.service_accounts[each.key]}), EKS Pod Identity"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "component" {
  for_each = local.bucket_access

  name   = "buckets"
  role   = aws_iam_role.component[each.key].id
  policy = data.aws_iam_policy_document.component[each.key].json
}

resource "aws_eks_pod_identity_association" "component" {
  for_each = local.bucket_access

  cluster_name    = var.cluster_name
  namespace       = var.namespace
  service_account = var.service_accounts[each.key]
  role_arn        = aws_iam_role.component[each.key].arn
}
