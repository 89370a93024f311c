"""The demo's notification receiver: the webhook every receiver of the demo's Alertmanager posts
to (/pager, /ticket, /default, and /chat for the Slack-format messages the templates render).
Each notification is kept in memory, appended to <state dir>/notifications.jsonl, printed to
the terminal as one line per alert, and shown on a small page at / (newest first).

It also serves the runbooks (alerts/runbooks/*.md: the notifications' runbook links point here,
the templates' repository URL being this server in the demo) and stands in for Grafana
(/grafana/d/...: the dashboard links redirect to the same SLO series in Prometheus).
Standard library only; listens on 127.0.0.1 only.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RUNBOOK = re.compile(r"^/alerts/runbooks/([A-Za-z0-9]+\.md)$")
PATHS = ("/pager", "/ticket", "/default", "/chat")


class Feed:
    """Every notification received, in arrival order, as dicts: `at` (Unix time), `path`, and
    the `payload` Alertmanager posted."""

    def __init__(self, log: Path, echo=print):
        self.log = log
        self.echo = echo
        self.items: list[dict] = []
        self.lock = threading.Lock()

    def add(self, path: str, payload: dict) -> None:
        item = {"at": time.time(), "path": path, "payload": payload}
        with self.lock:
            self.items.append(item)
            with open(self.log, "a") as f:
                f.write(json.dumps(item) + "\n")
        if path != "/chat":
            for line in feed_lines(item):
                self.echo(line)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.items)


def feed_lines(item: dict) -> list[str]:
    """The terminal feed's lines of one webhook notification: one per alert."""
    payload = item["payload"]
    when = time.strftime("%H:%M:%S", time.localtime(item["at"]))
    lines = []
    for a in payload.get("alerts", []):
        labels, ann = a.get("labels", {}), a.get("annotations", {})
        tier = f" tier={labels['tier']}" if "tier" in labels else ""
        lines.append(f"receiver: {when} {payload.get('receiver', '?'):7} {a.get('status', '?').upper():8} "
                     f"{labels.get('alertname', '?')}{tier}: {ann.get('summary', '')}")
    if payload.get("status") == "firing":
        runbooks = sorted({a.get("annotations", {}).get("runbook_url", "") for a in payload.get("alerts", [])} - {""})
        lines += [f"receiver:          runbook: {r}" for r in runbooks]
    return lines


STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:20px;margin:0 0 .3em}.note{background:#f4f6fa;border-left:4px solid #6b8bd6;padding:.6em 1em;margin:.8em 0}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}
.firing{color:#fff;background:#c0392b;padding:1px 6px;border-radius:3px}.resolved{color:#fff;background:#27ae60;padding:1px 6px;border-radius:3px}
.desc{color:#555;font-size:12px}pre{white-space:pre-wrap;margin:0;font-size:12px}a{color:#2557b8}"""


def page(feed: Feed, info: dict, refresh: bool = True) -> str:
    """The receiver's page: what runs, the expectations, and every notification, newest first.
    It reloads itself every 5 s unless `refresh` is off (a screenshot waits for a page to
    settle)."""
    e = html.escape
    links = " · ".join(f'<a href="{e(u)}">{e(k)}</a>' for k, u in info.get("links", {}).items())
    rows = []
    for item in reversed(feed.snapshot()):
        payload = item["payload"]
        when = time.strftime("%H:%M:%S", time.localtime(item["at"]))
        if item["path"] == "/chat":
            for att in payload.get("attachments", []):
                rows.append(f"<tr><td>{when}</td><td>chat<br>{e(payload.get('channel', ''))}</td>"
                            f"<td colspan=3><b>{e(att.get('title', ''))}</b><pre>{e(att.get('text', ''))}</pre></td></tr>")
            continue
        for a in payload.get("alerts", []):
            labels, ann = a.get("labels", {}), a.get("annotations", {})
            status = a.get("status", "?")
            runbook = ann.get("runbook_url", "")
            extra = [f'<a href="/{e(runbook)}">runbook</a>'] if runbook else []
            if a.get("generatorURL"):
                extra.append(f'<a href="{e(a["generatorURL"])}">rule in Prometheus</a>')
            if ann.get("dashboard_url"):
                extra.append(f'<a href="/grafana{e(ann["dashboard_url"])}">dashboard (Prometheus)</a>')
            tier = f" <small>tier {e(labels['tier'])}</small>" if "tier" in labels else ""
            rows.append(
                f"<tr class='{e(labels.get('severity', ''))}'><td>{when}</td><td>{e(payload.get('receiver', ''))}</td>"
                f"<td><span class='{e(status)}'>{e(status.upper())}</span></td>"
                f"<td>{e(labels.get('alertname', ''))}{tier}<br><small>severity {e(labels.get('severity', '-'))}"
                f", since {e(a.get('startsAt', '')[11:19])} UTC</small></td>"
                f"<td>{e(ann.get('summary', ''))}<div class='desc'>{e(ann.get('description', ''))}</div>"
                f"{' · '.join(extra)}</td></tr>")
    body = "\n".join(rows) or "<tr><td colspan=5>No notification yet.</td></tr>"
    held = alertmanager_table(info.get("alertmanager"))
    notes = "".join(f"<div class='note'>{n}</div>" for n in info.get("notes", []))
    reload = "<meta http-equiv='refresh' content='5'>" if refresh else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{reload}"
            f"<title>challenge-latam-api demo: notifications</title><style>{STYLE}</style></head><body>"
            f"<h1>challenge-latam-api demo: notifications as they arrive</h1><div>{links}</div>{notes}"
            f"<p>{len(feed.snapshot())} notifications received{'; this page reloads every 5 s' if refresh else ''}.</p>"
            f"<table><tr><th>received</th><th>receiver</th><th>status</th><th>alert</th><th>what</th></tr>"
            f"{body}</table>{held}</body></html>")


def alertmanager_table(am: str | None) -> str:
    """Alertmanager's alerts now, with what holds each back: Debian's Alertmanager ships no web
    UI, so the inhibited tickets are shown here, read from its API."""
    if not am:
        return ""
    e = html.escape
    try:
        with urllib.request.urlopen(f"{am}/api/v2/alerts", timeout=2) as r:
            alerts = json.load(r)
    except (OSError, ValueError) as err:
        return f"<h2>Alertmanager now</h2><p>{e(am)}/api/v2/alerts did not answer: {e(str(err))}</p>"
    names = {a["fingerprint"]: a["labels"].get("alertname", "") + (
        f" ({a['labels']['tier']})" if "tier" in a["labels"] else "") for a in alerts}
    rows = []
    for a in sorted(alerts, key=lambda a: (a["labels"].get("alertname", ""), a["labels"].get("tier", ""))):
        st = a.get("status", {})
        by = ", ".join(names.get(fp, fp) for fp in st.get("inhibitedBy") or [])
        state = f"{st.get('state', '?')}" + (f": inhibited by {by}" if by else "")
        rows.append(f"<tr><td>{e(names[a['fingerprint']])}</td><td>{e(a['labels'].get('severity', '-'))}</td>"
                    f"<td>{e(', '.join(x['name'] for x in a.get('receivers', [])))}</td><td>{e(state)}</td></tr>")
    body = "".join(rows) or "<tr><td colspan=4>No alert.</td></tr>"
    return (f"<h2>Alertmanager now</h2><p>Every alert Prometheus sent, from <a href='{e(am)}/api/v2/alerts'>"
            f"its API</a> (Debian's Alertmanager has no web UI; <code>amtool alert query --inhibited "
            f"--alertmanager.url={e(am)}</code> shows the same).</p><table><tr><th>alert</th><th>severity</th>"
            f"<th>receiver</th><th>state</th></tr>{body}</table>")


def serve(port: int, feed: Feed, info: dict, root: Path, prometheus: str) -> ThreadingHTTPServer:
    """Starts the receiver on 127.0.0.1:`port` in a daemon thread; `info` holds the page's links
    and notes (read at each request, so the caller may fill it later)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path not in PATHS:
                return self.answer(404, b"unknown receiver path\n")
            try:
                feed.add(self.path, json.loads(body))
            except ValueError:
                return self.answer(400, b"not JSON\n")
            self.answer(200, b"ok\n")

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            path = url.path
            if path == "/":
                text = page(feed, info, refresh=url.query != "static")
                return self.answer(200, text.encode(), "text/html; charset=utf-8")
            if path == "/api/notifications":
                return self.answer(200, json.dumps(feed.snapshot()).encode(), "application/json")
            m = RUNBOOK.match(path)
            if m and (root / "alerts/runbooks" / m.group(1)).is_file():
                text = (root / "alerts/runbooks" / m.group(1)).read_bytes()
                return self.answer(200, text, "text/plain; charset=utf-8")
            if path.startswith("/grafana/d/"):
                # No Grafana runs here: the SLO dashboard's burn-rate rows, as a Prometheus graph.
                q = {"g0.expr": "slo:sli_error:ratio_rate5s", "g0.tab": "0", "g0.range_input": "15m",
                     "g1.expr": "slo:sli_error:ratio_rate1m", "g1.tab": "0", "g1.range_input": "15m"}
                self.send_response(302)
                self.send_header("Location", f"{prometheus}/classic/graph?{urllib.parse.urlencode(q)}")
                self.end_headers()
                return None
            return self.answer(404, b"not found\n")

        def answer(self, status, body, ctype="text/plain; charset=utf-8"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="receiver").start()
    return server
