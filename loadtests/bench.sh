#!/usr/bin/env bash
# The speed benchmark in one command: builds what it measures, then runs loadtests/bench.py
# (the release binary, the handlers-only build and the bare axum server, loaded alike by wrk).
#   loadtests/bench.sh [--capacity] [--seconds 10] [--connections 64] [--rows 1000000]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
  cargo build --release --locked --bin challenge-latam-api --example bare --example handlers_only
fi
exec python3 loadtests/bench.py "$@"
