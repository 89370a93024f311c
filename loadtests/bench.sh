#!/usr/bin/env bash
# The speed benchmark in one command: builds what it measures, then runs loadtests/bench.py
# (the release binary, the handlers-only build and the bare axum server, loaded alike by wrk).
#   loadtests/bench.sh [--capacity] [--seconds 10] [--connections 64] [--rows 1000000]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"
# Always, in one cargo call: the ratios compare builds of the same library, and a binary left
# from an earlier build (once a mimalloc handlers_only) skews them. A no-op when up to date.
cargo build --release --locked --bin challenge-latam-api --example bare --example handlers_only
exec python3 loadtests/bench.py "$@"
