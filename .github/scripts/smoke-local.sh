#!/usr/bin/env bash
# k6 smoke test against a freshly built binary on loopback: start it on the embedded default
# with a throwaway DATA_DIR through the launcher (loadtests/lib/service.py: port 0, ready on
# /readyz), run `loadtests/run.sh smoke`, and stop it by its PID. Exits with k6's status (99
# when a threshold failed).
#
#   .github/scripts/smoke-local.sh target/release/challenge-latam-api
set -euo pipefail
binary=${1:?usage: smoke-local.sh PATH_TO_BINARY}
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

work=$(mktemp -d)
SERVICE_PID=""
stop() {
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID"
  rm -rf "$work"
}
trap stop EXIT

started=$(python3 loadtests/lib/service.py start --binary "$binary" --data-dir "$work/data" --log "$work/service.log")
eval "$started"
echo "service ready at $SERVICE_URL (pid $SERVICE_PID); running the k6 smoke scenario"
loadtests/run.sh smoke --url "$SERVICE_URL"
