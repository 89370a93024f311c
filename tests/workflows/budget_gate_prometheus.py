#!/usr/bin/env python3
"""The error-budget gate (scripts/release/budget_gate.py) against a real Prometheus, offline.

For each history below this script writes seven hours of the service's request counters as
OpenMetrics, backfills them into a fresh TSDB with `promtool tsdb create-blocks-from openmetrics`,
starts Debian's Prometheus on 127.0.0.1 over that TSDB with the generated rules of
alerts/prometheus/ (as generated; only the budget groups' `interval: 5m` is shortened to the
global 2s, so the first evaluation comes in seconds instead of up to five minutes), waits for
every rule to be evaluated, and runs the gate's command line against it:

  healthy    0.02 % of the API requests fail all along (budget 0.05 %): no alert; `check` passes.
  burning    the same, then 10 % failing for the last 20 minutes: the fast and medium page tiers
             of availability fire (and its 30-day budget is spent): `check` refuses, `check
             --override` passes and logs who and why, `report` gives the baseline, `watch` rolls
             back on a burn that was not in the baseline and not on one that was.
  exhausted  2 % failing from 7 h to 4 h ago, clean since: no page tier fires, but the budget
             is spent: `check` refuses for the budget alone.
  and        a service whose rules are not loaded: the gate cannot judge and refuses (exit 2).

Every process is started here and stopped here by its PID; the whole run is bounded by LIMIT_S.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "loadtests", "lib"))
from service import free_port  # noqa: E402  (Prometheus cannot report a port 0 choice)
GATE = os.path.join(ROOT, "scripts", "release", "budget_gate.py")
SERVICE = "challenge-latam-api"
ROUTES = {"POST": "/challenge-latam-api/ingestData", "GET": "/challenge-latam-api/getData"}
BUCKETS = ("0.25", "1", "+Inf")  # bounds the latency rules read; every request takes 10 ms
HISTORY_S = 7 * 3600
STEP_S = 30
RPS_PER_ROUTE = 2.0
EVAL_S = 2
READY_BOUND_S = 60
LIMIT_S = 240
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"28-budget-gate: [{time.monotonic() - T0:5.1f}s] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"28-budget-gate: FAIL: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def error_ratio(scenario: str, age_s: float) -> float:
    """Share of requests answered 5xx, `age_s` seconds before now."""
    base = 0.0002
    if scenario == "burning" and age_s <= 20 * 60:
        return 0.10
    if scenario == "exhausted" and 4 * 3600 <= age_s <= 7 * 3600:
        return 0.02
    return base


def openmetrics(scenario: str, now: float) -> str:
    """Cumulative counters of http_server_request_duration_seconds, one point every STEP_S."""
    lines = ["# TYPE http_server_request_duration_seconds histogram",
             "# UNIT http_server_request_duration_seconds seconds"]
    start = now - HISTORY_S
    for method, route in ROUTES.items():
        for status in ("200", "500"):
            total = 0.0
            t = start
            while t <= now:
                ratio = error_ratio(scenario, now - t)
                total += RPS_PER_ROUTE * STEP_S * (ratio if status == "500" else 1 - ratio)
                # `service`: the label the scrape target gives every series, which the rules select.
                labels = (f'http_request_method="{method}",http_route="{route}",'
                          f'http_response_status_code="{status}",service="{SERVICE}"')
                for le in BUCKETS:
                    lines.append(f'http_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {total:.4f} {t:.3f}')
                lines.append(f"http_server_request_duration_seconds_count{{{labels}}} {total:.4f} {t:.3f}")
                lines.append(f"http_server_request_duration_seconds_sum{{{labels}}} {total * 0.01:.4f} {t:.3f}")
                t += STEP_S
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def rules_copy(tmp: str) -> list[str]:
    """The generated rules, with the budget groups evaluated at the global interval."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "prometheus", "*.rules.yml"))):
        text, n = re.subn(r"^(\s+)interval: 5m$", rf"\g<1>interval: {EVAL_S}s", open(path).read(), flags=re.M)
        if path.endswith(".slo.rules.yml") and n != 1:
            fail(f"{path}: expected one budget group with `interval: 5m`, found {n}")
        dst = os.path.join(tmp, os.path.basename(path))
        with open(dst, "w") as f:
            f.write(text)
        out.append(dst)
    if not out:
        fail("no rules in alerts/prometheus")
    return out


