# Sediment on AWS: the lake bucket, a least-privilege role, one EC2 instance running
# `sediment serve` under the repo's systemd unit, and optionally a PostgreSQL (RDS)
# catalog that several daemons can share. See README.md ("Deploying on AWS").

data "aws_partition" "current" {}

locals {
  tags       = merge({ "managed-by" = "terraform", "app" = "sediment" }, var.tags)
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  # The objects the role may touch: the table prefix, or the whole bucket.
  objects_arn = var.table_prefix == "" ? "${local.bucket_arn}/*" : "${local.bucket_arn}/${var.table_prefix}/*"
  lake_root   = var.table_prefix == "" ? "s3://${var.bucket_name}" : "s3://${var.bucket_name}/${var.table_prefix}"
  has_tokens  = length(var.admin_token_sha256) + length(var.read_token_sha256) > 0
  # Off loopback the daemon requires tokens; with no API CIDRs it stays on loopback.
  listen_host = length(var.api_cidrs) > 0 ? "0.0.0.0" : "127.0.0.1"

  tables = [for t in var.tables : merge(t, {
    location = coalesce(t.location, "${local.lake_root}/${replace(t.name, ".", "/")}")
  })]
}

# --- The bucket -------------------------------------------------------------------

resource "aws_s3_bucket" "lake" {
  count         = var.create_bucket ? 1 : 0
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "lake" {
  count                   = var.create_bucket ? 1 : 0
  bucket                  = aws_s3_bucket.lake[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  count  = var.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.lake[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  count  = var.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.lake[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

# Delta writers abandon multipart uploads when they crash; S3 bills their parts until
# they are aborted. Storage classes are Sediment's business (`sediment tier`), not a
# lifecycle rule's: rules by age cannot tell live files from tombstoned ones.
resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  count  = var.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.lake[0].id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }
}

# --- The role ---------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "daemon" {
  name               = "${var.name}-daemon"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

# Only what Sediment does: list the tables' prefix; read, write and delete their
# files; copy them in place with another storage class (CopyObject and UploadPartCopy
# are PutObject on the target and GetObject on the source); restore archived ones;
# abort its own failed multipart uploads. Nothing outside the bucket or prefix.
data "aws_iam_policy_document" "lake" {
  statement {
    sid       = "ListTheTables"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    dynamic "condition" {
      for_each = var.table_prefix == "" ? [] : [1]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [var.table_prefix, "${var.table_prefix}/*"]
      }
    }
  }

  statement {
    sid = "ReadWriteTieringOfTableFiles"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:RestoreObject",
      "s3:AbortMultipartUpload",
    ]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      sid       = "UseTheBucketKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }

  dynamic "statement" {
    for_each = var.create_catalog_db ? [1] : []
    content {
      sid       = "ReadTheCatalogPassword"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [aws_db_instance.catalog[0].master_user_secret[0].secret_arn]
    }
  }
}

resource "aws_iam_role_policy" "lake" {
  name   = "${var.name}-lake"
  role   = aws_iam_role.daemon.id
  policy = data.aws_iam_policy_document.lake.json
}

resource "aws_iam_instance_profile" "daemon" {
  name = "${var.name}-daemon"
  role = aws_iam_role.daemon.name
  tags = local.tags
}

# --- Network ----------------------------------------------------------------------

resource "aws_security_group" "daemon" {
  name        = "${var.name}-daemon"
  description = "Sediment daemon: the API port from the given CIDRs only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each          = toset(var.api_cidrs)
  security_group_id = aws_security_group.daemon.id
  description       = "Sediment API"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.daemon.id
  description       = "S3, the catalog, package mirrors"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# --- The catalog (optional) -------------------------------------------------------

resource "aws_security_group" "catalog" {
  count       = var.create_catalog_db ? 1 : 0
  name        = "${var.name}-catalog"
  description = "Sediment catalog: PostgreSQL from the daemon only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "catalog" {
  count                        = var.create_catalog_db ? 1 : 0
  security_group_id            = aws_security_group.catalog[0].id
  description                  = "PostgreSQL from the Sediment daemon"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.daemon.id
  tags                         = local.tags
}

resource "aws_db_subnet_group" "catalog" {
  count      = var.create_catalog_db ? 1 : 0
  name       = "${var.name}-catalog"
  subnet_ids = var.db_subnet_ids
  tags       = local.tags

  lifecycle {
    precondition {
      condition     = length(var.db_subnet_ids) >= 2
      error_message = "db_subnet_ids: a PostgreSQL catalog (create_catalog_db) needs two or more subnets in different zones."
    }
  }
}

resource "aws_db_instance" "catalog" {
  count                       = var.create_catalog_db ? 1 : 0
  identifier                  = "${var.name}-catalog"
  engine                      = "postgres"
  engine_version              = "15"
  instance_class              = var.db_instance_class
  allocated_storage           = var.db_allocated_storage
  storage_type                = "gp3"
  storage_encrypted           = true
  db_name                     = "sediment"
  username                    = "sediment"
  manage_master_user_password = true # kept in Secrets Manager, read by the instance at boot
  db_subnet_group_name        = aws_db_subnet_group.catalog[0].name
  vpc_security_group_ids      = [aws_security_group.catalog[0].id]
  publicly_accessible         = false
  deletion_protection         = var.db_deletion_protection
  skip_final_snapshot         = !var.db_deletion_protection
  final_snapshot_identifier   = var.db_deletion_protection ? "${var.name}-catalog-final" : null
  backup_retention_period     = 7
  tags                        = local.tags
}

# --- The instance -----------------------------------------------------------------

locals {
  settings = templatefile("${path.module}/sediment.toml.tftpl", {
    listen        = "${local.listen_host}:${var.api_port}"
    workers       = var.workers
    memory_budget = var.memory_budget
    admin_tokens  = var.admin_token_sha256
    read_tokens   = var.read_token_sha256
    tables        = local.tables
    extra         = var.extra_settings
  })

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    binary_url     = var.sediment_binary_url
    binary_sha256  = var.sediment_binary_sha256
    settings       = local.settings
    unit           = file("${path.module}/sediment.service")
    catalog_secret = var.create_catalog_db ? aws_db_instance.catalog[0].master_user_secret[0].secret_arn : ""
    catalog_host   = var.create_catalog_db ? aws_db_instance.catalog[0].address : ""
    catalog_env    = file("${path.module}/catalog-env.sh")
  })
}

resource "aws_instance" "daemon" {
  ami                         = var.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.daemon.id]
  iam_instance_profile        = aws_iam_instance_profile.daemon.name
  associate_public_ip_address = var.associate_public_ip
  user_data                   = local.user_data
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_gb
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${var.name}-daemon" })

  lifecycle {
    precondition {
      condition     = length(var.api_cidrs) == 0 || local.has_tokens
      error_message = "api_cidrs: an API reachable from the network needs tokens (admin_token_sha256 or read_token_sha256)."
    }
  }
}
