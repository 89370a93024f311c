#!/usr/bin/env bash
# Checks the error-budget release gate (scripts/release/budget_gate.py, docs/ci-cd.md):
#   1. against a real Prometheus (Debian's 2.42, on 127.0.0.1) over TSDBs backfilled with
#      `promtool tsdb create-blocks-from openmetrics` from a healthy, a burning and a
#      budget-exhausted history, with the generated rules of alerts/prometheus/ loaded: the gate
#      passes on healthy, refuses on burning and on exhausted, passes with an override that it
#      logs, gives the baseline, rolls back on a new burn in `watch`, and cannot judge a service
#      whose rules are not loaded (tests/workflows/budget_gate_prometheus.py, bounded at 240 s);
#   2. the Cloud Monitoring source's requests and its reading of recorded responses, the verdicts
#      and the override (pytest tests/workflows/test_budget_gate.py; 50-workflows.sh runs it too,
#      with the other workflow tests).
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

for tool in prometheus promtool python3; do
  command -v "$tool" >/dev/null || { echo "28-budget-gate: FAIL: $tool is not installed (scripts/bootstrap.sh installs it)" >&2; exit 1; }
done
timeout 300 python3 tests/workflows/budget_gate_prometheus.py
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -m pytest -q -p no:cacheprovider tests/workflows/test_budget_gate.py
echo "28-budget-gate: all checks passed"
