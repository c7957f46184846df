output "api_url" {
  description = "The daemon's HTTP API (public address when associate_public_ip, else private)."
  value       = "http://${var.associate_public_ip ? aws_instance.daemon.public_ip : aws_instance.daemon.private_ip}:${var.api_port}"
}

output "bucket" {
  description = "The lake bucket."
  value       = var.create_bucket ? aws_s3_bucket.lake[0].id : var.bucket_name
}

output "lake_root" {
  description = "Where the tables live: s3://BUCKET[/PREFIX]."
  value       = local.lake_root
}

output "role_arn" {
  description = "The daemon's IAM role."
  value       = aws_iam_role.daemon.arn
}

output "instance_id" {
  description = "The daemon's EC2 instance."
  value       = aws_instance.daemon.id
}

output "catalog_endpoint" {
  description = "The PostgreSQL catalog's host:port, or null with the embedded SQLite catalog."
  value       = var.create_catalog_db ? aws_db_instance.catalog[0].endpoint : null
}

output "settings" {
  description = "The sediment.toml the instance runs with."
  value       = local.settings
}

output "user_data" {
  description = "The instance's first-boot script (no secrets: tokens are hashes, the catalog password stays in Secrets Manager)."
  value       = local.user_data
}
