#!/usr/bin/env bash
# The whole GCP stack on this machine, in one command: the Pub/Sub and BigQuery emulators on
# loopback (topic, worker subscription with its dead-letter topic, dataset and tables from
# schema/*.bigquery.json, via scripts/emulators.sh) and the service on BACKEND=gcp with
# PUBSUB_SUBSCRIPTION set, so its pull worker writes rows into the BigQuery emulator.
# Ctrl-C (or SIGTERM) stops the service and then the emulators this script started.
#
#   scripts/gcp-stack.sh                 # API on 127.0.0.1:8080, metrics on 127.0.0.1:9464
#   PORT=8081 ADMIN_PORT=9465 scripts/gcp-stack.sh
#
# BACKEND=gcp never runs open: give it API_KEYS_FILE, or this script writes one with a key
# printed at start (a development key, for this loopback stack only).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/venv/bin:$PATH"

export EMULATOR_DIR="${EMULATOR_DIR:-$PWD/.tools/gcp-stack}"
mkdir -p "$EMULATOR_DIR"
app_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
    kill -TERM "$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
  fi
  scripts/emulators.sh stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/emulators.sh start >"$EMULATOR_DIR/env"
# shellcheck disable=SC1091
source "$EMULATOR_DIR/env"
cat "$EMULATOR_DIR/env"

if [ -z "${API_KEYS_FILE:-}" ]; then
  key="dev-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  API_KEYS_FILE="$EMULATOR_DIR/api-keys.json"
  printf '[{"id":"gcp-stack","sha256":"%s","scopes":["ingest","read"]}]\n' \
    "$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)" >"$API_KEYS_FILE"
  echo "gcp-stack: API key for this stack (ingest, read): $key"
fi
export API_KEYS_FILE

bin=target/release/challenge-latam-api
[ -x "$bin" ] || scripts/build.sh
BACKEND=gcp HOST=127.0.0.1 PORT="${PORT:-8080}" ADMIN_PORT="${ADMIN_PORT:-9464}" \
  LOG_FORMAT="${LOG_FORMAT:-pretty}" "$bin" &
app_pid=$!
echo "gcp-stack: service pid $app_pid on http://127.0.0.1:${PORT:-8080} (BACKEND=gcp); Ctrl-C stops everything"
wait "$app_pid"
