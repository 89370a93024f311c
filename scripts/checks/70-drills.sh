#!/usr/bin/env bash
# Reliability drills against the release binary (scripts/drills/drills.py): SIGKILL under load
# (acknowledged vs stored, requests cut off bounded by those in flight), SIGTERM under load
# (drain, no 5xx, exit 0), a full disk on a 4 MiB tmpfs (503 and /readyz 503 naming the broker,
# nothing acknowledged lost, ingest and /readyz 200 again without restart), slow or failing broker
# and store (504/503, readiness, recovery), and the emulator stack on BACKEND=gcp (BigQuery and
# Pub/Sub emulators killed and restarted under load: nothing acknowledged lost or
# dead-lettered), and SIGKILL of the process under concurrent batches, on the embedded default
# (batchkill) and on the emulator stack with the worker (workerkill): every acknowledged record
# queryable within 60 s of the restart, nothing dead-lettered. A drill that cannot run here (the
# full disk needs root) fails the check. Bounded: about four minutes in all (the emulator drill
# about 75 s, workerkill about 40 s).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
# The venv's Python: the drills read the service's metrics with prometheus_client's parser.
export PATH="$root/.tools/venv/bin:$PATH"
[ -x target/release/challenge-latam-api ] || { echo "70-drills: target/release/challenge-latam-api is missing (run scripts/build.sh)"; exit 1; }
timeout 540 python3 scripts/drills/drills.py all
