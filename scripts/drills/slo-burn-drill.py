#!/usr/bin/env python3
"""SLO burn drill: proves, end to end and on this machine, that an outage pages and its end
resolves, with the rules generated from slo/challenge-latam-api.yaml.

What runs (all on 127.0.0.1, every process started here and stopped here by its PID):
  - the release service (target/release/challenge-latam-api) on the embedded default;
  - a real Prometheus scraping its admin port every second, with the drill profile of the
    generated rules (`slo generate --profile drill`: every window divided by 60, so the fast
    tier is 1m/5s instead of 1h/5m);
  - a real Alertmanager with the shipped configuration (alerts/alertmanager/): a copy whose
    placeholder receiver URLs point at a webhook receiver this script serves (one path per
    receiver: /pager, /ticket, /default, and /chat for the Slack-format chat messages), and whose
    timers are divided by the same 60 as the rules' windows.

Steps, under a steady load of ~20 requests/s on both API routes:
  1. healthy: the ratios exist and no burn-rate alert of the availability SLO fires;
  2. PUT /admin/faults {"http_error_rate": 1} (every API request answered 500): the fast-burn
     page must reach the pager receiver within PAGE_BOUND_S, with severity=page, tier=fast, the
     SLO's labels and a runbook_url to a page in this repo, and its chat message must carry the
     summary, the figures, the runbook and the dashboard (the templates);
  3. inhibition: a total outage crosses every tier, so the ticket tiers (slow, slowest) and the
     budget-exhausted ticket of the same SLO fire too. Alertmanager's API must show them
     suppressed, inhibited by the page, within TICKETS_BOUND_S, and nothing of that SLO may reach
     the ticket receiver while the page fires (checked after the ticket route's group_wait);
  4. PUT /admin/faults {"http_error_rate": 0}: the resolved notification of the fast tier must
     reach the pager within RESOLVE_BOUND_S; once every page of the SLO has resolved (the medium
     tier's 30s short window), the tickets are no longer held back and must reach the ticket
     receiver within TICKET_AFTER_PAGE_BOUND_S (inhibition mutes, it does not drop).
Prints the timeline; exits non-zero if any step fails or the drill exceeds DRILL_LIMIT_S.
Python standard library only.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "loadtests", "lib"))
import service as svc  # noqa: E402  (the launcher of the release binary)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICE = "challenge-latam-api"
ALERT = "ChallengeLatamApiAvailabilityBudgetBurn"
RUNBOOK = f"alerts/runbooks/{ALERT}.md"
# Compressed fast tier: 1m long, 5s short. A total outage crosses its 0.72 % threshold over 1m
# within a second (1m x 0.0072 = 0.4s) and over 5s at once; the bound adds a 1s scrape, a 1s
# evaluation, Alertmanager's 1s group_wait, and slack for a loaded 2-core CI machine.
PAGE_BOUND_S = 15
# The 5s short window must clear of errors, then one scrape, one evaluation, one group_interval
# (the page route's 1m, 1s here).
RESOLVE_BOUND_S = 15
# The slow tier (24m/2m here) crosses its 0.15 % within a scrape of the fault; the budget group is
# evaluated every 5s here. Then Alertmanager's API must show them held back.
TICKETS_BOUND_S = 20
# Every page of the SLO resolved (the medium tier's 30s short window, plus RESOLVE_BOUND_S), then
# the ticket route's group_interval (30m, 30s here) until its next notification, and slack.
PAGE_RESOLVED_BOUND_S = 30 + RESOLVE_BOUND_S
TICKET_AFTER_PAGE_BOUND_S = 30 + 15
HEALTHY_S = 20
LOAD_RPS = 20
DRILL_LIMIT_S = 180
# The drill profile divides the rules' windows by the spec's drill-compression (slo/*.yaml, 60
# by default); the Alertmanager timers are divided by the same, so the stack keeps its
# proportions. Read from the header of the rules `slo generate --profile drill` writes, so the
# two cannot disagree; the bounds above were measured at the project's 60.
COMPRESSION = None
AM_DIR = os.path.join(ROOT, "alerts", "alertmanager")
PLACEHOLDER_URL = re.compile(r"https://REPLACE-WITH-([A-Z]+)-WEBHOOK\.invalid/\S*")
TIMER = re.compile(r"^(\s*(?:group_wait|group_interval|repeat_interval):\s*)(\d+)([smhd])\s*$", re.M)

T0 = time.monotonic()
timeline = []


def mark(event):
    t = time.monotonic() - T0
    timeline.append((t, event))
    print(f"slo-burn-drill: [{t:6.1f}s] {event}", flush=True)


def fail(msg):
    print(f"slo-burn-drill: FAIL: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def http(method, url, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what, check, limit):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.25)
    fail(f"{what}: not within {limit}s")


# --- webhook receiver -------------------------------------------------------------------------
notifications = []  # (monotonic time, path, payload): /pager, /ticket, /default, /chat
notified = threading.Condition()


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with notified:
            notifications.append((time.monotonic(), self.path, payload))
            notified.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_payload(path, match, since, limit):
    """First (time, item, payload) at `path` after `since` for which `match(payload)` gives an
    item: an alert of a webhook payload, or a chat attachment."""
    deadline = since + limit
    with notified:
        while True:
            for t, p, payload in notifications:
                if t >= since and p == path:
                    item = match(payload)
                    if item is not None:
                        return t, item, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            notified.wait(left)


def wait_notification(path, match, since, limit):
    """First alert matching `match(alert)` in a webhook notification at `path` after `since`."""
    return wait_payload(path, lambda payload: next(
        (a for a in payload.get("alerts", []) if match(a)), None), since, limit)


def received(path, match, since=0.0, until=math.inf):
    """Alerts matching `match` in the webhook notifications at `path` from `since` to `until`."""
    with notified:
        return [a for t, p, payload in notifications if p == path and since <= t < until
                for a in payload.get("alerts", []) if match(a)]


def scale(seconds):
    return max(1, math.ceil(seconds / COMPRESSION))


def render_alertmanager(tmp, hook_port):
    """A copy of alerts/alertmanager/ that Alertmanager can run here: every placeholder receiver
    URL points at this script's webhook (/pager, /ticket, /default), the chat URL file holds
    its /chat, and every timer is divided by COMPRESSION. Returns the config path and the timers
    of each route as rendered."""
    out = os.path.join(tmp, "alertmanager")
    shutil.copytree(AM_DIR, out)
    path = os.path.join(out, "alertmanager.yml")
    with open(path) as f:
        text = f.read()
    receivers = set(PLACEHOLDER_URL.findall(text))
    if {"PAGER", "TICKET", "DEFAULT"} - receivers:
        fail(f"{AM_DIR}/alertmanager.yml: expected placeholder URLs for PAGER, TICKET and "
             f"DEFAULT, found {sorted(receivers)}")
    text = PLACEHOLDER_URL.sub(lambda m: f"http://127.0.0.1:{hook_port}/{m.group(1).lower()}", text)
    chat_url = os.path.join(tmp, "chat-webhook-url")
    with open(chat_url, "w") as f:
        f.write(f"http://127.0.0.1:{hook_port}/chat\n")
    text, n = re.subn(r"(slack_api_url_file:\s*)\S+", lambda m: m.group(1) + chat_url, text)
    if n != 1:
        fail(f"{AM_DIR}/alertmanager.yml: expected one global slack_api_url_file, found {n}")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    timers = []

    def shrink(m):
        seconds = int(m.group(2)) * units[m.group(3)]
        timers.append(f"{m.group(1).strip()[:-1]} {m.group(2)}{m.group(3)}->{scale(seconds)}s")
        return f"{m.group(1)}{scale(seconds)}s"
    text = TIMER.sub(shrink, text)
    settings = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for leftover in ("REPLACE-WITH", "/etc/alertmanager"):
        if leftover in settings:
            fail(f"the drill's copy of the Alertmanager config still holds {leftover!r}")
    with open(path, "w") as f:
        f.write(text)
    return path, timers


def ticket_route_timers(config):
    """(group_wait, group_interval) in seconds of the route whose matchers name severity=ticket,
    read from the rendered copy."""
    block = config.split('severity="ticket"', 1)[1].split("- receiver:", 1)[0]
    wait = re.search(r"group_wait:\s*(\d+)s", block)
    interval = re.search(r"group_interval:\s*(\d+)s", block)
    if not (wait and interval):
        fail("cannot read the ticket route's timers from the rendered Alertmanager config")
    return int(wait.group(1)), int(interval.group(1))


def am_alerts(am):
    status, body = http("GET", f"{am}/api/v2/alerts")
    if status != 200:
        raise ValueError(body)
    return json.loads(body)


# --- load -------------------------------------------------------------------------------------
stop_load = threading.Event()
load_counts = {"sent": 0, "5xx": 0}


def load(base):
    record = {"customerId": "9854764321", "name": "Ronald Ramos",
              "orders": [{"orderId": "1", "total": 50.0}], "revenue": 50.0}
    period = 1.0 / LOAD_RPS
    nxt = time.monotonic()
    i = 0
    while not stop_load.is_set():
        if i % 2 == 0:
            status, _ = http("POST", f"{base}/challenge-latam-api/ingestData", record)
        else:
            status, _ = http("GET", f"{base}/challenge-latam-api/getData?limit=5")
        load_counts["sent"] += 1
        load_counts["5xx"] += status >= 500
        i += 1
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def prom_query(prom, q):
    status, body = http("GET", f"{prom}/api/v1/query?query={urllib.parse.quote(q)}")
    if status != 200:
        raise ValueError(body)
    return json.loads(body)["data"]["result"]


def prom_firing(prom, tier=None):
    status, body = http("GET", f"{prom}/api/v1/alerts")
    alerts = json.loads(body)["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == ALERT and a["state"] == "firing"
            and (tier is None or a["labels"].get("tier") == tier)]


def main():
    if not os.access(svc.BINARY, os.X_OK):
        fail(f"{svc.BINARY} is missing: run `cargo build --release --bin challenge-latam-api` first")
    for tool in ("prometheus", "prometheus-alertmanager", "amtool"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/deps/slo.apt)")

    tmp = tempfile.mkdtemp(prefix="slo-drill-")
    procs = []
    server = None
    service = None
    load_thread = None
    try:
        # Prometheus and Alertmanager cannot report a port 0 choice; the service and the
        # webhook receiver bind port 0 and say which port they got.
        ports = {k: svc.free_port() for k in ("prom", "am")}
        prom = f"http://127.0.0.1:{ports['prom']}"
        am = f"http://127.0.0.1:{ports['am']}"

        # Drill rules from the spec.
        rules_dir = os.path.join(tmp, "rules")
        subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "slo", "--",
                        "generate", "--profile", "drill", "--out", rules_dir],
                       cwd=ROOT, check=True)
        rules = os.path.join(rules_dir, f"{SERVICE}.slo.rules.yml")
        subprocess.run(["promtool", "check", "rules", rules], check=True, stdout=subprocess.DEVNULL)

        global T0, COMPRESSION
        with open(rules) as f:
            divided = re.search(r"every window divided by (\d+)", f.read())
        if not divided:
            fail(f"{rules}: no 'every window divided by N' header; did the generator change?")
        COMPRESSION = int(divided.group(1))
        T0 = time.monotonic()  # the timeline starts once the rules are generated
        server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
        ports["hook"] = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

        am_cfg, timers = render_alertmanager(tmp, ports["hook"])
        subprocess.run(["amtool", "check-config", am_cfg], check=True, stdout=subprocess.DEVNULL)
        with open(am_cfg) as f:
            ticket_wait, ticket_interval = ticket_route_timers(f.read())
        # The embedded default, with no keys file and no faults: the launcher gives it a clean
        # environment.
        service = svc.Service(data_dir=os.path.join(tmp, "data"),
                              log=os.path.join(tmp, "service.log")).start(wait_ready=0)
        ports.update(app=service.port, admin=service.admin_port)
        base, admin = service.url, service.admin_url
        prom_cfg = os.path.join(tmp, "prometheus.yml")
        with open(prom_cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{ports['am']}"]
scrape_configs:
  - job_name: {SERVICE}
    static_configs:
      - targets: ["127.0.0.1:{ports['admin']}"]
        labels:
          service: {SERVICE}
""")
        subprocess.run(["promtool", "check", "config", prom_cfg], check=True, stdout=subprocess.DEVNULL)

        def start(name, argv, env=None):
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
            procs.append((name, p))
            return p

        start("alertmanager", ["prometheus-alertmanager", f"--config.file={am_cfg}",
                               f"--storage.path={tmp}/am", f"--web.listen-address=127.0.0.1:{ports['am']}",
                               "--cluster.listen-address="])
        start("prometheus", ["prometheus", f"--config.file={prom_cfg}",
                             f"--storage.tsdb.path={tmp}/prom",
                             f"--web.listen-address=127.0.0.1:{ports['prom']}",
                             "--rules.alert.resend-delay=1s"])
        wait_for("the service's /readyz", lambda: http("GET", f"{base}/readyz")[0] == 200, 30)
        wait_for("Prometheus ready", lambda: http("GET", f"{prom}/-/ready")[0] == 200, 30)
        wait_for("Alertmanager ready", lambda: http("GET", f"{am}/-/ready")[0] == 200, 30)
        status, body = http("GET", f"{admin}/admin/faults")
        if status != 200 or json.loads(body).get("http_error_rate") != 0:
            fail(f"faults must start off: GET /admin/faults answered {status} {body[:200]!r}")
        mark(f"service, Prometheus and Alertmanager ready (ports {ports})")
        mark(f"Alertmanager runs alerts/alertmanager/ with receivers on 127.0.0.1:{ports['hook']} "
             f"and timers / {COMPRESSION}: {', '.join(timers)}")

        load_thread = threading.Thread(target=load, args=(base,), daemon=True)
        load_thread.start()
        mark(f"steady load started: {LOAD_RPS} requests/s on ingestData and getData")

        # 1. Healthy.
        wait_for("the availability ratio over 5s to be recorded",
                 lambda: prom_query(prom, 'slo:sli_error:ratio_rate5s{slo="availability"}'), 30)
        healthy_until = time.monotonic() + HEALTHY_S
        while time.monotonic() < healthy_until:
            if prom_firing(prom):
                fail(f"{ALERT} fired on healthy traffic: {prom_firing(prom)}")
            time.sleep(1)
        ratio = float(prom_query(prom, 'slo:sli_error:ratio_rate1m{slo="availability"}')[0]["value"][1])
        events = float(prom_query(prom, 'slo:sli_events:increase5s{slo="availability"}')[0]["value"][1])
        if ratio != 0 or load_counts["5xx"]:
            fail(f"healthy traffic had errors: ratio {ratio}, {load_counts['5xx']} 5xx")
        mark(f"healthy for {HEALTHY_S}s: error ratio over 1m {ratio}, {events:.0f} events per 5s, "
             f"no burn-rate alert")

        # 2. Outage.
        t_fault = time.monotonic()
        status, body = http("PUT", f"{admin}/admin/faults", {"http_error_rate": 1.0})
        if status != 200 or json.loads(body)["http_error_rate"] != 1.0:
            fail(f"PUT /admin/faults answered {status} {body[:200]!r}")
        mark("fault on: PUT /admin/faults {\"http_error_rate\": 1} (every API request answered 500)")
        got = wait_notification("/pager", lambda a: a["labels"].get("alertname") == ALERT
                                and a["labels"].get("tier") == "fast" and a["status"] == "firing",
                                t_fault, PAGE_BOUND_S)
        if got is None:
            fail(f"no fast-burn page at the pager receiver within {PAGE_BOUND_S}s; Prometheus "
                 f"alerts: {prom_firing(prom)}; webhook paths so far: "
                 f"{sorted({p for _, p, _ in notifications})}")
        t_page, alert, payload = got
        if payload.get("receiver") != "pager":
            fail(f"the page came through receiver {payload.get('receiver')!r}, not pager")
        want = {"alertname": ALERT, "service": SERVICE, "slo": "availability",
                "severity": "page", "tier": "fast"}
        wrong = {k: alert["labels"].get(k) for k, v in want.items() if alert["labels"].get(k) != v}
        if wrong:
            fail(f"page has wrong labels {wrong}; got {alert['labels']}")
        runbook = alert["annotations"].get("runbook_url", "")
        if runbook != RUNBOOK or not os.path.isfile(os.path.join(ROOT, runbook)):
            fail(f"page's runbook_url {runbook!r} is not {RUNBOOK} in this repo")
        mark(f"PAGE received {t_page - t_fault:.1f}s after the fault (bound {PAGE_BOUND_S}s): "
             f"labels {alert['labels']}")
        mark(f"  summary: {alert['annotations'].get('summary')}")
        mark(f"  runbook_url: {runbook} (exists)")

        # The chat message of the same notification, rendered by the shipped templates.
        summary = alert["annotations"]["summary"]
        dashboard = alert["annotations"].get("dashboard_url", "")
        if not dashboard:
            fail(f"the page has no dashboard_url annotation: {alert['annotations']}")
        chat = wait_payload("/chat", lambda p: next(
            (a for a in p.get("attachments", []) if p.get("channel") == "#challenge-latam-oncall"
             and summary in a.get("text", "")), None), t_fault, PAGE_BOUND_S)
        if chat is None:
            fail(f"no chat message of the page in #challenge-latam-oncall within {PAGE_BOUND_S}s")
        t_chat, att, _ = chat
        want = {"title": f"page: {ALERT}", "figures": "Error ratio ",
                "runbook": "Runbook: https://", "runbook path": f"/{RUNBOOK}",
                "dashboard": "Dashboard: https://", "dashboard path": dashboard}
        lacking = [k for k, w in want.items()
                   if w not in (att.get("title", "") if k == "title" else att.get("text", ""))]
        if lacking:
            fail(f"the page's chat message lacks {lacking}: {att}")
        mark(f"CHAT message in #challenge-latam-oncall {t_chat - t_fault:.1f}s after the fault: "
             f"{att['title']!r}, with the summary, figures, runbook and dashboard links")
        mark(f"  {att['text'].splitlines()[2][:110]}...")

        # 3. The tickets of the same SLO fire too, and Alertmanager holds them back.
        def tickets_of_slo():
            return [a for a in am_alerts(am) if a["labels"].get("severity") == "ticket"
                    and a["labels"].get("slo") == "availability"
                    and a["labels"].get("service") == SERVICE]
        exhausted = "ChallengeLatamApiAvailabilityBudgetExhausted"

        def both_tickets():
            got = {(a["labels"]["alertname"], a["labels"].get("tier")) for a in tickets_of_slo()}
            return (ALERT, "slow") in got and any(n == exhausted for n, _ in got)
        wait_for(f"the slow tier's ticket and {exhausted} in Alertmanager",
                 both_tickets, TICKETS_BOUND_S)
        t_tickets = time.monotonic()
        everything = {a["fingerprint"]: a for a in am_alerts(am)}

        def check_held_back(when):
            tickets = tickets_of_slo()
            for a in tickets:
                st = a["status"]
                sources = [everything.get(fp, {}).get("labels", {}) for fp in st.get("inhibitedBy", [])]
                if st.get("state") != "suppressed" or not sources:
                    fail(f"{when}: ticket {a['labels']} is not held back: status {st}")
                if not all(src.get("severity") == "page" and src.get("slo") == "availability"
                           and src.get("service") == SERVICE for src in sources):
                    fail(f"{when}: ticket {a['labels']} is inhibited by something other than the "
                         f"SLO's page: {sources}")
                if [r["name"] for r in a.get("receivers", [])] != ["ticket"]:
                    fail(f"{when}: ticket {a['labels']} would go to {a.get('receivers')}, not ticket")
            return tickets
        tickets = check_held_back("with the page firing")
        mark(f"INHIBITED: {len(tickets)} tickets of the SLO in Alertmanager {t_tickets - t_fault:.1f}s "
             f"after the fault, all suppressed, inhibitedBy the page: "
             f"{sorted((a['labels']['alertname'], a['labels'].get('tier', '-')) for a in tickets)}")
        # Past the ticket route's group_wait, the tickets' first notification is due: with the page
        # still firing, nothing of this SLO may have reached the ticket receiver.
        time.sleep(max(0.0, t_tickets + ticket_wait + 2 - time.monotonic()))
        everything = {a["fingerprint"]: a for a in am_alerts(am)}
        check_held_back(f"{ticket_wait}s (the ticket route's group_wait) later")
        if not prom_firing(prom, "fast"):
            fail("the fast tier stopped firing before the inhibition could be judged")
        leaked = received("/ticket", lambda a: a["labels"].get("slo") == "availability")
        if leaked:
            fail(f"a ticket of the SLO reached the ticket receiver while the page fired: {leaked}")
        mark(f"no ticket of the SLO at the ticket receiver {ticket_wait + 2}s after they fired "
             f"(ticket group_wait {ticket_wait}s), page still firing")

        # 3. Recovery.
        t_fix = time.monotonic()
        status, body = http("PUT", f"{admin}/admin/faults", {"http_error_rate": 0})
        if status != 200 or json.loads(body)["http_error_rate"] != 0:
            fail(f"PUT /admin/faults answered {status} {body[:200]!r}")
        mark("fault off: PUT /admin/faults {\"http_error_rate\": 0}")
        got = wait_notification("/pager", lambda a: a["labels"].get("alertname") == ALERT
                                and a["labels"].get("tier") == "fast" and a["status"] == "resolved",
                                t_fix, RESOLVE_BOUND_S)
        if got is None:
            fail(f"no resolved notification within {RESOLVE_BOUND_S}s; Prometheus alerts: "
                 f"{prom_firing(prom)}")
        t_resolved, alert, _ = got
        mark(f"RESOLVED received {t_resolved - t_fix:.1f}s after the fix (bound {RESOLVE_BOUND_S}s, "
             f"short window 5s)")

        # 4. Once no page of the SLO fires, its tickets are no longer held back.
        got = wait_payload("/pager", lambda p: p if p.get("status") == "resolved" and all(
            a["labels"].get("slo") == "availability" for a in p["alerts"]) else None,
            t_fix, PAGE_RESOLVED_BOUND_S)
        if got is None:
            fail(f"the SLO's pages did not all resolve within {PAGE_RESOLVED_BOUND_S}s of the fix: "
                 f"{prom_firing(prom)}")
        t_all_resolved = got[0]
        tiers = sorted(a["labels"].get("tier") for a in got[2]["alerts"])
        mark(f"every page of the SLO resolved {t_all_resolved - t_fix:.1f}s after the fix ({tiers})")
        if received("/ticket", lambda a: a["labels"].get("slo") == "availability", 0.0, t_all_resolved):
            fail("a ticket of the SLO reached the ticket receiver before its pages resolved")
        got = wait_notification("/ticket", lambda a: a["labels"].get("slo") == "availability"
                                and a["status"] == "firing", t_all_resolved,
                                TICKET_AFTER_PAGE_BOUND_S)
        if got is None:
            fail(f"no ticket of the SLO at the ticket receiver within {TICKET_AFTER_PAGE_BOUND_S}s "
                 f"of its pages resolving (ticket group_interval {ticket_interval}s): inhibition "
                 f"must mute, not drop")
        t_ticket, alert, payload = got
        mark(f"TICKET received {t_ticket - t_all_resolved:.1f}s after the pages resolved (bound "
             f"{TICKET_AFTER_PAGE_BOUND_S}s, ticket group_interval {ticket_interval}s): "
             f"{sorted((a['labels']['alertname'], a['labels'].get('tier', '-')) for a in payload['alerts'])}")
        others = sorted({(p, a["labels"].get("alertname"), a["labels"].get("slo"), a["labels"].get("tier"),
                          a["status"]) for _, p, pl in notifications for a in pl.get("alerts", [])})
        mark(f"webhooks received {len(notifications)} notifications in all: {others}")
        mark(f"load: {load_counts['sent']} requests, {load_counts['5xx']} answered 5xx")
        if time.monotonic() - T0 > DRILL_LIMIT_S:
            fail(f"the drill took over {DRILL_LIMIT_S}s")
        print(f"slo-burn-drill: passed in {time.monotonic() - T0:.0f}s: page within "
              f"{t_page - t_fault:.1f}s, {len(tickets)} tickets of the SLO held back while it "
              f"fired, resolve within {t_resolved - t_fix:.1f}s, ticket "
              f"{t_ticket - t_all_resolved:.1f}s after the pages resolved", flush=True)
    except subprocess.CalledProcessError as e:
        fail(f"{e.cmd[0]} failed: {e}")
    finally:
        stop_load.set()
        if load_thread:
            load_thread.join(timeout=10)
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            elif p.returncode not in (0, -signal.SIGTERM):
                print(f"slo-burn-drill: {name} exited early with {p.returncode}; its log:",
                      file=sys.stderr)
                with open(os.path.join(tmp, f"{name}.log")) as f:
                    print(f.read()[-3000:], file=sys.stderr)
        if service:
            early = service.proc.poll()
            service.stop()
            if early not in (None, 0, -signal.SIGTERM):
                print(f"slo-burn-drill: service exited early with {early}; its log:\n"
                      f"{service.tail(40)}", file=sys.stderr)
        if server:
            server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
