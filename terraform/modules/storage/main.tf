# The three buckets of an installation (models, outputs, uploads), encrypted with a key of
# their own, closed to the public, TLS only, logged to an access-log bucket; outputs and
# uploads expire after their retention.

data "aws_caller_identity" "current" {}

locals {
  buckets = {
    # Model weights: written by the API's model uploads and by the SRE, read by the
    # operator (verification) and the workers. Versioned: an overwritten or deleted
    # checkpoint can be recovered.
    models = { versioned = true, expire_days = null }
    # Generated images, signed for download by the API; kept var.outputs_retention_days.
    outputs = { versioned = false, expire_days = var.outputs_retention_days }
    # Input images of img2img/inpainting jobs, kept as long as the outputs made from them.
    uploads = { versioned = false, expire_days = var.uploads_retention_days }
  }
}

module "buckets_key" {
  source = "../kms-key"

  description = "${var.name}: S3 buckets (models, outputs, uploads)"
}

resource "aws_kms_alias" "buckets" {
  name          = "alias/${var.name}-buckets"
  target_key_id = module.buckets_key.id
}

# ---------------------------------------------------------------- access logs

resource "aws_s3_bucket" "access_logs" {
  # checkov:skip=CKV_AWS_144: access logs are not worth a second region's copy; the data buckets' owners decide on replication
  # checkov:skip=CKV2_AWS_62: nothing consumes events of access-log objects
  # checkov:skip=CKV_AWS_145: S3 server access logging delivers only to buckets encrypted with SSE-S3, not SSE-KMS
  bucket_prefix = "${var.name}-access-logs-"
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3LogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  statement {
    sid       = "DenyHTTP"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
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

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# ---------------------------------------------------------------- data buckets

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_144: cross-region replication is a disaster-recovery choice (a second region, its cost) left to the SRE; outputs and uploads are short-lived by design
  # checkov:skip=CKV2_AWS_62: the platform reads the buckets on demand and consumes no S3 event notifications
  # checkov:skip=CKV_AWS_21: models is versioned (aws_s3_bucket_versioning below; checkov cannot resolve its per-bucket status); outputs and uploads are write-once and expire, and versioning would keep purged tenant data
  for_each = local.buckets

  bucket        = "${var.bucket_prefix}-${each.key}"
  force_destroy = false
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = local.buckets

  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.buckets_key.arn
    }
    # One KMS request per bucket and hour instead of one per object (workers read
    # thousands of model files).
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = each.value.versioned ? "Enabled" : "Disabled"
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each = local.buckets

  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  dynamic "rule" {
    for_each = each.value.expire_days == null ? [] : [each.value.expire_days]
    content {
      id     = "retention"
      status = "Enabled"
      filter {}
      expiration {
        days = rule.value
      }
    }
  }

  dynamic "rule" {
    for_each = each.value.versioned ? [var.models_noncurrent_retention_days] : []
    content {
      id     = "noncurrent-versions"
      status = "Enabled"
      filter {}
      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.buckets

  statement {
    sid       = "DenyHTTP"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
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

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  policy = data.aws_iam_policy_document.bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}
