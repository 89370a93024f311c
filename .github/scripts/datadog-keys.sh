#!/usr/bin/env bash
# Gives Terraform's Datadog provider its keys for one environment: reads them from Secret Manager
# with the job's own short-lived identity and appends DD_API_KEY and DD_APP_KEY to $GITHUB_ENV,
# masked in the log. No Datadog key is stored in GitHub.
#   challenge-latam-datadog-api-key-<env>   (also the sidecar's DD_API_KEY)
#   challenge-latam-datadog-app-key-<env>   (the provider's application key)
# With ENABLE_DATADOG=false (the GitHub variable; keep it equal to enable_datadog in the
# environment's terraform/envs/app/<env>.tfvars) the provider needs no keys and nothing is read.
#
#   GCP_PROJECT_ID=... datadog-keys.sh dev
set -euo pipefail
env=${1:?usage: datadog-keys.sh ENV}
: "${GCP_PROJECT_ID:?}"

if [ "${ENABLE_DATADOG:-true}" = false ]; then
  echo "Datadog is not managed by Terraform in $env (ENABLE_DATADOG=false): no keys read"
  exit 0
fi
for pair in "DD_API_KEY=challenge-latam-datadog-api-key-$env" "DD_APP_KEY=challenge-latam-datadog-app-key-$env"; do
  name=${pair%%=*}
  secret=${pair#*=}
  value=$(gcloud secrets versions access latest --project "$GCP_PROJECT_ID" --secret "$secret")
  [ -n "$value" ] || { echo "the secret $secret is empty" >&2; exit 1; }
  echo "::add-mask::$value"
  if [ -n "${GITHUB_ENV:-}" ]; then
    printf '%s=%s\n' "$name" "$value" >>"$GITHUB_ENV"
  fi
  echo "$name: read from $secret"
done
