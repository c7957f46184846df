#!/usr/bin/env bash
# The Terraform module's checks, run by scripts/test.sh while the S3 test server is up
# (SEDIMENT_TEST_S3_ENDPOINT, SEDIMENT_TEST_PYTHON): `terraform fmt -check`,
# `validate`, `terraform test` (a mock provider: the module's logic), then `apply` and
# `destroy` of terraform/tests/moto against the S3 test server with the AWS provider's
# endpoints pointed at it, checking what exists in between (and that the sediment.toml
# the instance would get passes `sediment serve --check`, with SEDIMENT_BIN). Skips, saying so, where
# terraform or the machine's AWS provider mirror is missing (no provider can be
# downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v terraform >/dev/null 2>&1; then
  echo "== terraform: not installed; skipping the Terraform module's checks"
  exit 0
fi
mirror="$(find / -maxdepth 3 -type d -name registry.terraform.io 2>/dev/null | head -n 1 || true)"
if [ -z "$mirror" ] || [ ! -d "$mirror/hashicorp/aws" ]; then
  echo "== terraform: no local AWS provider mirror (registry.terraform.io/hashicorp/aws); skipping the Terraform module's checks"
  exit 0
fi
plugins="$(dirname "$mirror")"
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then unset TF_CLI_CONFIG_FILE; fi
if [ -z "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$HOME/.terraformrc" ]; then
  export TF_CLI_CONFIG_FILE=/dev/null
fi

# Work on a copy: no .terraform folders or state in the checkout.
work="$(mktemp -d -t sediment-terraform.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp -r terraform "$work/"
cd "$work/terraform"
quiet() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; return 1; }; }

echo "== terraform fmt -check, validate, test (mock provider)"
terraform fmt -check -recursive
quiet terraform init -backend=false -plugin-dir="$plugins"
quiet terraform validate
terraform test -no-color | grep -E '^\s*run |passed|failed' || { terraform test -no-color; exit 1; }

echo "== terraform apply and destroy against the S3 test server"
cd tests/moto
endpoint="${SEDIMENT_TEST_S3_ENDPOINT:?run through scripts/test.sh, which starts the S3 test server}"
python="${SEDIMENT_TEST_PYTHON:-python3}"
bucket="sediment-tftest-$$"
ami="$("$python" - "$endpoint" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
print(sorted(i["ImageId"] for i in ec2.describe_images()["Images"])[0])
PY
)"
vars=(-var "endpoint=$endpoint" -var "bucket=$bucket" -var "ami_id=$ami")
quiet terraform init -plugin-dir="$plugins"
quiet terraform apply -auto-approve -no-color "${vars[@]}"
role="$(terraform output -raw role_arn)"
# The first-boot script parses; the sediment.toml the instance would get is one the
# daemon accepts.
terraform output -raw user_data >"$work/user_data.sh"
bash -n "$work/user_data.sh"
terraform output -raw settings >"$work/sediment.toml"
if [ -x "${SEDIMENT_BIN:-}" ]; then
  AWS_REGION=us-east-1 "$SEDIMENT_BIN" serve --check --config "$work/sediment.toml" | sed 's/^/   /' ||
    { echo "the rendered sediment.toml is refused:"; cat "$work/sediment.toml"; exit 1; }
else
  echo "   (SEDIMENT_BIN not built: the rendered sediment.toml is not checked)"
fi
"$python" - "$endpoint" "$bucket" "$role" <<'PY'
import json, sys, urllib.parse, boto3
endpoint, bucket, role_arn = sys.argv[1:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
s3, iam = boto3.client("s3", **kw), boto3.client("iam", **kw)
s3.head_bucket(Bucket=bucket)
rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 7 for r in rules), rules
block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
assert all(block.values()), block
enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
assert enc[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", enc
role = role_arn.split("/")[-1]
names = iam.list_role_policies(RoleName=role)["PolicyNames"]
assert names, "the role has its policy"
resources = []
for name in names:
    doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(urllib.parse.unquote(doc))
    for statement in doc["Statement"]:
        r = statement["Resource"]
        resources += r if isinstance(r, list) else [r]
        actions = statement["Action"]
        actions = actions if isinstance(actions, list) else [actions]
        assert all(a.startswith("s3:") for a in actions), actions
        assert not any("*" in a for a in actions), actions
assert resources and all(r in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/lake/*") for r in resources), resources
print(f"   bucket {bucket}: lifecycle rule, public access block, SSE; role {role}: only {sorted(set(resources))}")
PY
quiet terraform destroy -auto-approve -no-color "${vars[@]}"
"$python" - "$endpoint" "$bucket" <<'PY'
import sys, boto3, botocore
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
try:
    s3.head_bucket(Bucket=sys.argv[2])
    sys.exit(f"bucket {sys.argv[2]} still exists after destroy")
except botocore.exceptions.ClientError:
    pass
PY
echo "   applied and destroyed"
