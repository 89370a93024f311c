#!/usr/bin/env bash
# Checks the Alertmanager configuration shipped in alerts/alertmanager/ (slo/README.md, docs/operations.md):
#   1. `amtool check-config` loads it (routes, receivers, inhibit rules, templates) with Debian's
#      Alertmanager 0.25, the oldest it must load on; a config with an undefined receiver, and one
#      with `url_file` (0.26+ only), are refused;
#   2. no secret in the repository: every receiver URL is an `.invalid` placeholder and every URL
#      file lies under /etc/alertmanager/secrets/; a config with a real-looking URL is refused;
#   3. routing, `amtool config routes test`: every alert of every rules file in alerts/ reaches the
#      receiver its severity names (page -> pager, ticket -> ticket), an unknown or missing
#      severity reaches the default receiver, and a wrong expectation fails;
#   4. the inhibit rule: a page holds back the tickets of the same service and SLO only;
#   5. the templates render a generated alert with its summary, its figures, the runbook link and
#      the dashboard link (`amtool template render`), and a template without the runbook fails;
#      every dashboard_url of the rules names a Grafana dashboard of dashboards/grafana/.
# The live drill (scripts/drills/slo-burn-drill.py, run by 20-slo.sh) runs this configuration in
# a real Alertmanager: page received, ticket inhibited, resolve received.
# Exits non-zero on the first failure; prints what it checked, with counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.tools/venv/bin:$PATH"

say() { printf '25-alertmanager: %s\n' "$*"; }
fail() { printf '25-alertmanager: FAIL: %s\n' "$*" >&2; exit 1; }

config=alerts/alertmanager/alertmanager.yml
templates='alerts/alertmanager/templates/*.tmpl'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The configuration loads ------------------------------------------------------------------------
for tool in amtool python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/bootstrap.sh installs it from scripts/deps/slo.apt)"
done
python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml (scripts/deps/dashboards.pip installs PyYAML into .tools/venv)"
amtool check-config "$config" >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out" >&2; fail "amtool check-config $config"; }
found=$(grep -E '^ - [0-9]+ ' "$tmp/check.out" | sed 's/^ - //' | paste -sd, - | sed 's/,/, /g')
say "amtool check-config ($(amtool --version 2>&1 | head -1 | awk '{print "amtool", $3}')): $config loads: $found"

refused_config() { # name, file: amtool check-config must refuse it
  if amtool check-config "$2" >"$tmp/refused.out" 2>&1; then
    fail "amtool check-config accepted $1"
  fi
  say "refused as it should: $1 ($(grep -oE '(undefined receiver .*|field [a-z_]+ not found)' "$tmp/refused.out" | head -1 | cut -c1-90))"
}
cp "$config" "$tmp/broken.yml"
sed -i '0,/receiver: pager/s//receiver: pagre/' "$tmp/broken.yml"
mkdir -p "$tmp/templates" && cp alerts/alertmanager/templates/*.tmpl "$tmp/templates/"
refused_config "a route to an undefined receiver" "$tmp/broken.yml"
cp "$config" "$tmp/url_file.yml"
sed -i '0,/url: https:\/\/REPLACE-WITH-PAGER-WEBHOOK.invalid\/alertmanager/s||url_file: /etc/alertmanager/secrets/pager-webhook-url|' "$tmp/url_file.yml"
grep -q 'url_file: /etc/alertmanager/secrets/pager-webhook-url' "$tmp/url_file.yml" || fail "the url_file fixture did not change the config"
refused_config "webhook url_file, which Alertmanager 0.25 does not know" "$tmp/url_file.yml"

# 2. No secret in the repository ----------------------------------------------------------------------
secrets_ok() { # file: every URL is a placeholder, every URL file is the operator's
  python3 - "$1" <<'PY'
import re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
bad, urls, files = [], 0, 0
def walk(node, path):
    global urls, files
    if isinstance(node, dict):
        for k, v in node.items():
            walk(v, f"{path}.{k}")
            if not isinstance(v, str):
                continue
            if k.endswith("url"):
                urls += 1
                if not re.fullmatch(r"https://REPLACE-WITH-[A-Z-]+\.invalid/\S*", v):
                    bad.append(f"{path}.{k} = {v!r} is not a REPLACE-WITH-...invalid placeholder")
            elif k.endswith("_file") and ("url" in k or "key" in k or "password" in k):
                files += 1
                if not v.startswith("/etc/alertmanager/secrets/"):
                    bad.append(f"{path}.{k} = {v!r} is not under /etc/alertmanager/secrets/")
            elif re.search(r"(key|password|token|secret)$", k):
                bad.append(f"{path}.{k}: a secret written in the file")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}[{i}]")
walk(doc, "")
for b in bad:
    print(b, file=sys.stderr)
print(f"{urls} receiver URLs are placeholders, {files} URL files are the operator's")
sys.exit(1 if bad or urls == 0 else 0)
PY
}
out=$(secrets_ok "$config") || fail "$config holds something that is not a placeholder (above)"
say "no secret: $out"
cp "$config" "$tmp/leak.yml"
sed -i '0,/https:\/\/REPLACE-WITH-TICKET-WEBHOOK.invalid\/alertmanager/s||https://hooks.example.com/services/T000/B000/abcdef|' "$tmp/leak.yml"
if secrets_ok "$tmp/leak.yml" >/dev/null 2>&1; then
  fail "the secret guard accepted a config with a real-looking webhook URL"
fi
say "refused as it should: a config with a real-looking webhook URL"

# 3. Routing ---------------------------------------------------------------------------------------------
# Every alerting rule of alerts/ (generated and hand-written) with the labels it fires with: the
# rule's own labels, and the service and slo of the recording rules of its group (the generated
# burn-rate and budget alerts take them from the series they compare).
python3 - >"$tmp/cases" <<'PY'
import glob, yaml
for path in sorted(glob.glob("alerts/**/*.rules.yml", recursive=True)):
    for group in yaml.safe_load(open(path))["groups"]:
        slo_labels = {}
        for rule in group["rules"]:
            if "record" in rule:
                slo_labels = {k: v for k, v in (rule.get("labels") or {}).items() if k in ("service", "slo")}
        for rule in group["rules"]:
            if "alert" in rule:
                labels = {"alertname": rule["alert"], **slo_labels, **(rule.get("labels") or {})}
                sev = labels.get("severity", "")
                want = {"page": "pager", "ticket": "ticket"}.get(sev, "default")
                print(want, path, " ".join(f"{k}={v}" for k, v in sorted(labels.items())))
