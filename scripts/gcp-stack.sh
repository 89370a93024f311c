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
scripts/bootstrap.sh # the emulators and bqemulator, as `make test` installs them

export EMULATOR_DIR="${EMULATOR_DIR:-$PWD/.tools/gcp-stack}"
mkdir -p "$EMULATOR_DIR"
SERVICE_PID=""
cleanup() {
  trap - EXIT INT TERM
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID"
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
# The launcher (loadtests/lib/service.py) starts it and waits for /readyz; its log goes to a
# file, followed here until the service exits.
settings=(BACKEND=gcp PORT="${PORT:-8080}" ADMIN_PORT="${ADMIN_PORT:-9464}" LOG_FORMAT="${LOG_FORMAT:-pretty}"
  API_KEYS_FILE="$API_KEYS_FILE")
while IFS= read -r line; do
  line=${line#export }
  [[ "$line" == *=* ]] && settings+=("$line")
done <"$EMULATOR_DIR/env"
for k in RUST_LOG OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME; do
  [ -z "${!k:-}" ] || settings+=("$k=${!k}")
done
args=()
for setting in "${settings[@]}"; do args+=(--env "$setting"); done
started=$(python3 loadtests/lib/service.py start --binary "$bin" --data-dir "$EMULATOR_DIR/service" \
  --log "$EMULATOR_DIR/service.log" "${args[@]}")
eval "$started"
echo "gcp-stack: service pid $SERVICE_PID on $SERVICE_URL, metrics on $SERVICE_ADMIN_URL (BACKEND=gcp); Ctrl-C stops everything"
# In the background, so that `wait` (unlike a foreground command) lets SIGTERM reach the trap.
tail -n +1 -f --pid="$SERVICE_PID" "$SERVICE_LOG" &
wait "$!"
