#!/usr/bin/env bash
# Checks `make demo` end to end, as an engineer would use it (docs/operations.md, "Break it, find
# it, fix it"), bounded to about 4 minutes:
#   1. scripts/demo.sh starts the stack with a short time limit (DEMO_MINUTES=6) in a state dir
#      of its own; every URL it prints answers, and Prometheus has every alerting rule loaded;
#   2. healthy: the SLO rules evaluate under the k6 load and no page arrives;
#   3. `scripts/demo.sh fault errors`: a page of the availability SLO arrives at the receiver
#      (pager, firing) within the bound the demo states (state.json, the page, the fault command);
#      no page, no pass;
#   4. `verify` refuses a wrong answer and accepts the right one;
#   5. `scripts/demo.sh fault clear`: the resolve arrives within the stated bound;
#   6. SIGINT (Ctrl-C): the demo stops every process it started and exits 0;
#   7. DEMO_MINUTES: a demo given 15 s stops by itself and exits 0.
# Prints the demo's own output and a timeline; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

say() { printf '27-demo: [%3ss] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { printf '27-demo: FAIL: %s\n' "$*" >&2; [ -f "$out" ] && tail -40 "$out" >&2; exit 1; }

t0=$SECONDS
tmp=$(mktemp -d)
export DEMO_DIR=$tmp/state DEMO_MINUTES=6
out=$tmp/demo.out
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -INT "$demo_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

state() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, s))' "$DEMO_DIR/state.json" "$1"; }
# Seconds until the first webhook alert matching receiver, status and alertname (0 once found).
notified() { # receiver status alertname since(unix)
  curl -fsS "$(state 'urls["receiver"]')/api/notifications" | python3 -c '
import json, sys
want_rx, want_status, want_name, since = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
for n in json.load(sys.stdin):
    p = n["payload"]
    if n["at"] >= since and p.get("receiver") == want_rx and p.get("status") == want_status and any(
            a["labels"].get("alertname") == want_name for a in p.get("alerts", [])):
        print(round(n["at"] - since, 1)); break
' "$@"
}
wait_for() { # what seconds command...
  local what=$1 limit=$2 end=$((SECONDS + $2)); shift 2
  until "$@"; do
    kill -0 "$demo_pid" 2>/dev/null || fail "the demo exited while waiting for $what"
    ((SECONDS < end)) || fail "$what: not within ${limit}s"
    sleep 1
  done
}

# 1. Start ------------------------------------------------------------------------------------------
scripts/demo.sh >"$out" 2>&1 &
demo_pid=$!
running() { [ -f "$DEMO_DIR/state.json" ] && [ "$(state 'running')" = True ]; }
wait_for "the demo to start" 180 running
say "demo started (pid $demo_pid); it printed:"
sed -n '/the on-call stack runs/,/notifications appear/p' "$out" | sed 's/^/    /'
for link in $(state '" ".join(links.values())'); do
  code=$(curl -sL -o /dev/null -w '%{http_code}' "$link")
  [ "$code" = 200 ] || fail "$link answered $code"
done
say "every URL the demo printed answers 200 ($(state 'len(links)') URLs)"
loaded=$(curl -fsS "$(state 'urls["prometheus"]')/api/v1/rules?type=alert" |
  python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
shipped=$(cat alerts/prometheus/challenge-latam-api.*.rules.yml | grep -c '^ *- alert:')
[ "$loaded" = "$shipped" ] || fail "Prometheus loaded $loaded alerting rules, alerts/prometheus/ has $shipped"
say "Prometheus evaluates $loaded alerting rules, every one of alerts/prometheus/ for the service"

# 2. Healthy -----------------------------------------------------------------------------------------
prom=$(state 'urls["prometheus"]')
recorded() { curl -fsS "$prom/api/v1/query" --data-urlencode 'query=slo:sli_events:increase5s{slo="availability"} >= 20' | grep -q '"value"'; }
wait_for "the availability SLO's events (20 in 5s) to be recorded" 60 recorded
sleep 10
pages=$(curl -fsS "$(state 'urls["receiver"]')/api/notifications" | python3 -c 'import json,sys; print(sum(n["payload"].get("receiver") == "pager" for n in json.load(sys.stdin)))')
[ "$pages" = 0 ] || fail "$pages pages arrived on healthy traffic"
say "healthy under k6 load: the SLO rules evaluate, no page"

# 3. Fault -> page ----------------------------------------------------------------------------------
page_within=$(state 'page_within_s'); resolve_within=$(state 'resolve_within_s')
t_fault=$(date +%s.%N)
scripts/demo.sh fault errors | sed 's/^/    /'
page_in() { got=$(notified pager firing ChallengeLatamApiAvailabilityBudgetBurn "$t_fault") && [ -n "$got" ]; }
wait_for "a page at the receiver (the demo says within ${page_within}s)" "$page_within" page_in
say "PAGE at the pager receiver ${got}s after the fault (bound ${page_within}s, stated by the demo)"
grep -m3 'receiver: .* pager .*FIRING' "$out" | sed 's/^/    /'

# 4. Verify -------------------------------------------------------------------------------------------
if scripts/demo.sh verify store >"$tmp/verify.out" 2>&1; then
  fail "verify accepted a wrong answer: $(cat "$tmp/verify.out")"
fi
scripts/demo.sh verify errors >"$tmp/verify.out" 2>&1 || fail "verify refused the right answer: $(cat "$tmp/verify.out")"
say "verify: refuses 'store', accepts 'errors'"

# 5. Clear -> resolve --------------------------------------------------------------------------------
t_fix=$(date +%s.%N)
scripts/demo.sh fault clear | sed 's/^/    /'
resolved_in() { got=$(notified pager resolved ChallengeLatamApiAvailabilityBudgetBurn "$t_fix") && [ -n "$got" ]; }
wait_for "the resolve at the receiver (the demo says within ${resolve_within}s)" "$resolve_within" resolved_in
say "RESOLVED at the pager receiver ${got}s after the fix (bound ${resolve_within}s)"

# 6. Ctrl-C ---------------------------------------------------------------------------------------------
pids=$(state '" ".join(str(p) for p in pids.values())')
kill -INT "$demo_pid"
for _ in $(seq 60); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$demo_pid" 2>/dev/null && fail "the demo still runs 30s after Ctrl-C"
rc=0; wait "$demo_pid" || rc=$?
demo_pid=
[ "$rc" = 0 ] || fail "the demo exited $rc after Ctrl-C"
for pid in $pids; do
  kill -0 "$pid" 2>/dev/null && fail "pid $pid (started by the demo) still runs after it stopped"
done
say "Ctrl-C: the demo stopped its $(wc -w <<<"$pids") processes and exited 0"
tail -3 "$out" | sed 's/^/    /'

# 7. The time limit -------------------------------------------------------------------------------------
t=$SECONDS
DEMO_DIR=$tmp/limit DEMO_MINUTES=0.25 timeout 180 scripts/demo.sh >"$tmp/limit.out" 2>&1 ||
  fail "a demo with DEMO_MINUTES=0.25 exited $? ($(tail -3 "$tmp/limit.out"))"
grep -q 'time limit reached (0.25 min' "$tmp/limit.out" || fail "the demo did not stop at its time limit: $(tail -3 "$tmp/limit.out")"
say "DEMO_MINUTES=0.25: the demo stopped by itself at its time limit ($((SECONDS - t))s from start to exit)"
say "passed"
