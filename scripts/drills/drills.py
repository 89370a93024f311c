#!/usr/bin/env python3
"""Reliability drills against the real release binary on the embedded default.

    scripts/drills/drills.py [sigkill|sigterm|diskfull|faults|emulators|batchkill|workerkill|all ...]

Each drill starts the service itself (fresh DATA_DIR, ports on 127.0.0.1), puts it under a
bounded load from a few client threads, does one bad thing to it, prints what it did and
what it saw, and fails (exit 1) when the service broke a promise:

  sigkill   SIGKILL under load, three times over one DATA_DIR: every message id the API
            acknowledged is in the store after the restarts (acknowledged vs stored); the kills
            cut requests off mid-flight (at least one over the rounds, at most one per client
            thread a round), and the only records stored without an answer are those of the
            requests cut off (at most their count times the batch size).
  sigterm   SIGTERM under load with requests in flight: they complete (200), nothing answers
            5xx, the process exits 0 within SHUTDOWN_TIMEOUT_MS, and what was acknowledged is
            stored after a restart.
  diskfull  DATA_DIR on a 4 MiB tmpfs (needs root: without it the drill fails in CI and is
            reported NOT RUN elsewhere, which exits non-zero too): ingest answers 503 once the
            disk is full and /readyz answers 503 naming the broker, nothing that was
            acknowledged is missing, and after the filesystem grows ingest succeeds and /readyz
            answers 200 again without a restart.
  faults    slow and failing broker and store through PUT /admin/faults: 504 for timeouts,
            503 (with Retry-After) for failures, /readyz names the failed dependency, and
            clearing the faults brings everything back without a restart.
  emulators the emulator stack (scripts/emulators.sh) on BACKEND=gcp: kill and restart each
            emulator under load: nothing acknowledged is lost or dead-lettered while BigQuery is
            down, ingest never answers 200 while Pub/Sub is down, both recover without a
            restart (see docs/reliability.md for what an in-memory emulator can promise).
  batchkill six clients post batches of 1 to 3 records (each its own customer), the process is
            SIGKILLed after 4 s and started again on the same DATA_DIR, the clients stop 2 s
            later: every record answered 200 is in getData (per customer, following the Link
            pages) within 60 s of the restart, and nothing is in dead_letters.
  workerkill the same on the emulator stack (BACKEND=gcp with the worker, the subscription with
            Terraform's retry and dead-letter policies): every acknowledged record queryable
            within 60 s of the restart, nothing on the dead-letter topic.

Standard library only; the load is a few threads of urllib, bounded in count and time.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests/lib"))
import service as svc  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class DrillFailed(Exception):
    pass


class NotRun(Exception):
    """The drill could not run here (e.g. no root): reported, and the run exits non-zero."""


def say(drill: str, msg: str) -> None:
    print(f"[{drill}] {msg}", flush=True)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise DrillFailed(what)


def record(tag: str, n: int) -> dict:
    return {"customerId": tag, "name": f"Drill {tag}",
            "orders": [{"orderId": f"{tag}-{n}", "total": 10.5}], "revenue": 10.5}


class Load:
    """A few client threads posting records to `service` until stopped; keeps every answer.

    Each result is (started, finished, status, message_ids, retry_after) with monotonic
    times, so a drill can ask what was in flight at a given moment.
    """

    def __init__(self, service: svc.Service, tag: str, threads: int = 6, batch: int = 1,
                 get_share: float = 0.0, pause: float = 0.0, key: str = ""):
        self.service, self.tag, self.batch = service, tag, batch
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.get_share, self.pause = get_share, pause
        self.results: list[tuple[float, float, int, list[str], bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]
        self._n = 0

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, worker: int) -> None:
        import random
        while not self._stop.is_set():
            with self._lock:
                self._n += 1
                n = self._n
            started = time.monotonic()
            if self.get_share and random.random() < self.get_share:
                status, headers, _ = svc.http(
                    "GET", f"{self.service.url}{svc.GET_DATA}?customerId={self.tag}&limit=5",
                    headers=self.auth, timeout=15)
                ids: list[str] = []
            else:
                body = [record(self.tag, n * 1000 + i) for i in range(self.batch)]
                payload = json.dumps(body if self.batch > 1 else body[0]).encode()
                status, headers, raw = svc.http(
                    "POST", f"{self.service.url}{svc.INGEST}", payload,
                    {"Content-Type": "application/json", **self.auth}, timeout=15)
                ids = []
                if status == 200:
                    ids = json.loads(raw)["messageIds"]
            finished = time.monotonic()
            retry = any(k.lower() == "retry-after" for k in headers)
            with self._lock:
                self.results.append((started, finished, status, ids, retry))
            if status == 0:
                time.sleep(0.05)  # the service is down: do not spin
            elif self.pause:
                time.sleep(self.pause)

    def acknowledged(self) -> set[str]:
        with self._lock:
            return {i for r in self.results for i in r[3]}

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        with self._lock:
            for r in self.results:
                out[r[2]] = out.get(r[2], 0) + 1
        return dict(sorted(out.items()))


def stored_ids(data_dir: Path, tag: str) -> set[str]:
    """Message ids of `tag`'s rows in store.db, read directly (read-only, beside the writer)."""
    db = data_dir / "store.db"
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0] for r in conn.execute(
            "SELECT message_id FROM records WHERE customerId = ?", (tag,))}
    finally:
        conn.close()


