variable "name" {
  description = "Name prefix of every resource (RDS instance, ElastiCache group, KMS alias, secret)."
  type        = string
  default     = "kms"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2 to 31 of [a-z0-9-], starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}

# --- network ---------------------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC of the Kubernetes cluster; PostgreSQL and Redis are placed in it."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two, in different availability zones) for PostgreSQL and Redis."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids: at least two subnets, in different availability zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach PostgreSQL (5432) and Redis (6379): the cluster's node or pod security groups."
  type        = list(string)

  validation {
    condition     = length(var.client_security_group_ids) >= 1
    error_message = "client_security_group_ids: at least one security group."
  }
}

# --- PostgreSQL (RDS) ------------------------------------------------------------------

variable "db_engine_version" {
  description = "PostgreSQL engine version (major 15, the version kms is tested on)."
  type        = string
  default     = "15"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial storage, GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling, GiB."
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "A standby in another availability zone (failover in about a minute)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days: 1 to 35."
  }
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (turn off, apply, then destroy)."
  type        = bool
  default     = true
}

# --- Redis (ElastiCache) ---------------------------------------------------------------

variable "redis_engine_version" {
  description = "Redis engine version (7.x)."
  type        = string
  default     = "7.1"
}

variable "redis_node_type" {
  description = "ElastiCache node type. Redis holds only counters (rate limits, lockouts, nonces): small is enough."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_num_cache_clusters" {
  description = "Redis nodes: one primary and replicas (2 or more for automatic failover)."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_num_cache_clusters >= 2
    error_message = "redis_num_cache_clusters: at least 2, for automatic failover."
  }
}

variable "redis_transit_encryption" {
  description = "TLS between kms and Redis (rediss:// and an AUTH token). kms's Redis client speaks plain redis:// only for now: leave false until it supports rediss://."
  type        = bool
  default     = false
}

# --- the Helm release ------------------------------------------------------------------

variable "namespace" {
  description = "Kubernetes namespace of the release (created when missing)."
  type        = string
  default     = "kms"
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "kms"
}

variable "chart_path" {
  description = "Path of the kms chart; defaults to the chart beside this module."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "The kms image repository (built from kms-server/deploy/docker/Dockerfile), e.g. an ECR repository URL."
  type        = string
}

variable "image_tag" {
  description = "The kms image tag; empty: the chart's appVersion."
  type        = string
  default     = ""
}

variable "image_digest" {
  description = "The kms image digest (sha256:...); when set the image is pulled by digest."
  type        = string
  default     = ""
}

variable "min_replicas" {
  description = "Fewest kms nodes (HorizontalPodAutoscaler)."
  type        = number
  default     = 3
}

variable "max_replicas" {
  description = "Most kms nodes (HorizontalPodAutoscaler)."
  type        = number
  default     = 10
}

variable "master_key" {
  description = "The kms master key, base64 of 32 bytes. Null: one is generated (and kept in the Terraform state and in Secrets Manager). Once used, never change it."
  type        = string
  default     = null
  sensitive   = true
}

variable "helm_values" {
  description = "More values for the chart, as YAML documents (applied after this module's own)."
  type        = list(string)
  default     = []
}

variable "helm_timeout" {
  description = "Seconds Helm waits for every pod to be ready before it rolls the release back."
  type        = number
  default     = 600
}
