#!/usr/bin/env python3
"""SLO burn drill: proves, end to end and on this machine, that an outage pages and its end
resolves, with the rules generated from slo/challenge-latam-api.yaml.

What runs (all on 127.0.0.1, every process started here and stopped here by its PID):
  - the release service (target/release/challenge-latam-api) on the embedded default;
  - a real Prometheus scraping its admin port every second, with the drill profile of the
    generated rules (`slo generate --profile drill`: every window divided by 60, so the fast
    tier is 1m/5s instead of 1h/5m);
  - a real Alertmanager routing every alert to a webhook receiver that this script serves.

Steps, under a steady load of ~20 requests/s on both API routes:
  1. healthy: the ratios exist and no burn-rate alert of the availability SLO fires;
  2. PUT /admin/faults {"http_error_rate": 1} (every API request answered 500): the fast-burn
     page must reach the webhook within PAGE_BOUND_S, with severity=page, tier=fast, the SLO's
     labels and a runbook_url to a page in this repo;
  3. PUT /admin/faults {"http_error_rate": 0}: the resolved notification of that alert must
     arrive within RESOLVE_BOUND_S.
Prints the timeline; exits non-zero if any step fails or the drill exceeds DRILL_LIMIT_S.
Python standard library only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICE = "challenge-latam-api"
ALERT = "ChallengeLatamApiAvailabilityBudgetBurn"
RUNBOOK = f"alerts/runbooks/{ALERT}.md"
# Compressed fast tier: 1m long, 5s short. A total outage crosses its 0.72 % threshold over 1m
# within a second (1m x 0.0072 = 0.4s) and over 5s at once; the bound adds a 1s scrape, a 1s
# evaluation, Alertmanager's 1s group_wait, and slack for a loaded 2-core CI machine.
PAGE_BOUND_S = 15
# The 5s short window must clear of errors, then one scrape, one evaluation, one group_interval.
RESOLVE_BOUND_S = 15
HEALTHY_S = 20
LOAD_RPS = 20
DRILL_LIMIT_S = 180

T0 = time.monotonic()
timeline = []


def mark(event):
    t = time.monotonic() - T0
    timeline.append((t, event))
    print(f"slo-burn-drill: [{t:6.1f}s] {event}", flush=True)


def fail(msg):
    print(f"slo-burn-drill: FAIL: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
notifications = []  # (monotonic time, payload)
notified = threading.Condition()


class Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with notified:
            notifications.append((time.monotonic(), payload))
            notified.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_notification(match, since, limit):
    """First alert matching `match(alert)` in a notification received after `since`."""
    deadline = since + limit
    with notified:
        while True:
            for t, payload in notifications:
                if t < since:
                    continue
                for a in payload.get("alerts", []):
                    if match(a):
                        return t, a, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            notified.wait(left)


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
    binary = os.path.join(ROOT, "target/release/challenge-latam-api")
    if not os.access(binary, os.X_OK):
        fail(f"{binary} is missing: run `cargo build --release --bin challenge-latam-api` first")
    for tool in ("prometheus", "prometheus-alertmanager", "amtool"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/deps/slo.apt)")

    tmp = tempfile.mkdtemp(prefix="slo-drill-")
    procs = []
    server = None
    load_thread = None
    try:
        ports = {k: free_port() for k in ("app", "admin", "prom", "am", "hook")}
        base = f"http://127.0.0.1:{ports['app']}"
        admin = f"http://127.0.0.1:{ports['admin']}"
        prom = f"http://127.0.0.1:{ports['prom']}"
        am = f"http://127.0.0.1:{ports['am']}"

        # Drill rules from the spec.
        rules_dir = os.path.join(tmp, "rules")
        subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "slo", "--",
                        "generate", "--profile", "drill", "--out", rules_dir],
                       cwd=ROOT, check=True)
        rules = os.path.join(rules_dir, f"{SERVICE}.slo.rules.yml")
        subprocess.run(["promtool", "check", "rules", rules], check=True, stdout=subprocess.DEVNULL)

        global T0
        T0 = time.monotonic()  # the timeline starts once the rules are generated
        server = ThreadingHTTPServer(("127.0.0.1", ports["hook"]), Webhook)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        am_cfg = os.path.join(tmp, "alertmanager.yml")
        with open(am_cfg, "w") as f:
            f.write(f"""route:
  receiver: drill
  group_by: [alertname, slo, tier]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: drill
    webhook_configs:
      - url: http://127.0.0.1:{ports['hook']}/
        send_resolved: true
""")
        subprocess.run(["amtool", "check-config", am_cfg], check=True, stdout=subprocess.DEVNULL)
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
""")
        subprocess.run(["promtool", "check", "config", prom_cfg], check=True, stdout=subprocess.DEVNULL)

        def start(name, argv, env=None):
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
            procs.append((name, p))
            return p

        env = dict(os.environ, BACKEND="local", PORT=str(ports["app"]),
                   ADMIN_PORT=str(ports["admin"]), DATA_DIR=os.path.join(tmp, "data"),
                   HOST="127.0.0.1")
        for k in list(env):
            if k.startswith("FAULT_") or k == "API_KEYS_FILE":
                del env[k]
        start("service", [binary], env)
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
        got = wait_notification(lambda a: a["labels"].get("alertname") == ALERT
                                and a["labels"].get("tier") == "fast" and a["status"] == "firing",
                                t_fault, PAGE_BOUND_S)
        if got is None:
            fail(f"no fast-burn page at the webhook within {PAGE_BOUND_S}s; Prometheus alerts: "
                 f"{prom_firing(prom)}")
        t_page, alert, _ = got
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

        # 3. Recovery.
        t_fix = time.monotonic()
        status, body = http("PUT", f"{admin}/admin/faults", {"http_error_rate": 0})
        if status != 200 or json.loads(body)["http_error_rate"] != 0:
            fail(f"PUT /admin/faults answered {status} {body[:200]!r}")
        mark("fault off: PUT /admin/faults {\"http_error_rate\": 0}")
        got = wait_notification(lambda a: a["labels"].get("alertname") == ALERT
                                and a["labels"].get("tier") == "fast" and a["status"] == "resolved",
                                t_fix, RESOLVE_BOUND_S)
        if got is None:
            fail(f"no resolved notification within {RESOLVE_BOUND_S}s; Prometheus alerts: "
                 f"{prom_firing(prom)}")
        t_resolved, alert, _ = got
        mark(f"RESOLVED received {t_resolved - t_fix:.1f}s after the fix (bound {RESOLVE_BOUND_S}s, "
             f"short window 5s)")
        others = sorted({(a["labels"].get("alertname"), a["labels"].get("slo"), a["labels"].get("tier"),
                          a["status"]) for _, p in notifications for a in p.get("alerts", [])})
        mark(f"webhook received {len(notifications)} notifications in all: {others}")
        mark(f"load: {load_counts['sent']} requests, {load_counts['5xx']} answered 5xx")
        if time.monotonic() - T0 > DRILL_LIMIT_S:
            fail(f"the drill took over {DRILL_LIMIT_S}s")
        print(f"slo-burn-drill: passed in {time.monotonic() - T0:.0f}s: page within "
              f"{t_page - t_fault:.1f}s, resolve within {t_resolved - t_fix:.1f}s", flush=True)
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
        if server:
            server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
