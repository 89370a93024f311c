#!/usr/bin/env bash
# Checks the dashboards of dashboards/ (docs/operations.md says how to read them):
#   1. the generated files match dashboards/generate.py and the model tools/slo writes from slo/*.yaml
#      (dashboards/slo-model.json; scripts/checks/20-slo.sh fails when that model drifts);
#   2. shape: Grafana JSON, Cloud Monitoring JSON through templatefile() into the Dashboard proto,
#      Datadog JSON into datadog-api-client's Dashboard model;
#   3. every SLO has budget and burn-rate panels with each tier's threshold drawn; the fleet views
#      have Apdex per latency SLO, the billing metrics, and drill-down links that lead somewhere;
#   4. against the release binary and a real Prometheus on 127.0.0.1: every queried metric is
#      emitted after known traffic, a recording rule of alerts/prometheus, or listed with its
#      documentation in dashboards/platform-metrics.yaml; every PromQL expression runs and
#      returns data;
#   5. Datadog: the binary exports OTLP to a receiver the check runs on 127.0.0.1; what it sends
#      (every contract metric, DELTA, the contract's buckets, the scrape's counts) is mapped as the
#      serverless-init sidecar maps it (dashboards/datadog/README.md), and every metric, tag and
#      tag value of every Datadog dashboard query and alerts/datadog SLO must exist there;
#   6. known-bad fixtures in tests/dashboards/fixtures are rejected, and the checker's parsers and
#      OTLP mapping pass their unit tests (tests/dashboards/test_*.py);
#   7. every `le` matcher of every PromQL expression (Grafana, Cloud Monitoring) selects a whole
#      bucket bound in both spellings, `1` (Prometheus 2) and `1.0` (Prometheus 3), as
#      `le=~"1|1\\.0"` does (tests/dashboards/le_matchers.py); a known-bad fixture with `le="60"`
#      must be refused. Prometheus 2.42 (the one installed) stores `1`, so step 4 cannot see this.
# Exits non-zero on the first failure; prints what it checked, with counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

bin=${DASHBOARDS_APP_BIN:-target/release/challenge-latam-api}
for tool in python prometheus pytest; do
  command -v "$tool" >/dev/null || {
    echo "30-dashboards: FAIL: $tool is not installed (scripts/bootstrap.sh installs it from scripts/deps/dashboards.*)" >&2
    exit 1
  }
done
python -c 'import google.cloud.monitoring_dashboard_v1, datadog_api_client, yaml, grpc, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc' || {
  echo "30-dashboards: FAIL: the Python schema or OTLP packages are missing (scripts/deps/dashboards.pip)" >&2
  exit 1
}
# The checker's own parsers and OTLP mapping first: one that misses names would make steps 4-5 blind.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python -m pytest -q -p no:cacheprovider tests/dashboards
# le matchers that only one Prometheus major version matches (the dashboards would go blank on 3).
python tests/dashboards/le_matchers.py --prefix 30-dashboards dashboards/grafana dashboards/cloud-monitoring dashboards/datadog
python tests/dashboards/le_matchers.py --prefix 30-dashboards --expect-rejected 1 tests/dashboards/fixtures/grafana-exact-integer-le.json
exec python tests/dashboards/check_dashboards.py --bin "$bin"