def wait_stored(data_dir: Path, tag: str, want: set[str], timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        have = stored_ids(data_dir, tag)
        if want <= have or time.monotonic() > deadline:
            return have
        time.sleep(0.25)


def readiness(service: svc.Service) -> tuple[int, dict]:
    """/readyz: (status, body as JSON; {} when it is not JSON)."""
    status, _, raw = svc.http("GET", f"{service.url}/readyz")
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


NO_FAULTS = {"http_error_rate": 0.0, "http_latency_ms": 0, "store_error_rate": 0.0,
             "store_latency_ms": 0, "broker_error_rate": 0.0, "broker_latency_ms": 0}

# The drills load the service harder than one client's default rate limit (50/s per peer);
# a high limit keeps the load real, as behind Cloud Run where each client has its own IP.
UNLIMITED = {"RATE_LIMIT_PER_SECOND": "100000", "RATE_LIMIT_BURST": "100000"}


# --- drills --------------------------------------------------------------------------------

def drill_sigkill() -> None:
    d = "sigkill"
    rounds, tag = 3, "drill-sigkill"
    with tempfile.TemporaryDirectory(prefix="drill-kill-") as tmp:
        data = Path(tmp) / "data"
        service = svc.Service(data_dir=data, log=Path(tmp) / "service.log", env=UNLIMITED)
        acked: set[str] = set()
        threads = 6
        cut_off_total = cut_off_records = 0
        for n in range(1, rounds + 1):
            batch = 1 if n % 2 else 10
            service.start()
            load = Load(service, tag, threads=threads, batch=batch).start()
            time.sleep(2.0)
            signalled = time.monotonic()
            service.kill()  # returns once the process is gone
            killed_at = time.monotonic()
            load.stop()
            got = load.acknowledged()
            # Sent before the signal and never answered: in flight when the process died.
            in_flight = sum(1 for r in load.results if r[0] < signalled and r[2] == 0)
            # Any request sent before the process was surely gone may have been committed
            # unanswered (those sent after the signal met a dying process: counting them only
            # loosens the bound on stored records below).
            may_have_committed = sum(1 for r in load.results if r[0] < killed_at and r[2] == 0)
            cut_off_total += in_flight
            cut_off_records += may_have_committed * batch
            acked |= got
            say(d, f"round {n}: SIGKILL pid {service.pid} after 2 s of load: "
                   f"{len(got)} records acknowledged, answers {load.statuses()}, "
                   f"{in_flight} requests cut off without an answer (at most {threads}: one per client thread)")
            expect(not any(500 <= s for s in load.statuses() if s != 503),
                   f"round {n}: a 5xx other than 503 before the kill")
            # Each client thread waits for its answer before it sends again, so no more than
            # `threads` requests can be left unanswered by one kill; more means the load
            # accounting (and so every figure above) is wrong.
            expect(in_flight <= threads,
                   f"round {n}: {in_flight} requests cut off, more than the {threads} that can be in flight")
        service.start()
        have = wait_stored(data, tag, acked, timeout=60)
        service.stop()
        missing = acked - have
        unanswered = have - acked
        say(d, f"after {rounds} kills and a restart: acknowledged {len(acked)}, stored "
               f"{len(have)} (of which {len(unanswered)} committed but cut off before the "
               f"answer: at most the {cut_off_records} records of the requests left unanswered at the kills), "
               f"missing {len(missing)}")
        expect(len(acked) > 0, "nothing was acknowledged: the load did not run")
        expect(cut_off_total > 0,
               f"no request was in flight at any of the {rounds} kills: the drill proved nothing about them")
        expect(not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}")
        # A stored record nobody was told about can only come from a request the kill cut off:
        # one answered with an error (503) must have stored nothing (a batch is all-or-nothing).
        expect(len(unanswered) <= cut_off_records,
               f"{len(unanswered)} records stored without a 200, more than the {cut_off_records} records "
               f"of the requests left unanswered at the kills: a request answered with an error stored records")


def drill_sigterm() -> None:
    d = "sigterm"
    tag = "drill-sigterm"
    deadline_ms = 10000
    with tempfile.TemporaryDirectory(prefix="drill-term-") as tmp:
        data = Path(tmp) / "data"
        service = svc.Service(data_dir=data, log=Path(tmp) / "service.log",
                              env={"SHUTDOWN_TIMEOUT_MS": str(deadline_ms), **UNLIMITED})
        service.start()
        # Slow every publish by 400 ms so that requests are surely in flight at the signal.
        status, _, _ = svc.http("PUT", f"{service.admin_url}/admin/faults",
                                json.dumps({"broker_latency_ms": 400}).encode(),
                                {"Content-Type": "application/json"})
        expect(status == 200, f"PUT /admin/faults answered {status}")
        load = Load(service, tag, threads=8).start()
        time.sleep(1.5)
        sent_at = time.monotonic()
        service.signal(signal.SIGTERM)
        code = service.wait(deadline_ms / 1000 + 5)
        exited_after = time.monotonic() - sent_at
        load.stop()
        service.stop()
        in_flight = [r for r in load.results if r[0] < sent_at < r[1]]
        in_flight_ok = [r for r in in_flight if r[2] == 200]
        fivexx = [r for r in load.results if r[2] >= 500]
        acked = load.acknowledged()
        say(d, f"SIGTERM to pid {service.pid} with {len(in_flight)} requests in flight: "
               f"{len(in_flight_ok)} of them answered 200; all answers {load.statuses()} "
               f"(0 = connection refused after the listener closed); exit code {code} after "
               f"{exited_after:.2f} s (deadline {deadline_ms / 1000:.0f} s)")
        expect(code is not None, f"still running {deadline_ms / 1000 + 5:.0f} s after SIGTERM")
        expect(code == 0, f"exit code {code}, want 0")
        expect(len(in_flight) > 0, "no request was in flight at the signal: the drill proved nothing")
        expect(len(in_flight_ok) == len(in_flight),
               f"{len(in_flight) - len(in_flight_ok)} in-flight requests did not complete with 200")
        expect(not fivexx, f"{len(fivexx)} answers were 5xx")
        service.start()
        have = wait_stored(data, tag, acked, timeout=30)
        service.stop()
        missing = acked - have
        say(d, f"after restart: acknowledged {len(acked)}, stored {len(have)}, missing {len(missing)}")
        expect(not missing, f"{len(missing)} acknowledged records lost")


def drill_diskfull() -> None:
    d = "diskfull"
    tag = "drill-diskfull"
    if os.geteuid() != 0:
        msg = "needs root to mount a tmpfs (mount -t tmpfs -o size=4m)"
        if IN_CI:
            raise DrillFailed(msg + "; CI runs as root, so this is a broken CI setup")
        raise NotRun(msg + "; run it as root")
    with tempfile.TemporaryDirectory(prefix="drill-disk-") as tmp:
        mnt = Path(tmp) / "small"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
        service = None
        try:
            data = mnt / "data"
            service = svc.Service(data_dir=data, log=Path(tmp) / "service.log", env=UNLIMITED)
            service.start()
            say(d, f"DATA_DIR on a 4 MiB tmpfs at {mnt}; loading with batches of 100 records")
            load = Load(service, tag, threads=4, batch=100).start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if sum(1 for r in load.results[-20:] if r[2] == 503) >= 5:
                    break
                time.sleep(0.2)
            # Readiness while the disk is full and ingest is being refused (the load still runs).
            # The local broker reports a failed publish for UNHEALTHY_FOR (5 s) after the last
            # one, so readiness stays 503 for as long as publishes keep failing; with no traffic
            # at all it turns 200 again 5 s after the last failure, since nothing has shown the
            # disk to be full since. So probe while the load runs.
            ready, body = readiness(service)
            load.stop()
            statuses = load.statuses()
            rejected = [r for r in load.results if r[2] == 503]
            df = subprocess.run(["df", "-k", str(mnt)], capture_output=True, text=True).stdout
            used = df.splitlines()[-1].split()[4] if df else "?"
            say(d, f"disk {used} used; answers {statuses}; {len(rejected)} x 503 "
                   f"({sum(1 for r in rejected if r[4])} with Retry-After); /readyz {ready} "
                   f"{json.dumps(body)}")
            expect(len(rejected) > 0, "ingest never answered 503 on a full disk")
            expect(all(r[4] for r in rejected), "a 503 without Retry-After")
            other = {s: c for s, c in statuses.items() if s >= 500 and s != 503}
            expect(not other, f"5xx other than 503 on a full disk: {other}")
            # CONTRACT.md: /readyz is 503 naming the dependency that failed; the broker's log is
            # what cannot be written, so a load balancer must stop sending ingest here.
            expect(ready == 503 and body.get("broker") not in (None, "ok"),
                   f"/readyz answered {ready} {body} on a full disk; want 503 with the broker named")
            acked = load.acknowledged()

            # Space returns: the filesystem grows (an operator resized or cleaned the volume).
            subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)
            returned = time.monotonic()
            recovered_after = None
            probe = 0
            while time.monotonic() - returned < 30:
                probe += 1
                status, _, raw = svc.http(
                    "POST", f"{service.url}{svc.INGEST}",
                    json.dumps(record(tag, 10_000_000 + probe)).encode(),
                    {"Content-Type": "application/json"})
                if status == 200:
                    acked |= set(json.loads(raw)["messageIds"])
                    recovered_after = time.monotonic() - returned
                    break
                time.sleep(0.2)
            say(d, "filesystem grown to 256 MiB: "
                   + (f"ingest answered 200 again after {recovered_after:.2f} s, same pid "
                      f"{service.pid}, no restart" if recovered_after is not None
                      else "ingest did NOT recover within 30 s"))
            expect(recovered_after is not None, "no recovery without a restart")
            # Ready again too, without a restart: both dependencies answer.
            ready_after = None
            while time.monotonic() - returned < 40:
                ready, body = readiness(service)
                if ready == 200:
                    ready_after = time.monotonic() - returned
                    break
                time.sleep(0.2)
            say(d, f"/readyz {ready} {json.dumps(body)}"
                   + (f" {ready_after:.2f} s after space returned" if ready_after is not None else " (not ready within 40 s)"))
            expect(ready_after is not None and body.get("broker") == "ok" and body.get("store") == "ok",
                   f"/readyz did not answer 200 with broker and store ok after space returned: {ready} {body}")
            have = wait_stored(data, tag, acked, timeout=60)
            missing = acked - have
            say(d, f"acknowledged {len(acked)}, stored {len(have)}, missing {len(missing)}")
            expect(not missing, f"{len(missing)} acknowledged records are not stored")
        finally:
            if service:
                service.stop()
            subprocess.run(["umount", str(mnt)], check=False)


