#!/usr/bin/env bash
# BACKEND=gcp against real emulators of the Google wire protocols: Google's own Pub/Sub
# emulator and bqemulator (BigQuery REST over DuckDB), both on loopback with free ports.
#   1. the black-box API suite (tests/api), the same one the embedded default runs, with
#      TEST_BACKEND=gcp: it spawns the service on BACKEND=gcp with the worker subscription;
#      the tests that skip there must be exactly the ones tests/api/skips.txt names for gcp;
#   2. the fault tests (tests/gcp_faults.rs): emulators killed and restarted under the service,
#      and a poison message dead-lettered after the subscription's maximum attempts.
# The emulators this script starts are stopped on exit (by the PIDs scripts/emulators.sh
# recorded), whatever happens. A missing emulator is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

state=$(mktemp -d -t gcp-emulators.XXXXXX)
export EMULATOR_DIR="$state/emulators"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  scripts/emulators.sh stop || true
  rm -rf "$state"
}
trap cleanup EXIT

# Free ports, so this never collides with a stack someone left running on the defaults.
PUBSUB_PORT=0 BQ_PORT=0 BQ_GRPC_PORT=0 scripts/emulators.sh start >"$state/env"
# shellcheck disable=SC1091
source "$state/env"
echo "60-gcp-emulators: Pub/Sub emulator at $PUBSUB_EMULATOR_HOST, BigQuery emulator at $BIGQUERY_EMULATOR_HOST"

summary() { # prints "passed N, failed M, ignored K" summed over the cargo test log $1
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
       END { printf "passed %d, failed %d, ignored %d\n", p, f, g }' "$1"
}

failures() { # the panic messages and the list of failed tests, without backtraces
  grep -A8 -E "panicked at" "$1" | grep -vE '^\s+at |^\s+[0-9]+: ' | head -80
  sed -n '/^failures:$/,/^test result/p' "$1" | tail -20
}

# Panic messages, not backtraces, in this check's output. `--workspace` as in scripts/test.sh:
# cargo unifies features over the packages it selects, so without it the library and both
# test binaries are compiled a second time (minutes, and half a gigabyte of target/).
export RUST_BACKTRACE=0
status=0
echo "60-gcp-emulators: black-box API suite on BACKEND=gcp"
if TEST_BACKEND=gcp cargo test --release --locked --workspace --test api >"$state/api.log" 2>&1; then
  echo "60-gcp-emulators: tests/api on gcp: $(summary "$state/api.log")"
else
  status=1
  failures "$state/api.log"
  echo "60-gcp-emulators: FAIL tests/api on gcp: $(summary "$state/api.log")"
fi
# The tests that return early on gcp must be exactly those tests/api/skips.txt says do not run
# there: a new skip, or a listed one that ran (or is gone), fails the check.
expected=$(awk -F'|' '!/^#/ && NF == 3 { gsub(/ /, "", $1); gsub(/ /, "", $2); if ($2 !~ /(^|,)gcp(,|$)/) print $1 }' tests/api/skips.txt | sort)
skipped=$(sed -n 's/^SKIPPED on Gcp: \([^:]*\): .*/\1/p' "$state/api.log" | sort)
if [ "$skipped" = "$expected" ]; then
  echo "60-gcp-emulators: skipped on gcp: $(grep -c . <<<"$skipped"), as tests/api/skips.txt lists"
else
  status=1
  echo "60-gcp-emulators: FAIL the skips on gcp differ from tests/api/skips.txt (< skipped only, > listed only):"
  diff <(echo "$skipped") <(echo "$expected") | grep '^[<>]' || true
fi

echo "60-gcp-emulators: fault tests (emulators killed and restarted, dead-letter)"
if cargo test --release --locked --workspace --test gcp_faults >"$state/faults.log" 2>&1; then
  echo "60-gcp-emulators: tests/gcp_faults: $(summary "$state/faults.log")"
else
  status=1
  failures "$state/faults.log"
  echo "60-gcp-emulators: FAIL tests/gcp_faults: $(summary "$state/faults.log")"
fi

# A run where nothing ran must not pass.
for log in api faults; do
  if ! grep -Eq '^test result: [a-zA-Z]+\. [1-9][0-9]* passed' "$state/$log.log"; then
    echo "60-gcp-emulators: FAIL $log: no test ran"
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "60-gcp-emulators: OK"
exit "$status"
