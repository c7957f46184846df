# A root module for scripts/terraform-test.sh: the Sediment module applied, then
# destroyed, against the S3 test server (moto), with the AWS provider's endpoints
# pointed at it.

variable "endpoint" {
  type = string
}

variable "bucket" {
  type = string
}

variable "ami_id" {
  type = string
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_use_path_style           = true

  endpoints {
    ec2            = var.endpoint
    iam            = var.endpoint
    rds            = var.endpoint
    s3             = var.endpoint
    secretsmanager = var.endpoint
    sts            = var.endpoint
  }
}

data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

module "sediment" {
  source = "../.."

  name                   = "sediment-tftest"
  bucket_name            = var.bucket
  table_prefix           = "lake"
  force_destroy          = true
  vpc_id                 = data.aws_vpc.default.id
  subnet_id              = sort(data.aws_subnets.default.ids)[0]
  ami_id                 = var.ami_id
  sediment_binary_url    = "https://example.com/sediment"
  sediment_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
  api_cidrs              = ["10.0.0.0/16"]
  admin_token_sha256     = ["5d41402abc4b2a76b9719d911017c592ae8e7d4d8d39b4a0cdf2d3c5b7f84d8b"]
  tables                 = [{ name = "raw.events", layer = "bronze" }]
}

output "bucket" {
  value = module.sediment.bucket
}

output "role_arn" {
  value = module.sediment.role_arn
}

output "api_url" {
  value = module.sediment.api_url
}

output "settings" {
  value = module.sediment.settings
}

output "user_data" {
  value = module.sediment.user_data
}
