#!/usr/bin/env bash
# Before a deploy: prints the image, by digest, that the Cloud Run service's app container runs
# now (what deploy.yml's rollback job goes back to), or nothing when the service does not exist
# yet. A listing, not `describe`, so that "no such service" is an empty answer and any other
# failure (permissions, API) stops the job.
#
#   GCP_PROJECT_ID=... GCP_REGION=... running-image.sh SERVICE
set -euo pipefail
service=${1:?usage: running-image.sh SERVICE}
: "${GCP_PROJECT_ID:?}" "${GCP_REGION:?}"

listed=$(gcloud run services list --project "$GCP_PROJECT_ID" --region "$GCP_REGION" \
  --filter="metadata.name=$service" --format=json)
# shellcheck disable=SC2016 # $s is a jq variable, bound by --arg
jq -r --arg s "$service" '
  [.[] | select(.metadata.name == $s) | .spec.template.spec.containers[].image
       | select(test("/challenge-latam-api@sha256:[0-9a-f]{64}$"))] | first // empty' <<<"$listed"
