variable "name" {
  description = "Name prefix of every resource (and the Name tag)."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name: lowercase letters, digits and dashes, starting with a letter, at most 31 characters."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

# --- The bucket -------------------------------------------------------------------

variable "create_bucket" {
  description = "Create the lake bucket (encrypted, public access blocked, incomplete multipart uploads aborted). false: use the existing bucket_name."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "The lake bucket's name (created or existing)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name: 3 to 63 lowercase letters, digits, dots and dashes."
  }
}

variable "table_prefix" {
  description = "Where the tables live in the bucket (\"lake\" for s3://BUCKET/lake/...). The role may touch only this prefix; empty: the whole bucket."
  type        = string
  default     = ""

  validation {
    condition     = !startswith(var.table_prefix, "/") && !endswith(var.table_prefix, "/")
    error_message = "table_prefix: no leading or trailing slash (e.g. \"lake\" or \"lake/prod\")."
  }
}

variable "kms_key_arn" {
  description = "Encrypt the created bucket with this KMS key (SSE-KMS); null: SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which the bucket's lifecycle rule aborts incomplete multipart uploads."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days: at least 1."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a created bucket that still holds objects."
  type        = bool
  default     = false
}

# --- The instance -----------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC of the instance's security group."
  type        = string
}

variable "subnet_id" {
  description = "The subnet of the instance (it needs a route to S3: a NAT, or an S3 gateway endpoint)."
  type        = string
}

variable "ami_id" {
  description = "The instance's image: a systemd Linux with curl, sha256sum and (for a PostgreSQL catalog) the AWS CLI and python3, e.g. Amazon Linux 2023."
  type        = string
}

variable "instance_type" {
  description = "The instance's size. Two vCPUs and 4 GiB suit two workers."
  type        = string
  default     = "t3.medium"
}

variable "root_volume_gb" {
  description = "Root volume size (encrypted gp3)."
  type        = number
  default     = 20
}

variable "associate_public_ip" {
  description = "Give the instance a public address (the API URL output then uses it)."
  type        = bool
  default     = false
}

variable "sediment_binary_url" {
  description = "HTTPS URL of the `sediment` binary (linux, the instance's architecture) the instance installs at boot."
  type        = string

  validation {
    condition     = startswith(var.sediment_binary_url, "https://")
    error_message = "sediment_binary_url: an https:// URL."
  }
}

variable "sediment_binary_sha256" {
  description = "SHA-256 of that binary, checked before it is installed."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.sediment_binary_sha256))
    error_message = "sediment_binary_sha256: 64 lowercase hex digits."
  }
}

# --- The daemon -------------------------------------------------------------------

variable "api_port" {
  description = "The daemon's HTTP port."
  type        = number
  default     = 8408

  validation {
    condition     = var.api_port >= 1 && var.api_port <= 65535 && floor(var.api_port) == var.api_port
    error_message = "api_port: an integer from 1 to 65535."
  }
}

variable "api_cidrs" {
  description = "CIDR blocks allowed to reach the API port. Empty: nobody (the daemon then listens on loopback only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_cidrs : can(cidrhost(c, 0))])
    error_message = "api_cidrs: each an IPv4 or IPv6 CIDR block, e.g. 10.0.0.0/16."
  }
}

variable "admin_token_sha256" {
  description = "SHA-256 hashes (hex) of the admin tokens (printf %s \"$TOKEN\" | sha256sum). Hashes only: the tokens never reach Terraform's state."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.admin_token_sha256 : can(regex("^[0-9a-f]{64}$", h))])
    error_message = "admin_token_sha256: each 64 lowercase hex digits (a SHA-256, not the token)."
  }
}

variable "read_token_sha256" {
  description = "SHA-256 hashes (hex) of the read-only tokens."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.read_token_sha256 : can(regex("^[0-9a-f]{64}$", h))])
    error_message = "read_token_sha256: each 64 lowercase hex digits (a SHA-256, not the token)."
  }
}

variable "workers" {
  description = "Jobs the daemon runs at once."
  type        = number
  default     = 2

  validation {
    condition     = var.workers >= 1 && var.workers <= 64
    error_message = "workers: from 1 to 64."
  }
}

variable "memory_budget" {
  description = "Memory the daemon's jobs share, e.g. \"2GiB\"."
  type        = string
  default     = "2GiB"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$", var.memory_budget))
    error_message = "memory_budget: a size such as \"512MiB\" or \"2GiB\"."
  }
}

variable "tables" {
  description = "Tables registered when the daemon starts. location defaults to s3://BUCKET/PREFIX/<namespace>/<table>."
  type = list(object({
    name        = string
    layer       = string
    location    = optional(string)
    owner       = optional(string)
    description = optional(string)
  }))
  default = []

  validation {
    condition     = alltrue([for t in var.tables : contains(["bronze", "silver", "gold"], t.layer)])
    error_message = "tables[*].layer: bronze, silver or gold."
  }

  validation {
    condition     = alltrue([for t in var.tables : can(regex("^[a-z_][a-z0-9_]*\\.[a-z_][a-z0-9_]*$", t.name))])
    error_message = "tables[*].name: namespace.table, lowercase letters, digits and underscores."
  }
}

variable "extra_settings" {
  description = "TOML appended to the generated sediment.toml (policies, more storage profiles)."
  type        = string
  default     = ""
}

# --- The catalog ------------------------------------------------------------------

variable "create_catalog_db" {
  description = "Create a PostgreSQL (RDS) catalog, so several daemons can share it. false: the embedded SQLite catalog on the instance."
  type        = bool
  default     = false
}

variable "db_subnet_ids" {
  description = "Subnets (two or more, in different zones) of the RDS catalog."
  type        = list(string)
  default     = []
}

variable "db_instance_class" {
  description = "The RDS catalog's instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "The RDS catalog's storage in GiB."
  type        = number
  default     = 20
}

variable "db_deletion_protection" {
  description = "Protect the RDS catalog from deletion."
  type        = bool
  default     = true
}
