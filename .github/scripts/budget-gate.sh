#!/usr/bin/env bash
# The error-budget gate (scripts/release/budget_gate.py) on Cloud Monitoring for one environment,
# with the job's Google identity (google-github-actions/auth ran before; the <env>-readonly
# identity's roles/viewer reads the service's SLOs and their time series). The SLOs and page tiers
# it judges by are the generated alerts/cloud-monitoring/challenge-latam-api.json, the same the
# Terraform alert policies are made of. docs/ci-cd.md, "The error-budget gate".
#
#   GCP_PROJECT_ID=... budget-gate.sh check|report|watch ENV [budget_gate.py options]
set -euo pipefail
usage="usage: budget-gate.sh check|report|watch dev|prod [options]"
command=${1:?$usage}
env=${2:?$usage}
shift 2
: "${GCP_PROJECT_ID:?}"
case "$env" in dev | prod) ;; *) echo "unknown environment: $env" >&2; exit 2 ;; esac

token=$(gcloud auth print-access-token)
echo "::add-mask::$token"
GCP_ACCESS_TOKEN=$token exec python3 scripts/release/budget_gate.py "$command" --source cloud-monitoring \
  --project "$GCP_PROJECT_ID" --cm-service "challenge-latam-api-$env" \
  --spec alerts/cloud-monitoring/challenge-latam-api.json --label "$env ($GCP_PROJECT_ID)" "$@"
