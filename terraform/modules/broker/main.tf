# RabbitMQ for the job queues: Amazon MQ in the private subnets, reachable only from the
# cluster's nodes, AMQP over TLS, its user's password generated here and kept in Secrets
# Manager.

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-rabbitmq-"
  description = "RabbitMQ of ${var.name}: from the cluster's nodes only"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "amqps" {
  security_group_id            = aws_security_group.this.id
  description                  = "AMQP over TLS from the cluster's nodes and pods"
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
}

resource "aws_vpc_security_group_ingress_rule" "management" {
  security_group_id            = aws_security_group.this.id
  description                  = "RabbitMQ management API (HTTPS) from the cluster's nodes and pods"
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}

# Amazon MQ refuses commas, colons and equals signs; letters and digits also keep the
# password verbatim in an amqps:// URL.
resource "random_password" "user" {
  length  = 32
  special = false
}

resource "aws_mq_broker" "this" {
  # checkov:skip=CKV_AWS_209: Amazon MQ for RabbitMQ encrypts at rest with AWS-owned keys only; customer managed keys are an ActiveMQ feature
  broker_name                = var.name
  engine_type                = "RabbitMQ"
  engine_version             = var.engine_version
  host_instance_type         = var.instance_type
  deployment_mode            = var.cluster_mode ? "CLUSTER_MULTI_AZ" : "SINGLE_INSTANCE"
  subnet_ids                 = var.cluster_mode ? var.subnet_ids : [var.subnet_ids[0]]
  security_groups            = [aws_security_group.this.id]
  publicly_accessible        = false
  auto_minor_version_upgrade = true
  apply_immediately          = false

  encryption_options {
    use_aws_owned_key = true
  }

  logs {
    general = true
  }

  maintenance_window_start_time {
    day_of_week = var.maintenance_day
    time_of_day = "03:00"
    time_zone   = "UTC"
  }

  user {
    username = var.username
    password = random_password.user.result
  }
}

module "secret_key" {
  source = "../kms-key"

  description = "${var.name}: RabbitMQ credentials in Secrets Manager"
}

resource "aws_secretsmanager_secret" "user" {
  # checkov:skip=CKV2_AWS_57: the broker user's password changes through this module (taint random_password.user, apply), which updates the broker and the secret together; a Secrets Manager rotation would leave the broker behind
  name_prefix = "${var.name}/rabbitmq-"
  description = "RabbitMQ user of ${var.name} (Amazon MQ)"
  kms_key_id  = module.secret_key.arn
}

resource "aws_secretsmanager_secret_version" "user" {
  secret_id = aws_secretsmanager_secret.user.id
  secret_string = jsonencode({
    username = var.username
    password = random_password.user.result
    url      = local.amqp_url
  })
}

locals {
  # amqps://b-<id>.mq.<region>.amazonaws.com:5671, the broker's own AMQP endpoint.
  amqp_endpoint = one([for endpoint in aws_mq_broker.this.instances[0].endpoints : endpoint if startswith(endpoint, "amqps://")])
  amqp_url      = "amqps://${var.username}:${random_password.user.result}@${trimprefix(local.amqp_endpoint, "amqps://")}/"
}