def drill_faults() -> None:
    d = "faults"
    tag = "drill-faults"
    with tempfile.TemporaryDirectory(prefix="drill-faults-") as tmp:
        service = svc.Service(data_dir=Path(tmp) / "data", log=Path(tmp) / "service.log",
                              env={"REQUEST_TIMEOUT_MS": "500", **UNLIMITED})
        service.start()
        pid = service.pid
        load = Load(service, tag, threads=3, get_share=0.5, pause=0.02).start()

        def put(faults: dict) -> None:
            # PUT merges into the current set, so every field is sent: one fault at a time.
            status, _, _ = svc.http("PUT", f"{service.admin_url}/admin/faults",
                                    json.dumps({**NO_FAULTS, **faults}).encode(),
                                    {"Content-Type": "application/json"})
            expect(status == 200, f"PUT /admin/faults {faults} answered {status}")

        def probe(kind: str) -> tuple[int, bool]:
            if kind == "ingest":
                s, h, _ = svc.http("POST", f"{service.url}{svc.INGEST}",
                                   json.dumps(record(tag, 0)).encode(),
                                   {"Content-Type": "application/json"})
            else:
                s, h, _ = svc.http("GET", f"{service.url}{svc.GET_DATA}?limit=5")
            return s, any(k.lower() == "retry-after" for k in h)

        def readiness() -> tuple[int, dict]:
            s, _, b = svc.http("GET", f"{service.url}/readyz")
            try:
                return s, json.loads(b)
            except ValueError:
                return s, {}

        cases = [
            # (faults, route probed, status wanted, dependency /readyz must name or None)
            ({"broker_latency_ms": 1500}, "ingest", 504, "broker"),
            ({"broker_error_rate": 1.0}, "ingest", 503, "broker"),
            ({"store_latency_ms": 1500}, "getData", 504, "store"),
            ({"store_error_rate": 1.0}, "getData", 503, "store"),
        ]
        failures = []
        for faults, route, want, names in cases:
            put(faults)
            time.sleep(0.2)
            got = [probe(route) for _ in range(3)]
            ready, body = readiness()
            ok = all(s == want for s, _ in got) and (want != 503 or all(r for _, r in got))
            if names:  # slow (past the deadline) or failing: /readyz names it either way
                ok = ok and ready == 503 and body.get(names) not in (None, "ok")
            say(d, f"{json.dumps(faults)}: {route} answered {[s for s, _ in got]} "
                   f"(want {want}{', with Retry-After' if want == 503 else ''}); /readyz {ready} "
                   f"broker={body.get('broker')} store={body.get('store')}"
                   f"{'' if ok else '  <-- FAILED'}")
            if not ok:
                failures.append(f"{faults}: {route} {got}, readyz {ready} {body}")
        put({})
        cleared = time.monotonic()
        recovered = None
        while time.monotonic() - cleared < 10:
            i, _ = probe("ingest")
            g, _ = probe("getData")
            r, _ = readiness()
            if (i, g, r) == (200, 200, 200):
                recovered = time.monotonic() - cleared
                break
            time.sleep(0.1)
        load.stop()
        statuses = load.statuses()
        say(d, f"faults cleared: ingest, getData and /readyz all 200 after "
               f"{'%.2f s' % recovered if recovered is not None else 'NEVER (10 s)'}; same pid "
               f"{service.pid == pid}; background load answers {statuses}")
        service.stop()
        unexpected = {s: c for s, c in statuses.items() if s >= 500 and s not in (503, 504)}
        expect(not unexpected, f"background load saw 5xx other than 503/504: {unexpected}")
        expect(not failures, "; ".join(failures))
        expect(recovered is not None, "no recovery within 10 s of clearing the faults")


