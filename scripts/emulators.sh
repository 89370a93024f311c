#!/usr/bin/env bash
# Starts and stops the Pub/Sub and BigQuery emulators on loopback and provisions them the way
# Terraform provisions the real services: the records topic, a worker subscription whose
# dead-letter policy forwards to the dead-letter topic, a subscription on that topic (so a
# test can see what was dead-lettered), the dataset, and the records and dead-letter tables
# from the single schema files in schema/.
#
#   scripts/emulators.sh start            start both, provision, print the env to export
#   scripts/emulators.sh stop             stop what `start` started (by the PIDs it recorded)
#   scripts/emulators.sh env              print the env again
#   scripts/emulators.sh stop-one  pubsub|bigquery     fault drills: kill one emulator
#   scripts/emulators.sh start-one pubsub|bigquery     start it again (and provision it again:
#                                                       both emulators keep state in memory)
#
# Settings (environment): EMULATOR_DIR (state: PIDs, logs, env; default .tools/emulators),
# PUBSUB_PORT (8085), BQ_PORT (9050), BQ_GRPC_PORT (9060), GCP_PROJECT (test-project),
# PUBSUB_TOPIC, PUBSUB_SUBSCRIPTION, BQ_DATASET, BQ_TABLE (CONTRACT.md's names, env `local`),
# MAX_DELIVERY_ATTEMPTS (5), RETRY_MINIMUM_BACKOFF/RETRY_MAXIMUM_BACKOFF (the worker
# subscription's retry policy, Terraform's defaults 10s/300s; the emulator honours it: a nacked
# message comes back after the minimum backoff, doubling up to the maximum).
# Ports given as 0 are replaced by free ones at start. Everything binds 127.0.0.1 only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/.tools/venv/bin:$PATH"

dir="${EMULATOR_DIR:-$root/.tools/emulators}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pubsub_bin=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator

# Neither emulator reports a port 0 choice: a free port from the launcher's helper instead.
launcher="$root/loadtests/lib/service.py"

# Settings survive between invocations in $dir/settings, so `stop-one`/`start-one` reuse the
# ports that `start` chose.
load_settings() {
  if [ -f "$dir/settings" ]; then
    # shellcheck disable=SC1091
    source "$dir/settings"
    return
  fi
  PUBSUB_PORT="${PUBSUB_PORT:-8085}"
  BQ_PORT="${BQ_PORT:-9050}"
  BQ_GRPC_PORT="${BQ_GRPC_PORT:-9060}"
  [ "$PUBSUB_PORT" != 0 ] || PUBSUB_PORT=$(python3 "$launcher" free-port)
  [ "$BQ_PORT" != 0 ] || BQ_PORT=$(python3 "$launcher" free-port)
  [ "$BQ_GRPC_PORT" != 0 ] || BQ_GRPC_PORT=$(python3 "$launcher" free-port)
  GCP_PROJECT="${GCP_PROJECT:-test-project}"
  PUBSUB_TOPIC="${PUBSUB_TOPIC:-challenge-latam-records-local}"
  PUBSUB_SUBSCRIPTION="${PUBSUB_SUBSCRIPTION:-challenge-latam-records-worker-local}"
  DEAD_LETTER_TOPIC="${DEAD_LETTER_TOPIC:-challenge-latam-records-dead-letter-local}"
  DEAD_LETTER_SUBSCRIPTION="${DEAD_LETTER_SUBSCRIPTION:-challenge-latam-records-dead-letter-audit-local}"
  MAX_DELIVERY_ATTEMPTS="${MAX_DELIVERY_ATTEMPTS:-5}"
  RETRY_MINIMUM_BACKOFF="${RETRY_MINIMUM_BACKOFF:-10s}"
  RETRY_MAXIMUM_BACKOFF="${RETRY_MAXIMUM_BACKOFF:-300s}"
  BQ_DATASET="${BQ_DATASET:-challenge_latam_records_local}"
  BQ_TABLE="${BQ_TABLE:-records}"
  BQ_DEAD_LETTER_TABLE="${BQ_DEAD_LETTER_TABLE:-dead_letters}"
  local v
  for v in PUBSUB_PORT BQ_PORT BQ_GRPC_PORT GCP_PROJECT PUBSUB_TOPIC PUBSUB_SUBSCRIPTION \
    DEAD_LETTER_TOPIC DEAD_LETTER_SUBSCRIPTION MAX_DELIVERY_ATTEMPTS RETRY_MINIMUM_BACKOFF \
    RETRY_MAXIMUM_BACKOFF BQ_DATASET BQ_TABLE BQ_DEAD_LETTER_TABLE; do
    printf '%s=%q\n' "$v" "${!v}"
  done >"$dir/settings"
}

