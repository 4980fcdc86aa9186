output "database_address" {
  description = "PostgreSQL host name."
  value       = aws_db_instance.this.address
}

output "database_port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_url" {
  description = "The PostgreSQL URL kms uses (password included), for operator commands such as `kms migrate status --db URL`."
  value       = local.database_url
  sensitive   = true
}

output "redis_primary_endpoint" {
  description = "Redis primary endpoint host name."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "redis_url" {
  description = "The Redis URL kms uses."
  value       = local.redis_url
  sensitive   = true
}

output "master_key_secret_arn" {
  description = "Secrets Manager secret holding the back-up copy of the master key."
  value       = aws_secretsmanager_secret.master_key.arn
}

output "kms_key_arn" {
  description = "The KMS key encrypting the database, Redis, logs and the master key copy."
  value       = aws_kms_key.this.arn
}

output "security_group_ids" {
  description = "Security groups of PostgreSQL and Redis."
  value = {
    postgres = aws_security_group.db.id
    redis    = aws_security_group.redis.id
  }
}

output "release" {
  description = "The Helm release: name, namespace, revision and the in-cluster URL of kms."
  value = {
    name      = helm_release.kms.name
    namespace = helm_release.kms.namespace
    revision  = helm_release.kms.metadata[0].revision
    url       = "http://${strcontains(var.release_name, "kms") ? var.release_name : "${var.release_name}-kms"}.${var.namespace}.svc:8080"
  }
}
