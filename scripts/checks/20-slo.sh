#!/usr/bin/env bash
# Checks the SLOs as code (slo/README.md):
#   1. the tools are installed (promtool, prometheus, alertmanager, amtool: scripts/deps/slo.apt);
#   2. `slo check`: every generated file (alerts/, and dashboards/slo-model.json that
#      dashboards/generate.py renders) matches slo/*.yaml and slo/examples/*.yaml, none is
#      orphaned, every alert has a runbook;
#   3. the generator and the check can fail: a tampered or orphaned generated file, a burn rate
#      that can never fire and a latency threshold off the bucket boundaries are all refused;
#   4. `promtool check rules` on every rules file; 5. `promtool test rules` on every test file
#      (generated for every SLO x tier, plus the hand-written operational ones);
#   6. every `le` matcher of every rule and promtool test expression selects a whole bucket bound
#      in both spellings, `1` (Prometheus 2) and `1.0` (Prometheus 3), as `le=~"1|1\\.0"` does
#      (tests/dashboards/le_matchers.py), and the check refuses rules with `le="1"`;
#   7. the tests can fail: rules with a loosened threshold, without the low-traffic guard or
#      counting every service's requests fail them, and so does a budget-exhausted alert with a
#      loosened threshold or no event guard, and a summary record (objective, budget remaining)
#      that says other than the spec;
#   8. every runbook has its four sections, and every runbook_url of every rule leads to one;
#   9. the live drill (scripts/drills/slo-burn-drill.py): a real Prometheus and an Alertmanager
#      running alerts/alertmanager/ against the release binary, fault injection on, page received,
#      the same SLO's tickets inhibited, fault off, resolved, the held-back ticket received.
#      (scripts/checks/25-alertmanager.sh checks that configuration offline.)
# Exits non-zero on the first failure; prints what it checked, with counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

say() { printf '20-slo: %s\n' "$*"; }
fail() { printf '20-slo: FAIL: %s\n' "$*" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. Tools ----------------------------------------------------------------------------------------
for tool in promtool prometheus prometheus-alertmanager amtool cargo python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/bootstrap.sh installs it from scripts/deps/slo.apt)"
done
say "tools: $(promtool --version 2>&1 | head -1 | awk '{print "promtool", $3}'), $(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print "alertmanager", $3}')"

# 2. Generated files match the specs ---------------------------------------------------------------
# scripts/build.sh, as scripts/test.sh ran it (not -p slo): the same selection resolves the same
# features, so nothing recompiles.
scripts/build.sh -q
slo=target/release/slo
"$slo" check || fail "generated files differ from slo/ (run: cargo run -p slo -- generate)"

# 3. The generator and the check refuse what they must -------------------------------------------
expect_refused() { # name, expected message, then the setup commands run in a fresh copy
  local name=$1 want=$2; shift 2
  rm -rf "$tmp/copy" && mkdir -p "$tmp/copy/dashboards" && cp -r slo alerts "$tmp/copy/"
  cp dashboards/slo-model.json "$tmp/copy/dashboards/"
  (cd "$tmp/copy" && eval "$*")
  if "$slo" check --root "$tmp/copy" >"$tmp/out" 2>&1; then
    fail "slo check accepted $name"
  fi
  grep -q -- "$want" "$tmp/out" || { cat "$tmp/out" >&2; fail "slo check refused $name, but not with '$want'"; }
  say "refused as it should: $name"
}
expect_refused "a hand-edited generated rules file" "differs from what the spec gives" \
  "sed -i 's/> 0.0072/> 0.072/' alerts/prometheus/challenge-latam-api.availability.slo.rules.yml"
expect_refused "a hand-edited dashboards model (dashboards/generate.py renders it)" "slo-model.json differs from what the spec gives" \
  "sed -i 's/\"objective\": 0.9995,/\"objective\": 0.999,/' dashboards/slo-model.json"
expect_refused "a generated file no spec produces" "no spec generates it" \
  "cp alerts/datadog/challenge-latam-api.json alerts/datadog/removed-service.json"
expect_refused "a burn rate above 1/(1 - objective)" "can never fire" \
  "sed -i 's/threshold: 14.4/threshold: 25/' slo/challenge-latam-api.yaml"
expect_refused "a latency threshold off the bucket boundaries" "not a bucket boundary" \
  "sed -i 's/le: 0.25/le: 0.3/' slo/challenge-latam-api.yaml"
expect_refused "a Datadog namespace (the OTLP metrics keep their own names)" "selected by the \`service\` tag" \
  "sed -i 's|^    slo.challenge-latam.dev/alert-prefix: .*|&\\n    slo.challenge-latam.dev/datadog-namespace: challenge_latam_api|' slo/challenge-latam-api.yaml"
expect_refused "an alert without a runbook" "has no runbook" \
  "rm alerts/runbooks/ChallengeLatamApiFreshnessBudgetBurn.md"
expect_refused "a budget-exhausted alert without a runbook" "has no runbook" \
  "rm alerts/runbooks/ChallengeLatamApiQueryLatencyBudgetExhausted.md"
expect_refused "a tier over the whole period (the budget-exhausted alert's job)" "budget-exhausted alert" \
  "sed -i 's/lookbackWindow: 3d/lookbackWindow: 30d/' slo/challenge-latam-api.yaml"