print_env() {
  cat <<EOF
export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT
export BIGQUERY_EMULATOR_HOST=127.0.0.1:$BQ_PORT
export GCP_PROJECT=$GCP_PROJECT
export PUBSUB_TOPIC=$PUBSUB_TOPIC
export PUBSUB_SUBSCRIPTION=$PUBSUB_SUBSCRIPTION
export BQ_DATASET=$BQ_DATASET
export BQ_TABLE=$BQ_TABLE
export DEAD_LETTER_TOPIC=$DEAD_LETTER_TOPIC
export DEAD_LETTER_SUBSCRIPTION=$DEAD_LETTER_SUBSCRIPTION
export RETRY_MINIMUM_BACKOFF=$RETRY_MINIMUM_BACKOFF
export RETRY_MAXIMUM_BACKOFF=$RETRY_MAXIMUM_BACKOFF
EOF
}

alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

# Waits until `curl` of $2 answers (any HTTP status), at most $3 seconds.
wait_http() {
  local name=$1 url=$2 limit=$3 i
  for ((i = 0; i < limit * 10; i++)); do
    if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
    alive "$name" || { echo "emulators: $name exited; log:" >&2; tail -20 "$dir/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "emulators: $name not ready after ${limit}s; log:" >&2
  tail -20 "$dir/$name.log" >&2
  return 1
}

# Calls the emulator's REST API; fails on any status but 2xx and 409 (already exists).
api() {
  local method=$1 url=$2 body=${3:-} code
  code=$(curl -s -o "$dir/last-response" -w '%{http_code}' --max-time 10 -X "$method" \
    -H 'content-type: application/json' ${body:+--data "$body"} "$url")
  case "$code" in
    2??|409) ;;
    *) echo "emulators: $method $url -> HTTP $code: $(head -c 400 "$dir/last-response")" >&2; return 1 ;;
  esac
  # bqemulator answers some errors with HTTP 200 and an `error` object.
  if grep -q '"error"' "$dir/last-response" && ! grep -qi 'already exists\|duplicate' "$dir/last-response"; then
    echo "emulators: $method $url -> $(head -c 400 "$dir/last-response")" >&2
    return 1
  fi
}

provision_pubsub() {
  local base="http://127.0.0.1:$PUBSUB_PORT/v1/projects/$GCP_PROJECT"
  api PUT "$base/topics/$PUBSUB_TOPIC"
  api PUT "$base/topics/$DEAD_LETTER_TOPIC"
  # Same policies as Terraform's subscription: redelivery of a nacked message with the retry
  # policy's backoff, dead-letter after MAX_DELIVERY_ATTEMPTS.
  api PUT "$base/subscriptions/$PUBSUB_SUBSCRIPTION" "$(printf '{"topic":"projects/%s/topics/%s","ackDeadlineSeconds":10,"deadLetterPolicy":{"deadLetterTopic":"projects/%s/topics/%s","maxDeliveryAttempts":%s},"retryPolicy":{"minimumBackoff":"%s","maximumBackoff":"%s"}}' \
    "$GCP_PROJECT" "$PUBSUB_TOPIC" "$GCP_PROJECT" "$DEAD_LETTER_TOPIC" "$MAX_DELIVERY_ATTEMPTS" \
    "$RETRY_MINIMUM_BACKOFF" "$RETRY_MAXIMUM_BACKOFF")"
  api PUT "$base/subscriptions/$DEAD_LETTER_SUBSCRIPTION" "$(printf '{"topic":"projects/%s/topics/%s","ackDeadlineSeconds":30}' \
    "$GCP_PROJECT" "$DEAD_LETTER_TOPIC")"
  echo "emulators: pubsub provisioned: topics $PUBSUB_TOPIC, $DEAD_LETTER_TOPIC; subscriptions $PUBSUB_SUBSCRIPTION (retry $RETRY_MINIMUM_BACKOFF..$RETRY_MAXIMUM_BACKOFF, dead-letter after $MAX_DELIVERY_ATTEMPTS), $DEAD_LETTER_SUBSCRIPTION" >&2
}

