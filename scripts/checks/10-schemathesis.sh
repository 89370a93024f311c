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
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port=$(free_port); admin=$(free_port)
key=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
hash=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
printf '[{"id":"schemathesis","sha256":"%s","scopes":["ingest","read"]}]' "$hash" >"$work/keys.json"

HOST=127.0.0.1 PORT=$port ADMIN_PORT=$admin DATA_DIR="$work/data" API_KEYS_FILE="$work/keys.json" \
  RATE_LIMIT_PER_SECOND=100000 RATE_LIMIT_BURST=100000 \
  "$bin" >"$work/app.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "service did not become ready"; cat "$work/app.log"; exit 1; }

set +e
schemathesis --config-file scripts/checks/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $key" \
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