PY
rules=$(wc -l <"$tmp/cases")
((rules > 0)) || fail "no alerting rules found under alerts/"
route_ok() { # expected receiver, labels...
  local want=$1; shift
  amtool config routes test --config.file="$config" --verify.receivers="$want" "$@" >"$tmp/route.out" 2>&1
}
declare -A by_receiver=()
while read -r want path labels; do
  # shellcheck disable=SC2086 # labels are k=v words without spaces
  route_ok "$want" $labels || { cat "$tmp/route.out" >&2; fail "$path: alert {$labels} does not route to $want"; }
  by_receiver[$want]=$((${by_receiver[$want]:-0} + 1))
done <"$tmp/cases"
for want in pager ticket; do
  ((${by_receiver[$want]:-0} > 0)) || fail "no alerting rule routes to $want: the cases above test nothing there"
done
say "routes test: $rules alerting rules route by severity: ${by_receiver[pager]} to pager, ${by_receiver[ticket]} to ticket, ${by_receiver[default]:-0} to default"
route_ok default alertname=ChallengeLatamApiAvailabilityBudgetBurn service=challenge-latam-api slo=availability severity=critical ||
  fail "an unknown severity does not reach the default receiver: $(cat "$tmp/route.out")"
route_ok default alertname=SomethingUnlabelled ||
  fail "an alert without severity does not reach the default receiver: $(cat "$tmp/route.out")"
say "routes test: unknown severity (critical) and no severity reach default"
if route_ok ticket alertname=ChallengeLatamApiAvailabilityBudgetBurn service=challenge-latam-api slo=availability severity=page tier=fast; then
  fail "amtool config routes test accepted a page routed to ticket"
fi
say "routes test can fail: a page expected at ticket is refused ($(grep -m1 -o 'Expected receivers did not match.*' "$tmp/route.out"))"

# 4. The inhibit rule ------------------------------------------------------------------------------------
# amtool cannot evaluate inhibition offline; the drill does it live. Here: the rule's shape, read
# from the file, is exactly "page mutes ticket of the same service and SLO" (a rule without
# `equal` would mute every ticket of every SLO during any page).
python3 - "$config" <<'PY' || fail "the inhibit rules are not 'a page holds back the tickets of the same service and SLO'"
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))["inhibit_rules"]
assert len(rules) == 1, rules
r = rules[0]
assert r["source_matchers"] == ['severity="page"', 'slo=~".+"'], r
assert r["target_matchers"] == ['severity="ticket"'], r
assert sorted(r["equal"]) == ["service", "slo"], r
PY
say "inhibit rule: a page (with an slo) holds back the tickets with equal service and slo"

