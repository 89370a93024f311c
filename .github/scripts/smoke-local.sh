#!/usr/bin/env bash
# k6 smoke test against a freshly built binary on loopback: start it on the embedded default
# with a throwaway DATA_DIR, wait for /readyz, run `loadtests/run.sh smoke`, and stop it by its
# PID. Exits with k6's status (99 when a threshold failed).
#
#   .github/scripts/smoke-local.sh target/release/challenge-latam-api
set -euo pipefail
binary=${1:?usage: smoke-local.sh PATH_TO_BINARY}
port=${SMOKE_PORT:-18080}
admin_port=${SMOKE_ADMIN_PORT:-19464}
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

data_dir=$(mktemp -d)
log="$data_dir/service.log"
BACKEND=local PORT="$port" ADMIN_PORT="$admin_port" DATA_DIR="$data_dir" LOG_FORMAT=json \
  "$binary" >"$log" 2>&1 &
pid=$!
stop() {
  if kill "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap stop EXIT

url="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null "$url/readyz"; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the service exited before it was ready; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS "$url/readyz" || { echo "not ready after 30 s; log:" >&2; cat "$log" >&2; exit 1; }
echo
echo "service ready at $url (pid $pid); running the k6 smoke scenario"
loadtests/run.sh smoke --url "$url"