def api_ids(service: svc.Service, tag: str, key: str) -> set[str]:
    """Every message id getData returns for customer `tag`, following the Link pages."""
    ids: set[str] = set()
    url = f"{service.url}{svc.GET_DATA}?customerId={tag}&limit=1000"
    for _ in range(100):
        status, headers, body = svc.http("GET", url, headers={"Authorization": f"Bearer {key}"})
        if status != 200:
            break
        ids |= {r["messageId"] for r in json.loads(body)}
        link = next((v for k, v in headers.items() if k.lower() == "link"), "")
        if 'rel="next"' not in link:
            break
        url = service.url + link[link.index("<") + 1:link.index(">")]
    return ids


BQ_OUTAGE_S = 15
# Longer than the request deadline (5 s), so that requests are sent and answered in the outage.
PUBSUB_OUTAGE_S = 8


def metric_value(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition; fails the drill when the
    metric is absent (a scrape that failed must not read as zero)."""
    values = [value for _, value in svc.samples(text, name)]
    expect(bool(values), f"{name} is not in the service's metrics")
    return sum(values)


def drill_emulators() -> None:
    """Kill and restart each emulator under load (BACKEND=gcp with the pull worker).

    Both emulators keep their state in memory, so a killed emulator loses what it held: the
    BigQuery emulator its table, the Pub/Sub emulator its undelivered messages. What the
    service must still guarantee: records acknowledged while BigQuery is down are stored once
    it is back (the worker holds them unacknowledged, leases extended, and writes them again
    with backoff: no nack, so no delivery attempt is spent and nothing is dead-lettered), ingest
    never answers 200 while Pub/Sub is down, and the service recovers from both without a
    restart. The BigQuery outage (15 s) outlasts the worker's 10 s lease extension and the time
    in which the old fast nacks spent all 5 delivery attempts (under a second).
    """
    d = "emulators"
    script = svc.ROOT / "scripts/emulators.sh"
    if not script.exists():
        raise DrillFailed("scripts/emulators.sh is missing")
    tag = "drill-emulators"
    with tempfile.TemporaryDirectory(prefix="drill-emu-") as tmp:
        env = {**os.environ, "EMULATOR_DIR": f"{tmp}/emulators", "PUBSUB_PORT": "0",
               "BQ_PORT": "0", "BQ_GRPC_PORT": "0"}
        log = open(Path(tmp) / "emulators.log", "w")

        def stack(*args: str) -> None:
            r = subprocess.run([str(script), *args], stdout=log, stderr=subprocess.STDOUT,
                               env=env, timeout=120)
            expect(r.returncode == 0, f"emulators.sh {' '.join(args)} exited {r.returncode}")

        service = None
        try:
            stack("start")
            svc_env = {}
            for line in Path(f"{tmp}/emulators/env").read_text().splitlines():
                k, _, v = line.removeprefix("export ").partition("=")
                svc_env[k] = v
            keys_file, keys = svc.make_keys(Path(tmp), 1)
            svc_env.update(BACKEND="gcp", API_KEYS_FILE=str(keys_file), **UNLIMITED)
            service = svc.Service(data_dir=Path(tmp) / "data", env=svc_env,
                                  log=Path(tmp) / "service.log").start(wait_ready=60)
            key = keys[0]

            # BigQuery down under load.
            load = Load(service, tag, threads=4, pause=0.01, key=key).start()
            time.sleep(2)
            stack("stop-one", "bigquery")
            down = time.monotonic()
            time.sleep(BQ_OUTAGE_S)
            stack("start-one", "bigquery")
            up = time.monotonic()
            time.sleep(2)
            load.stop()
            after_down = {i for r in load.results if r[0] > down for i in r[3]}
            during = load.statuses()
            have = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not after_down <= have:
                have = api_ids(service, tag, key)
                if after_down <= have:
                    break
                time.sleep(1)
            caught_up = time.monotonic() - up
            missing = after_down - have
            dead = metric_value(service.metrics(), "pipeline_dead_lettered_messages_total")
            say(d, f"BigQuery killed under load for {BQ_OUTAGE_S} s and restarted (empty: "
                   f"in-memory): answers {during}; acknowledged from the kill on "
                   f"{len(after_down)}, stored {len(after_down & have)} "
                   f"({caught_up:.1f} s after the restart), missing {len(missing)}, "
                   f"dead-lettered {dead:g}")
            expect(after_down, "nothing acknowledged while BigQuery was down")
            expect(not missing, f"{len(missing)} records acknowledged while BigQuery was down are lost")
            expect(dead == 0, f"{dead:g} messages dead-lettered during a BigQuery outage")

            # Pub/Sub down under load.
            tag2 = tag + "-ps"
            load = Load(service, tag2, threads=4, pause=0.01, key=key).start()
            time.sleep(2)
            stack("stop-one", "pubsub")
            down = time.monotonic()
            time.sleep(PUBSUB_OUTAGE_S)
            restarting = time.monotonic()
            stack("start-one", "pubsub")
            up = time.monotonic()
            recovered = None
            while time.monotonic() - up < 30:
                if any(r[2] == 200 for r in load.results if r[0] > up):
                    recovered = time.monotonic() - up
                    break
                time.sleep(0.2)
            time.sleep(2)
            load.stop()
            # Answers to requests sent and answered while Pub/Sub was down (a request still in
            # flight when it came back may rightly succeed). Taken after the load stopped: a
            # request waits up to the deadline, so they are not all in while the outage lasts.
            outage = [r for r in load.results if r[0] > down + 0.5 and r[1] < restarting]
            out_status = {}
            for r in outage:
                out_status[r[2]] = out_status.get(r[2], 0) + 1
            after_up = {i for r in load.results if r[0] > up for i in r[3]}
            have = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not after_up <= have:
                have = api_ids(service, tag2, key)
                time.sleep(1)
            missing = after_up - have
            say(d, f"Pub/Sub killed under load for {PUBSUB_OUTAGE_S} s and restarted: answers while down "
                   f"{dict(sorted(out_status.items()))}; ingest 200 again "
                   f"{'after %.1f s' % recovered if recovered is not None else 'NEVER (30 s)'} "
                   f"without a restart; acknowledged after the restart {len(after_up)}, stored "
                   f"{len(after_up & have)}, missing {len(missing)}")
            expect(outage, "no ingest was answered while Pub/Sub was down")
            expect(200 not in out_status, "ingest answered 200 while Pub/Sub was down")
            bad = {s: c for s, c in out_status.items() if s >= 500 and s not in (503, 504)}
            expect(not bad, f"5xx other than 503/504 while Pub/Sub was down: {bad}")
            expect(recovered is not None, "ingest did not recover without a restart")
            expect(not missing, f"{len(missing)} records acknowledged after the restart are lost")
        finally:
            if service:
                service.stop()
            subprocess.run([str(script), "stop"], stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()


# --- SIGKILL of the process that stores, under concurrent batches ---------------------------

class BatchLoad:
    """`clients` threads, each posting batches of 1 to 3 records of its own customer until
    stopped, as the issue's clients did; keeps the message ids answered 200 per customer."""

    def __init__(self, service: svc.Service, tag: str, clients: int, key: str = ""):
        import random
        self.service, self.tag = service, tag
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.customers = [f"{tag}-c{i}" for i in range(clients)]
        self.acked: dict[str, set[str]] = {c: set() for c in self.customers}
        self.status: dict[int, int] = {}
        self._rng = random.Random(20261128)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in self.customers]
        self._n = 0

    def start(self) -> "BatchLoad":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, customer: str) -> None:
        while not self._stop.is_set():
            with self._lock:
                size = self._rng.randint(1, 3)
                first = self._n
                self._n += size
            body = [record(customer, first + i) for i in range(size)]
            payload = json.dumps(body if size > 1 else body[0]).encode()
            status, _, raw = svc.http("POST", f"{self.service.url}{svc.INGEST}", payload,
                                      {"Content-Type": "application/json", **self.auth},
                                      timeout=15)
            ids = json.loads(raw)["messageIds"] if status == 200 else []
            with self._lock:
                self.status[status] = self.status.get(status, 0) + 1
                self.acked[customer] |= set(ids)
            if status == 0:
                time.sleep(0.05)  # the service is down: do not spin

    def acknowledged(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.acked.values())

    def statuses(self) -> dict[int, int]:
        with self._lock:
            return dict(sorted(self.status.items()))