# 5. Templates ---------------------------------------------------------------------------------------------
# The data of a notification of a generated page, as Alertmanager would pass it: the generated
# rule's labels and annotations, its description expanded as Prometheus does ($value = 100 %).
python3 - >"$tmp/data.json" <<'PY'
import json, yaml
rules = yaml.safe_load(open("alerts/prometheus/challenge-latam-api.availability.slo.rules.yml"))
rule = next(r for g in rules["groups"] for r in g["rules"]
            if r.get("alert") == "ChallengeLatamApiAvailabilityBudgetBurn" and r["labels"]["tier"] == "fast")
labels = {"alertname": rule["alert"], "service": "challenge-latam-api", "slo": "availability", **rule["labels"]}
ann = dict(rule["annotations"])
ann["description"] = ann["description"].replace("{{ $value | humanizePercentage }}", "100%")
print(json.dumps({
    "receiver": "pager", "status": "firing",
    "alerts": [{"status": "firing", "labels": labels, "annotations": ann,
                "startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}],
    "groupLabels": {k: labels[k] for k in ("alertname", "service", "slo")},
    "commonLabels": labels, "commonAnnotations": ann, "externalURL": "http://127.0.0.1:9093",
}))
PY
render() { # glob, template name
  amtool template render --template.glob="$1" --template.text="{{ template \"$2\" . }}" --template.data="$tmp/data.json"
}
rendered_ok() { # glob: the chat text and title of the page carry what on-call needs
  local text title
  text=$(render "$1" challenge_latam.text) && title=$(render "$1" challenge_latam.title) || return 1
  python3 - "$tmp/data.json" "$text" "$title" <<'PY'
import json, sys
alert = json.load(open(sys.argv[1]))["alerts"][0]
text, title = sys.argv[2], sys.argv[3]
want = {
    "title": ("[FIRING:1] page: ChallengeLatamApiAvailabilityBudgetBurn", title),
    "summary": (alert["annotations"]["summary"], text),
    "figures": ("Error ratio 100% over the last 1h, and above 0.72 %", text),
    "runbook link": ("/blob/main/" + alert["annotations"]["runbook_url"], text),
    "dashboard link": (".invalid" + alert["annotations"]["dashboard_url"], text),
    "tier": ("(tier fast)", text),
}
missing = [f"{k} ({w!r})" for k, (w, t) in want.items() if w not in t]
if missing:
    print("the rendered notification lacks: " + ", ".join(missing), file=sys.stderr)
    print(title + "\n" + text, file=sys.stderr)
    sys.exit(1)
print(", ".join(want))
PY
}
out=$(rendered_ok "$templates") || fail "the templates do not render a generated page with what on-call needs (above)"
say "templates: a generated page renders with its $out"
mkdir -p "$tmp/norunbook"
cp alerts/alertmanager/templates/*.tmpl "$tmp/norunbook/"
sed -i '/^Runbook: /d' "$tmp/norunbook/challenge-latam.tmpl"
if rendered_ok "$tmp/norunbook/*.tmpl" >/dev/null 2>&1; then
  fail "the template check accepted templates without the runbook line"
fi
say "refused as it should: templates that drop the runbook link"
links=$(python3 - <<'PY'
import glob, json, re, sys, yaml
uids = {json.load(open(f)).get("uid") for f in glob.glob("dashboards/grafana/*.json")}
seen, bad = set(), []
for path in sorted(glob.glob("alerts/**/*.rules.yml", recursive=True)):
    for g in yaml.safe_load(open(path))["groups"]:
        for r in g["rules"]:
            url = (r.get("annotations") or {}).get("dashboard_url")
            if url is None:
                continue
            m = re.match(r"/d/([^/?]+)", url)
            if not m or m.group(1) not in uids:
                bad.append(f"{path}: {r['alert']}: dashboard_url {url} names no dashboard of dashboards/grafana/")
            seen.add(url)
print("\n".join(bad), file=sys.stderr)
print(f"{len(seen)} dashboard_url(s) name a dashboard of dashboards/grafana/ ({', '.join(sorted(seen))})")
sys.exit(1 if bad or not seen else 0)
PY
) || fail "a dashboard_url leads nowhere (above)"
say "dashboards: $links"

say "all Alertmanager checks passed"
