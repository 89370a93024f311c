#!/usr/bin/env bash
# The on-call demo (README, docs/operations.md "Break it, find it, fix it"):
#   scripts/demo.sh                  make demo: service, Prometheus, Alertmanager, receiver, k6
#   scripts/demo.sh fault KIND       make fault KIND=errors|latency|broker|store|random|clear
#   scripts/demo.sh verify ANSWER    make verify ANSWER=errors|latency|broker|store
# Starting installs the tools as `make test` does (scripts/bootstrap.sh) and builds the release
# binaries (scripts/build.sh); scripts/demo/demo.py does the rest and documents the settings
# (DEMO_MINUTES, DEMO_RATE, DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/venv/bin:$PATH"
if [ "${1:-start}" = start ]; then
  scripts/bootstrap.sh
  scripts/build.sh -q
fi
exec python3 scripts/demo/demo.py "$@"
