# A customer managed KMS key, rotated yearly, whose key policy keeps AWS's default account
# statement (IAM policies of this account grant use of the key; without it nobody can) and
# lets the services in var.service_users use it, each under its own conditions.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "this" {
  # A key policy: "*" is this key.
  # checkov:skip=CKV_AWS_109: a key policy's resource is the key itself; the account's administrators must be able to manage it
  # checkov:skip=CKV_AWS_111: a key policy's resource is the key itself; use of it is granted by the scoped IAM policies of the roles that need it
  # checkov:skip=CKV_AWS_356: a key policy's resource "*" means this key and nothing else
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = var.service_users
    content {
      sid = statement.key
      actions = [
        "kms:Encrypt*",
        "kms:Decrypt*",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
        "kms:Describe*",
      ]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = [statement.value.service]
      }
      dynamic "condition" {
        for_each = statement.value.conditions
        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.this.json
}