class Prometheus:
    """A Prometheus over a TSDB backfilled with one scenario's history."""

    def __init__(self, tmp: str, scenario: str, rules: list[str]):
        self.dir = os.path.join(tmp, scenario)
        os.makedirs(self.dir)
        data = os.path.join(self.dir, "data")
        om = os.path.join(self.dir, "history.om")
        with open(om, "w") as f:
            f.write(openmetrics(scenario, time.time()))
        out = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, data],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            fail(f"promtool create-blocks-from openmetrics ({scenario}): {out.stderr or out.stdout}")
        blocks = [d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d))]
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"global:\n  evaluation_interval: {EVAL_S}s\nrule_files:\n" + "".join(f"  - {r}\n" for r in rules))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=30d"],
            stdout=self.log, stderr=subprocess.STDOUT)
        say(f"{scenario}: {len(blocks)} blocks backfilled, Prometheus pid {self.proc.pid} on {self.url}")

    def wait_evaluated(self) -> int:
        """Waits until every rule has been evaluated once, after the backfilled blocks loaded."""
        deadline = time.monotonic() + READY_BOUND_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"Prometheus exited ({self.proc.returncode}); see {self.log.name}")
            try:
                groups = get(f"{self.url}/api/v1/rules")["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if rules and all(not r["lastEvaluation"].startswith("0001-") for r in rules):
                    bad = [r["name"] for r in rules if r["health"] != "ok"]
                    if bad:
                        fail(f"rules failing in Prometheus: {bad}")
                    return len(rules)
            except OSError:
                pass
            time.sleep(0.5)
        fail(f"Prometheus at {self.url} did not evaluate every rule within {READY_BOUND_S}s")
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def gate(prom: Prometheus, *args: str, env: dict | None = None) -> tuple[int, str]:
    out = subprocess.run([sys.executable, GATE, args[0], "--source", "prometheus", "--prometheus-url", prom.url, *args[1:]],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    return out.returncode, out.stdout + out.stderr


def expect(what: str, got: tuple[int, str], rc: int, *needles: str, absent: tuple[str, ...] = ()) -> str:
    code, text = got
    missing = [n for n in needles if n not in text]
    present = [a for a in absent if a in text]
    if code != rc or missing or present:
        fail(f"{what}: exit {code} (want {rc}); missing {missing}; unexpected {present}\n{text}")
    say(f"{what}: exit {code} as expected")
    return text


def main() -> None:
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/bootstrap.sh installs it from scripts/deps/slo.apt)")
    tmp = tempfile.mkdtemp(prefix="budget-gate-")
    running: list[Prometheus] = []
    try:
        rules = rules_copy(tmp)
        for scenario in ("healthy", "burning", "exhausted"):
            prom = Prometheus(tmp, scenario, rules)
            running.append(prom)
            say(f"{scenario}: {prom.wait_evaluated()} rules evaluated")
            summary = os.path.join(prom.dir, "summary.md")
            if scenario == "healthy":
                text = expect("healthy: check passes", gate(prom, "check"), 0, "**Pass**", "| availability |",
                              absent=("error budget exhausted", "burn-rate page firing"))
                left = re.search(r"\| availability \| ([0-9.]+)% \|", text)
                if not left or not 50 < float(left[1]) < 70:
                    fail(f"healthy: availability budget left should be about 60 % (0.02 % of 0.05 %):\n{text}")
                say(f"healthy: availability budget left {left[1]} %")
                expect("a service with no rules loaded: cannot judge", gate(prom, "check", "--service", "other-api"), 2,
                       "cannot judge", "no budget-exhausted or page burn-rate rules of other-api")
            elif scenario == "burning":
                expect("burning: check refuses", gate(prom, "check"), 1, "**Refused**",
                       "availability: fast burn-rate page firing", "availability: medium burn-rate page firing",
                       "availability: error budget exhausted")
                text = expect("burning: check --override passes and logs it",
                              gate(prom, "check", "--override", "INC-42: this release is the fix",
                                   env={"GITHUB_STEP_SUMMARY": summary, "GITHUB_ACTOR": "on-call-alice"}),
                              0, "**Overridden** by `on-call-alice`", "INC-42: this release is the fix",
                              "availability: fast burn-rate page firing")
                if "**Overridden** by `on-call-alice`" not in open(summary).read():
                    fail("the override is not in the job summary file")
                say("burning: the override, its author and its reason are in the job summary")
                outputs = os.path.join(prom.dir, "outputs")
                expect("burning: report gives the baseline", gate(prom, "report", env={"GITHUB_OUTPUT": outputs}), 0, "| availability |")
                baseline = open(outputs).read().strip()
                if baseline != "page_burns=availability/fast,availability/medium":
                    fail(f"report wrote {baseline!r}")
                say(f"burning: report wrote {baseline}")
                expect("burning: watch rolls back on a burn that was not firing before", gate(
                    prom, "watch", "--minutes", "0.05", "--interval", "1"), 1, "rolling back", "availability/fast")
                expect("burning: watch ignores burns already firing before the deploy", gate(
                    prom, "watch", "--minutes", "0.05", "--interval", "1", "--ignore", "availability/fast,availability/medium"),
                    0, "No new page-tier burn", absent=("rolling back",))
            else:
                expect("exhausted: check refuses for the budget alone", gate(prom, "check"), 1, "**Refused**",
                       "availability: error budget exhausted", absent=("burn-rate page firing",))
            prom.stop()
            running.remove(prom)
            if time.monotonic() - T0 > LIMIT_S:
                fail(f"over the {LIMIT_S}s limit")
        say(f"all gate cases passed in {time.monotonic() - T0:.0f}s")
    finally:
        for prom in running:
            prom.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
