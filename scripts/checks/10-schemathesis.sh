#!/usr/bin/env bash
# Property-based API testing: schemathesis generates requests from the service's own
# /openapi.json (valid and invalid ones) and runs every check against a real release binary
# with authentication on. Zero failures or the check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"
bin=${BIN:-target/release/challenge-latam-api}
[ -x "$bin" ] || { echo "missing $bin: run scripts/build.sh first" >&2; exit 1; }
command -v schemathesis >/dev/null || { echo "schemathesis is not installed: run scripts/bootstrap.sh" >&2; exit 1; }

work=$(mktemp -d)
SERVICE_PID=""
cleanup() { [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID"; rm -rf "$work"; }
trap cleanup EXIT

started=$(python3 loadtests/lib/service.py start --binary "$bin" --data-dir "$work/data" --log "$work/app.log" \
  --keys 1 --client schemathesis --env RATE_LIMIT_PER_SECOND=100000 --env RATE_LIMIT_BURST=100000)
eval "$started"

set +e
schemathesis --config-file scripts/checks/schemathesis.toml run "$SERVICE_URL/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $SERVICE_KEY" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
  --workers 2 \
  --seed 20261128 \
  --no-color
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "schemathesis found failures (exit $rc); service log tail:"
  tail -n 20 "$work/app.log"
fi
exit $rc
