# kms on AWS: an RDS PostgreSQL 15 database, an ElastiCache Redis 7 replication group and
# the kms Helm release on an existing Kubernetes cluster (EKS) in the same VPC.
#
# The caller configures the aws and helm providers (see README.md); this module
# configures none.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  tags         = merge({ "app.kubernetes.io/name" = "kms", "managed-by" = "terraform" }, var.tags)
  chart_path   = coalesce(var.chart_path, "${path.module}/../helm/kms")
  db_port      = 5432
  redis_port   = 6379
  db_name      = "kms"
  db_username  = "kms"
  db_log_group = "/aws/rds/instance/${var.name}/postgresql"
  master_key   = var.master_key != null ? var.master_key : random_bytes.master_key.base64
  database_url = "postgres://${local.db_username}:${random_password.db.result}@${aws_db_instance.this.address}:${local.db_port}/${local.db_name}"
  redis_url = (
    var.redis_transit_encryption
    ? "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:${local.redis_port}/0"
    : "redis://${aws_elasticache_replication_group.this.primary_endpoint_address}:${local.redis_port}/0"
  )
}

# --- encryption key ----------------------------------------------------------------------

data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_109: a KMS key policy must let the account administer the key; IAM policies then narrow it
  # checkov:skip=CKV_AWS_111: same: the account root statement of a key policy, resources "*" means this key
  # checkov:skip=CKV_AWS_356: in a key policy, resources "*" means this key only
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncrypts"
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
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: encrypts the kms database, Redis, logs and the master key backup"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# --- secrets -------------------------------------------------------------------------------

resource "random_password" "db" {
  length  = 32
  special = false # it goes into a URL as it is
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "random_bytes" "master_key" {
  length = 32
}

# A copy of the master key, apart from the database (docs/runbooks/master-key.md): with
# the database alone, no access token can be issued.
resource "aws_secretsmanager_secret" "master_key" {
  # checkov:skip=CKV2_AWS_57: kms has no master-key rotation: the key seals the signing keys in the database, and replacing it is the compromised-key procedure of docs/runbooks/master-key.md, not a scheduled rotation
  name                    = "${var.name}/master-key"
  description             = "kms master key (base64 of 32 bytes): the same on every node; back-up copy"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 30
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "master_key" {
  secret_id     = aws_secretsmanager_secret.master_key.id
  secret_string = local.master_key
}

# --- PostgreSQL ------------------------------------------------------------------------------

resource "aws_security_group" "db" {
  name        = "${var.name}-postgres"
  description = "kms PostgreSQL: reachable from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "db" {
  for_each                     = toset(var.client_security_group_ids)
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the kms nodes (${each.value})"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.db_port
  to_port                      = local.db_port
}

resource "aws_db_subnet_group" "this" {
  name        = var.name
  description = "kms PostgreSQL subnets"
  subnet_ids  = var.private_subnet_ids
  tags        = local.tags
}

resource "aws_db_parameter_group" "this" {
  name        = "${var.name}-postgres15"
  family      = "postgres15"
  description = "kms: slow and DDL statements logged, never their parameters (they carry hashes and sealed keys)"
  tags        = local.tags

  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_parameter_max_length"
    value = "0"
  }
  parameter {
    name  = "log_parameter_max_length_on_error"
    value = "0"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }
}

resource "aws_cloudwatch_log_group" "db" {
  for_each          = toset(["postgresql", "upgrade"])
  name              = "/aws/rds/instance/${var.name}/${each.value}"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  # checkov:skip=CKV2_AWS_69: kms's PostgreSQL client has no TLS yet (docs/adr/0010-postgresql-store.md), so rds.force_ssl would lock it out; the database is in private subnets, reachable only from the cluster's security groups
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this.arn

  db_name  = local.db_name
  username = local.db_username
  password = random_password.db.result
  port     = local.db_port

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.db_deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"
  delete_automated_backups  = false

  auto_minor_version_upgrade          = true
  allow_major_version_upgrade         = false
  apply_immediately                   = false
  iam_database_authentication_enabled = true

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  tags = local.tags

  depends_on = [aws_cloudwatch_log_group.db, aws_iam_role_policy_attachment.rds_monitoring]
}

# --- Redis -----------------------------------------------------------------------------------

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "kms Redis: reachable from the cluster only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each                     = toset(var.client_security_group_ids)
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from the kms nodes (${each.value})"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
}

resource "aws_elasticache_subnet_group" "this" {
  name        = var.name
  description = "kms Redis subnets"
  subnet_ids  = var.private_subnet_ids
  tags        = local.tags
}

resource "aws_cloudwatch_log_group" "redis" {
  name              = "/aws/elasticache/${var.name}/slow-log"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

resource "aws_elasticache_replication_group" "this" {
  # checkov:skip=CKV_AWS_30: kms's Redis client speaks plain redis:// only (redis crate without TLS features); set redis_transit_encryption once it supports rediss://. Redis holds counters only (rate limits, lockouts, nonces), in private subnets reachable only from the cluster
  # checkov:skip=CKV_AWS_31: an AUTH token needs transit encryption (see CKV_AWS_30); it is set when redis_transit_encryption is on
  replication_group_id = var.name
  description          = "kms: shared rate limits, lockout counters and request-signing nonces"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = local.redis_port
  parameter_group_name = "default.redis7"
  num_cache_clusters   = var.redis_num_cache_clusters

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.redis.id]

  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = var.redis_transit_encryption
  auth_token                 = var.redis_transit_encryption ? random_password.redis.result : null

  auto_minor_version_upgrade = true
  apply_immediately          = false
  maintenance_window         = "sun:04:30-sun:05:30"
  snapshot_retention_limit   = 1
  snapshot_window            = "01:00-02:00"

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = local.tags
}

# --- the kms release ---------------------------------------------------------------------

resource "helm_release" "kms" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = true
  chart            = local.chart_path

  # Every pod must become ready (/readyz) within the timeout, else Helm rolls the release
  # back to the previous revision.
  wait          = true
  atomic        = true
  timeout       = var.helm_timeout
  max_history   = 10
  recreate_pods = false

  values = concat([
    yamlencode({
      image = {
        repository = var.image_repository
        tag        = var.image_tag
        digest     = var.image_digest
      }
      redis = {
        url = var.redis_transit_encryption ? "" : local.redis_url
      }
      autoscaling = {
        enabled     = true
        minReplicas = var.min_replicas
        maxReplicas = var.max_replicas
      }
      networkPolicy = {
        databaseEgressTo = [{ ipBlock = { cidr = data.aws_vpc.this.cidr_block } }]
        databasePorts    = [local.db_port, local.redis_port]
      }
    }),
  ], var.helm_values)

  set_sensitive {
    name  = "secret.masterKey"
    value = local.master_key
  }

  set_sensitive {
    name  = "secret.databaseUrl"
    value = local.database_url
  }

  # With TLS the Redis URL carries the AUTH token: into kms.toml, not the ConfigMap.
  set_sensitive {
    name  = "secret.extraToml"
    value = var.redis_transit_encryption ? "redis = \"${local.redis_url}\"\n" : ""
  }
}