# 4. promtool check rules ----------------------------------------------------------------------------
mapfile -t rule_files < <(find alerts -name '*.rules.yml' | sort)
((${#rule_files[@]})) || fail "no rules files under alerts/"
promtool check rules "${rule_files[@]}" >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out" >&2; fail "promtool check rules"; }
rules=$(grep -o 'SUCCESS: [0-9]* rules' "$tmp/check.out" | awk '{s += $2} END {print s}')
say "promtool check rules: ${#rule_files[@]} files, $rules rules"

# 5. promtool test rules (two workers; each file is independent) ----------------------------------
mapfile -t test_files < <(find alerts -name '*.test.yml' | sort)
((${#test_files[@]})) || fail "no promtool tests under alerts/"
groups=$(cat "${test_files[@]}" | grep -c '^  - interval:')
start=$SECONDS
if ! printf '%s\n' "${test_files[@]}" | xargs -P 2 -n 4 promtool test rules >"$tmp/test.out" 2>&1; then
  grep -v '^\s*$' "$tmp/test.out" | grep -B2 -A20 FAILED | head -80 >&2
  fail "promtool test rules"
fi
passed=$(grep -c SUCCESS "$tmp/test.out")
[ "$passed" -eq "${#test_files[@]}" ] || fail "promtool test rules: $passed of ${#test_files[@]} files passed"
say "promtool test rules: ${#test_files[@]} files, $groups test groups, all passed in $((SECONDS - start))s"

# 6. le matchers work on Prometheus 2 and 3 ---------------------------------------------------------
# Prometheus 3 stores a whole `le` as "1.0", Prometheus 2 as "1": an exact le="1" (or le="1.0")
# selects nothing on one of them. promtool here is 2.42, so steps 4-5 cannot see it.
python3 tests/dashboards/le_matchers.py --prefix 20-slo "${rule_files[@]}" "${test_files[@]}" || fail "le matchers"
rm -rf "$tmp/le" && mkdir -p "$tmp/le"
sed 's/le=~"1|1\\\\\.0"/le="1"/g' alerts/prometheus/challenge-latam-api.query-latency.slo.rules.yml \
  >"$tmp/le/query-latency.rules.yml"
# As many refusals as the file has whole-bound matchers (counted, so a new rule keeps it exact).
whole=$(grep -oF 'le=~"1|1\\.0"' alerts/prometheus/challenge-latam-api.query-latency.slo.rules.yml | wc -l)
((whole > 0)) || fail "no le=~\"1|1\\.0\" matcher in the query-latency rules to break"
python3 tests/dashboards/le_matchers.py --prefix 20-slo --expect-rejected "$whole" "$tmp/le/query-latency.rules.yml" \
  || fail "the le check accepts query-latency rules with le=\"1\""

# 7. The tests can fail ------------------------------------------------------------------------------
mutant() { # name, test file, sed expression on the availability rules
  rm -rf "$tmp/mut" && mkdir -p "$tmp/mut" && cp -r alerts "$tmp/mut/"
  sed -i "$3" "$tmp/mut/alerts/prometheus/challenge-latam-api.availability.slo.rules.yml"
  if promtool test rules "$tmp/mut/alerts/tests/challenge-latam-api/$2" >/dev/null 2>&1; then
    fail "promtool tests still pass with $1"
  fi
  say "tests catch it: $1 fails $2"
}
mutant "the fast tier's threshold 10x too high" availability.fast.test.yml 's/> 0.0072$/> 0.072/'
mutant "no low-traffic guard" availability.steady.test.yml 's/>= 20$/>= 0/'
mutant "a selector that lets other routes in" availability.steady.test.yml \
  's|http_route=~"/challenge-latam-api/ingestData[|]/challenge-latam-api/getData"|http_route=~".+"|g'
mutant "rules that count every service's requests" availability.steady.test.yml 's/,service="challenge-latam-api"//g'
exhausted='/alert: ChallengeLatamApiAvailabilityBudgetExhausted/,/runbook_url/'
mutant "the budget-exhausted threshold 10x too high" availability.budget.test.yml "$exhausted s/> 0.0005\$/> 0.005/"
mutant "no event guard on the budget-exhausted alert" availability.budget.test.yml "$exhausted s/>= 20\$/>= 0/"
mutant "a budget-remaining summary record 10 points off" availability.budget.test.yml \
  's/expr: 1 - slo:period_burn_rate:ratio/expr: 0.9 - slo:period_burn_rate:ratio/'
mutant "an objective summary record that is not the spec's" availability.budget.test.yml 's/expr: vector(0.9995)$/expr: vector(0.999)/'

# 8. Runbooks ------------------------------------------------------------------------------------------
mapfile -t runbooks < <(find alerts -path '*/runbooks/*.md' | sort)
for rb in "${runbooks[@]}"; do
  for section in "## What it means for users" "## What to look at first" "## How to mitigate" "## How to tell it is over"; do
    grep -qF "$section" "$rb" || fail "$rb has no '$section' section"
  done
done
mapfile -t urls < <(grep -ho 'runbook_url: .*' "${rule_files[@]}" | awk '{print $2}' | sort -u)
for url in "${urls[@]}"; do
  [ -f "$url" ] || fail "runbook_url $url leads nowhere"
done
alerts=$(grep -ho '^ *- alert: .*' "${rule_files[@]}" | awk '{print $3}' | sort -u | wc -l)
say "runbooks: ${#runbooks[@]} pages with all four sections; ${#urls[@]} runbook_url targets exist for $alerts alert names"

# 9. The live drill --------------------------------------------------------------------------------------
python3 scripts/drills/slo-burn-drill.py

say "all SLO checks passed"