def customer_ids(service: svc.Service, customer: str, key: str = "") -> set[str]:
    """Every message id getData returns for `customer`, following the Link pages (a wide
    window, so that nothing stored is outside it)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ids: set[str] = set()
    url = f"{service.url}{svc.GET_DATA}?customerId={customer}&limit=1000"
    for _ in range(200):
        status, h, body = svc.http("GET", url, headers=headers, timeout=15)
        if status != 200:
            raise DrillFailed(f"getData answered {status}: {body[:200]!r}")
        ids |= {r["messageId"] for r in json.loads(body)}
        link = next((v for k, v in h.items() if k.lower() == "link"), "")
        if 'rel="next"' not in link:
            break
        url = service.url + link[link.index("<") + 1:link.index(">")]
    return ids


def emulator_dead_letters(env: dict) -> int:
    """Messages on the emulator's dead-letter topic, read through its audit subscription
    (REST pull; what was pulled stays leased for 30 s, so every pull returns new ones)."""
    url = (f"http://{env['PUBSUB_EMULATOR_HOST']}/v1/projects/{env['GCP_PROJECT']}"
           f"/subscriptions/{env['DEAD_LETTER_SUBSCRIPTION']}:pull")
    seen: set[str] = set()
    for _ in range(1000):
        status, _, body = svc.http("POST", url, json.dumps(
            {"maxMessages": 1000, "returnImmediately": True}).encode(),
            {"Content-Type": "application/json"})
        expect(status == 200, f"pull from the dead-letter subscription answered {status}")
        got = json.loads(body or b"{}").get("receivedMessages", [])
        if not got:
            break
        seen |= {m["message"]["messageId"] for m in got}
    return len(seen)


def local_dead_letters(data_dir: Path) -> int:
    db = data_dir / "broker.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        conn.close()


# The run, scaled down for CI: fewer clients and shorter phases (the defect reproduced
# with these on the unfixed worker; docs/reliability.md has the figures).
CRASH_CLIENTS = 6
CRASH_BEFORE_KILL_S = 4.0
CRASH_AFTER_RESTART_S = 2.0
CRASH_FRESHNESS_S = 60.0


def crash_under_batches(d: str, backend: str) -> None:
    """Concurrent batches, SIGKILL of the process that runs the worker (or the embedded
    pipeline), a restart on the same settings, and then: every record answered 200 is in
    getData within 60 s of the restart, and nothing is dead-lettered (the store was healthy
    throughout)."""
    tag = f"drill-{d}"
    with tempfile.TemporaryDirectory(prefix=f"drill-{d}-") as tmp:
        data = Path(tmp) / "data"
        script = svc.ROOT / "scripts/emulators.sh"
        emu_env = {**os.environ, "EMULATOR_DIR": f"{tmp}/emulators", "PUBSUB_PORT": "0",
                   "BQ_PORT": "0", "BQ_GRPC_PORT": "0"}
        log = open(Path(tmp) / "emulators.log", "w")
        service = None
        try:
            svc_env, key = dict(UNLIMITED), ""
            if backend == "gcp":
                r = subprocess.run([str(script), "start"], stdout=log, stderr=subprocess.STDOUT,
                                   env=emu_env, timeout=120)
                expect(r.returncode == 0, f"emulators.sh start exited {r.returncode}")
                for line in Path(f"{tmp}/emulators/env").read_text().splitlines():
                    k, _, v = line.removeprefix("export ").partition("=")
                    svc_env[k] = v
                keys_file, keys = svc.make_keys(Path(tmp), 1)
                key = keys[0]
                svc_env.update(BACKEND="gcp", API_KEYS_FILE=str(keys_file))
            service = svc.Service(data_dir=data, env=svc_env, log=Path(tmp) / "service.log")
            service.start(wait_ready=60)
            load = BatchLoad(service, tag, CRASH_CLIENTS, key).start()
            time.sleep(CRASH_BEFORE_KILL_S)
            before = load.acknowledged()
            old_pid = service.pid
            service.kill()
            killed = time.monotonic()
            service.start(wait_ready=60)
            restarted = time.monotonic()
            time.sleep(CRASH_AFTER_RESTART_S)
            load.stop()
            acked = {c: set(v) for c, v in load.acked.items()}
            total = sum(len(v) for v in acked.values())
            say(d, f"{CRASH_CLIENTS} clients posting batches of 1 to 3 records; SIGKILL of pid "
                   f"{old_pid} after {CRASH_BEFORE_KILL_S:g} s ({before} records acknowledged), "
                   f"restarted as pid {service.pid} in {restarted - killed:.1f} s, clients "
                   f"stopped {CRASH_AFTER_RESTART_S:g} s later; answers {load.statuses()}")
            have: dict[str, set[str]] = {c: set() for c in acked}
            caught_up = None
            while True:
                for c in acked:
                    if not acked[c] <= have[c]:
                        have[c] = customer_ids(service, c, key)
                if all(acked[c] <= have[c] for c in acked):
                    caught_up = time.monotonic() - restarted
                    break
                if time.monotonic() - restarted > CRASH_FRESHNESS_S:
                    break
                time.sleep(1)
            missing = sum(len(acked[c] - have[c]) for c in acked)
            stored = total - missing
            if backend == "gcp":
                dead = emulator_dead_letters(svc_env)
                counted = metric_value(service.metrics(), "pipeline_dead_lettered_messages_total")
            else:
                dead = local_dead_letters(data)
                counted = metric_value(service.metrics(), "pipeline_dead_lettered_messages_total")
            say(d, f"acknowledged {total}, stored {stored} "
                   + (f"(all within {caught_up:.1f} s of the restart)" if caught_up is not None
                      else f"(after {CRASH_FRESHNESS_S:g} s)")
                   + f", dead-lettered {dead} (counted by the worker {counted:g}), missing "
                     f"{missing}")
            expect(total > 0, "nothing was acknowledged: the load did not run")
            expect(not missing, f"{missing} acknowledged records are not queryable "
                                f"{CRASH_FRESHNESS_S:g} s after the restart")
            expect(dead == 0, f"{dead} messages dead-lettered while the store was healthy")
        finally:
            if service:
                service.stop()
            if backend == "gcp":
                subprocess.run([str(script), "stop"], stdout=log, stderr=subprocess.STDOUT,
                               env=emu_env)
            log.close()


def drill_batchkill() -> None:
    crash_under_batches("batchkill", "local")


def drill_workerkill() -> None:
    crash_under_batches("workerkill", "gcp")



DRILLS = {"sigkill": drill_sigkill, "sigterm": drill_sigterm, "diskfull": drill_diskfull,
          "faults": drill_faults, "emulators": drill_emulators, "batchkill": drill_batchkill,
          "workerkill": drill_workerkill}


def main(argv: list[str]) -> int:
    names = argv or ["all"]
    if names == ["all"]:
        names = ["sigkill", "sigterm", "diskfull", "faults", "emulators", "batchkill",
                 "workerkill"]
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        print(f"unknown drill(s) {unknown}; one of {sorted(DRILLS)} or all", file=sys.stderr)
        return 2
    outcome = {}
    for name in names:
        started = time.monotonic()
        print(f"=== drill {name}", flush=True)
        try:
            DRILLS[name]()
            outcome[name] = "passed"
        except NotRun as e:
            outcome[name] = f"NOT RUN: {e}"
        except DrillFailed as e:
            outcome[name] = f"FAILED: {e}"
        except Exception as e:  # a drill that crashes has failed, with its cause shown
            outcome[name] = f"FAILED (error): {type(e).__name__}: {e}"
        print(f"=== drill {name}: {outcome[name]} ({time.monotonic() - started:.1f} s)", flush=True)
    failed = [n for n, o in outcome.items() if o.startswith("FAILED")]
    not_run = [n for n, o in outcome.items() if o.startswith("NOT RUN")]
    # A drill that did not run proved nothing: the run fails, in CI and on a laptop alike.
    print(f"drills: {len(outcome) - len(failed) - len(not_run)} of {len(outcome)} passed; "
          f"failed: {failed or 'none'}; not run: {not_run or 'none'}")
    return 1 if failed or not_run else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
