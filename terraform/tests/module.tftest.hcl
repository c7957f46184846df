# The module's logic with a mock AWS provider: `terraform test` (no credentials, no
# network). The apply against the S3 test server is scripts/terraform-test.sh.

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
}

variables {
  bucket_name            = "acme-lake"
  vpc_id                 = "vpc-0123"
  subnet_id              = "subnet-0123"
  ami_id                 = "ami-0123"
  sediment_binary_url    = "https://example.com/sediment"
  sediment_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "defaults_create_a_private_bucket_and_no_database" {
  command = plan

  assert {
    condition     = length(aws_s3_bucket.lake) == 1 && length(aws_s3_bucket_public_access_block.lake) == 1
    error_message = "the bucket and its public access block are created"
  }
  assert {
    condition     = aws_s3_bucket_public_access_block.lake[0].block_public_acls && aws_s3_bucket_public_access_block.lake[0].restrict_public_buckets
    error_message = "public access is blocked"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.lake[0].rule).apply_server_side_encryption_by_default).sse_algorithm == "AES256"
    error_message = "SSE-S3 without a KMS key"
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.lake[0].rule).abort_incomplete_multipart_upload[0].days_after_initiation == 7
    error_message = "incomplete multipart uploads are aborted after 7 days"
  }
  assert {
    condition     = length(aws_db_instance.catalog) == 0 && length(aws_security_group.catalog) == 0
    error_message = "no database without create_catalog_db"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.api) == 0
    error_message = "no API ingress without api_cidrs"
  }
  assert {
    condition     = strcontains(local.settings, "listen = \"127.0.0.1:8408\"")
    error_message = "with no API CIDRs the daemon listens on loopback"
  }
  assert {
    condition     = aws_instance.daemon.metadata_options[0].http_tokens == "required" && aws_instance.daemon.root_block_device[0].encrypted
    error_message = "IMDSv2 only, encrypted root volume"
  }
  assert {
    condition     = output.catalog_endpoint == null
    error_message = "no catalog endpoint with SQLite"
  }
}

run "the_role_touches_only_the_table_prefix" {
  command = plan

  variables {
    table_prefix = "lake/prod"
  }

  # The statements are the module's own (only the rendered json is the mock's; the
  # apply against the S3 test server checks the real document).
  assert {
    condition     = local.objects_arn == "arn:aws:s3:::acme-lake/lake/prod/*" && local.bucket_arn == "arn:aws:s3:::acme-lake"
    error_message = "objects under the prefix only"
  }
  assert {
    condition     = length(one([for s in data.aws_iam_policy_document.lake.statement : s if s.sid == "ListTheTables"]).condition) == 1
    error_message = "listing is limited to the prefix"
  }
  assert {
    condition = toset(one([for s in data.aws_iam_policy_document.lake.statement : s if s.sid == "ReadWriteTieringOfTableFiles"]).actions) == toset([
      "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:RestoreObject", "s3:AbortMultipartUpload",
    ])
    error_message = "only the object actions Sediment uses"
  }
  assert {
    condition     = alltrue(flatten([for s in data.aws_iam_policy_document.lake.statement : [for r in s.resources : startswith(r, "arn:aws:s3:::acme-lake")]]))
    error_message = "every resource is the bucket or under it"
  }
  assert {
    condition     = output.lake_root == "s3://acme-lake/lake/prod"
    error_message = "the lake root has the prefix"
  }
}

run "an_existing_bucket_is_not_created" {
  command = plan

  variables {
    create_bucket = false
  }

  assert {
    condition     = length(aws_s3_bucket.lake) == 0 && length(aws_s3_bucket_lifecycle_configuration.lake) == 0
    error_message = "nothing of the bucket is created"
  }
  assert {
    condition     = output.bucket == "acme-lake"
    error_message = "the existing bucket is the output"
  }
}

run "a_postgres_catalog_reachable_only_from_the_daemon" {
  command = plan

  variables {
    create_catalog_db  = true
    db_subnet_ids      = ["subnet-a", "subnet-b"]
    api_cidrs          = ["10.0.0.0/16", "2001:db8::/32"]
    admin_token_sha256 = ["5d41402abc4b2a76b9719d911017c592ae8e7d4d8d39b4a0cdf2d3c5b7f84d8b"]
    tables = [
      { name = "raw.events", layer = "bronze" },
      { name = "sales.orders", layer = "silver", location = "s3://other/orders", owner = "sales" },
    ]
  }

  assert {
    condition     = length(aws_db_instance.catalog) == 1 && aws_db_instance.catalog[0].storage_encrypted && !aws_db_instance.catalog[0].publicly_accessible
    error_message = "an encrypted, private PostgreSQL"
  }
  assert {
    condition     = aws_db_instance.catalog[0].manage_master_user_password
    error_message = "the password lives in Secrets Manager, not in the state or the user data"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.catalog[0].from_port == 5432 && aws_vpc_security_group_ingress_rule.catalog[0].cidr_ipv4 == null
    error_message = "PostgreSQL from the daemon's security group only"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.api) == 2 && aws_vpc_security_group_ingress_rule.api["2001:db8::/32"].cidr_ipv6 == "2001:db8::/32"
    error_message = "one API rule per CIDR, IPv6 too"
  }
  assert {
    condition     = strcontains(local.settings, "listen = \"0.0.0.0:8408\"") && strcontains(local.settings, "role = \"admin\"")
    error_message = "an API open to CIDRs listens on all addresses, with tokens"
  }
  assert {
    condition     = strcontains(local.settings, "location = \"s3://acme-lake/raw/events\"") && strcontains(local.settings, "location = \"s3://other/orders\"")
    error_message = "table locations default under the lake root"
  }
}

run "an_open_api_without_tokens_is_refused" {
  command = plan

  variables {
    api_cidrs = ["10.0.0.0/16"]
  }

  expect_failures = [aws_instance.daemon]
}

run "a_postgres_catalog_needs_two_subnets" {
  command = plan

  variables {
    create_catalog_db = true
    db_subnet_ids     = ["subnet-a"]
  }

  expect_failures = [aws_db_subnet_group.catalog]
}

run "bad_variables_are_refused" {
  command = plan

  variables {
    api_port               = 70000
    sediment_binary_sha256 = "not-a-hash"
    memory_budget          = "lots"
    tables                 = [{ name = "events", layer = "platinum" }]
  }

  expect_failures = [var.api_port, var.sediment_binary_sha256, var.memory_budget, var.tables]
}
