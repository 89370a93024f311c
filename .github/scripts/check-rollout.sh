#!/usr/bin/env bash
# After `terraform apply`: checks that the Cloud Run service is Ready, that its latest created
# revision is the latest ready one, that it takes 100 % of the traffic and that one of its
# containers runs exactly IMAGE (by digest). Writes `url=` to $GITHUB_OUTPUT when set.
#
#   GCP_PROJECT_ID=... GCP_REGION=... check-rollout.sh SERVICE IMAGE
set -euo pipefail
service=${1:?usage: check-rollout.sh SERVICE IMAGE}
image=${2:?usage: check-rollout.sh SERVICE IMAGE}
: "${GCP_PROJECT_ID:?}" "${GCP_REGION:?}"

desc=$(gcloud run services describe "$service" --project "$GCP_PROJECT_ID" --region "$GCP_REGION" --format=json)
jq_check() { jq -e "$@" >/dev/null <<<"$desc"; }

jq_check '.status.conditions[] | select(.type == "Ready") | .status == "True"' \
  || { echo "$service is not Ready:" >&2; jq '.status.conditions' <<<"$desc" >&2; exit 1; }
jq_check '.status.latestReadyRevisionName == .status.latestCreatedRevisionName' \
  || { echo "the latest revision of $service is not ready" >&2; jq '.status | {latestCreatedRevisionName, latestReadyRevisionName}' <<<"$desc" >&2; exit 1; }
jq_check '[.status.traffic[] | select(.latestRevision == true) | .percent] | add == 100' \
  || { echo "the latest revision of $service does not take all traffic:" >&2; jq '.status.traffic' <<<"$desc" >&2; exit 1; }
# shellcheck disable=SC2016 # $image is a jq variable, bound by --arg
jq_check --arg image "$image" '[.spec.template.spec.containers[].image] | index($image) != null' \
  || { echo "no container of $service runs $image:" >&2; jq '[.spec.template.spec.containers[] | {name, image}]' <<<"$desc" >&2; exit 1; }

url=$(jq -r '.status.url' <<<"$desc")
revision=$(jq -r '.status.latestReadyRevisionName' <<<"$desc")
echo "$service: revision $revision serves $image at $url"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "url=$url" >>"$GITHUB_OUTPUT"
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  echo "Deployed \`$image\` to \`$service\` (revision \`$revision\`): $url" >>"$GITHUB_STEP_SUMMARY"
fi