table_body() {
  # Partitioned by day on publish_time and clustered by customerId, like the Terraform table.
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
project, dataset, table, schema = sys.argv[1:]
print(json.dumps({
    "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
    "schema": {"fields": json.load(open(schema))},
    "timePartitioning": {"type": "DAY", "field": "publish_time"},
    "clustering": {"fields": ["customerId"]} if table != "dead_letters" else None,
}))
PY
}

provision_bigquery() {
  local base="http://127.0.0.1:$BQ_PORT/bigquery/v2/projects/$GCP_PROJECT"
  api POST "$base/datasets" "$(printf '{"datasetReference":{"projectId":"%s","datasetId":"%s"}}' "$GCP_PROJECT" "$BQ_DATASET")"
  api POST "$base/datasets/$BQ_DATASET/tables" "$(table_body "$GCP_PROJECT" "$BQ_DATASET" "$BQ_TABLE" "$root/schema/records.bigquery.json")"
  api POST "$base/datasets/$BQ_DATASET/tables" "$(table_body "$GCP_PROJECT" "$BQ_DATASET" "$BQ_DEAD_LETTER_TABLE" "$root/schema/dead_letters.bigquery.json")"
  echo "emulators: bigquery provisioned: dataset $BQ_DATASET, tables $BQ_TABLE, $BQ_DEAD_LETTER_TABLE (schema/*.bigquery.json)" >&2
}

start_one() {
  case "$1" in
    pubsub)
      alive pubsub && { echo "emulators: pubsub already running (pid $(cat "$dir/pubsub.pid"))" >&2; return 0; }
      [ -x "$pubsub_bin" ] || { echo "emulators: $pubsub_bin is missing (google-cloud-cli-pubsub-emulator)" >&2; return 1; }
      # The wrapper execs java, so $! is the JVM itself and stopping it by PID stops it all.
      nohup "$pubsub_bin" --host=127.0.0.1 --port="$PUBSUB_PORT" >"$dir/pubsub.log" 2>&1 &
      echo $! >"$dir/pubsub.pid"
      wait_http pubsub "http://127.0.0.1:$PUBSUB_PORT/v1/projects/$GCP_PROJECT/topics" 60
      provision_pubsub
      ;;
    bigquery)
      alive bigquery && { echo "emulators: bigquery already running (pid $(cat "$dir/bigquery.pid"))" >&2; return 0; }
      command -v bqemulator >/dev/null || { echo "emulators: bqemulator missing: run scripts/bootstrap.sh" >&2; return 1; }
      nohup bqemulator start --rest-host 127.0.0.1 --rest-port "$BQ_PORT" --grpc-host 127.0.0.1 \
        --grpc-port "$BQ_GRPC_PORT" --project "$GCP_PROJECT" --log-level warning \
        >"$dir/bigquery.log" 2>&1 &
      echo $! >"$dir/bigquery.pid"
      wait_http bigquery "http://127.0.0.1:$BQ_PORT/bigquery/v2/projects/$GCP_PROJECT/datasets" 60
      provision_bigquery
      ;;
    *) echo "emulators: unknown emulator '$1' (pubsub or bigquery)" >&2; return 2 ;;
  esac
}

stop_one() {
  local name=$1 pid i
  [ -f "$dir/$name.pid" ] || return 0
  pid=$(cat "$dir/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    echo "emulators: stopped $name (pid $pid)" >&2
  fi
  rm -f "$dir/$name.pid"
}

cmd="${1:-}"
case "$cmd" in
  start)
    load_settings
    start_one pubsub
    start_one bigquery
    print_env | tee "$dir/env"
    ;;
  stop)
    stop_one pubsub
    stop_one bigquery
    rm -f "$dir/settings" "$dir/env"
    ;;
  env)
    load_settings
    print_env
    ;;
  start-one)
    load_settings
    start_one "${2:?pubsub or bigquery}"
    ;;
  stop-one)
    stop_one "${2:?pubsub or bigquery}"
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
