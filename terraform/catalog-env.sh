#!/bin/bash
# Writes /etc/sediment/environment: AWS_REGION from the instance metadata and, when the
# deployment has a PostgreSQL catalog, SEDIMENT_CATALOG with the password RDS keeps in
# Secrets Manager. Runs before every start of the daemon (ExecStartPre), so a restart
# picks up a rotated password. Usage: catalog-env.sh [SECRET_ARN HOST]
set -euo pipefail
secret_arn="${1:-}"
host="${2:-}"
imds=http://169.254.169.254/latest
token=$(curl -fsS -X PUT "$imds/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/placement/region")
out=$(mktemp /etc/sediment/environment.XXXXXX)
echo "AWS_REGION=$region" >"$out"
if [ -n "$secret_arn" ]; then
  secret=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$secret_arn" --query SecretString --output text)
  python3 - "$secret" "$host" >>"$out" <<'PY'
import json, sys, urllib.parse
secret, host = json.loads(sys.argv[1]), sys.argv[2]
user = urllib.parse.quote(secret["username"], safe="")
password = urllib.parse.quote(secret["password"], safe="")
print(f"SEDIMENT_CATALOG=postgres://{user}:{password}@{host}:5432/sediment?sslmode=require")
PY
fi
chown root:sediment "$out"
chmod 0640 "$out"
mv "$out" /etc/sediment/environment
