#!/usr/bin/env bash
# Resolves IMAGE:TAG in Artifact Registry to IMAGE@sha256:..., so that what is deployed is the
# digest the tag named at this moment, whatever happens to the tag afterwards. Writes `image=`
# to $GITHUB_OUTPUT when set.
#
#   resolve-image.sh us-central1-docker.pkg.dev/project/repo/challenge-latam-api v1.2.3
set -euo pipefail
image=${1:?usage: resolve-image.sh IMAGE TAG}
tag=${2:?usage: resolve-image.sh IMAGE TAG}

digest=$(gcloud artifacts docker images describe "$image:$tag" --format='value(image_summary.digest)')
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "no digest for $image:$tag (got '$digest')" >&2; exit 1; }
echo "$image:$tag is $image@$digest"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "image=$image@$digest" >>"$GITHUB_OUTPUT"
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  echo "\`$image:$tag\` resolves to \`$digest\`" >>"$GITHUB_STEP_SUMMARY"
fi
