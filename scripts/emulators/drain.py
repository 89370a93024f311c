#!/usr/bin/env python3
"""The Pub/Sub worker (BACKEND=gcp with PUBSUB_SUBSCRIPTION) on the emulators: how long it takes
to drain a backlog, and publish to queryable at a steady rate (docs/benchmarks.md, "Ingest on
BACKEND=gcp: where the tail came from", the linger follow-up).

    scripts/build.sh && .tools/venv/bin/python scripts/emulators/drain.py
    .tools/venv/bin/python scripts/emulators/drain.py --backlog 20000 --rounds 3 \
        --rate 200 --seconds 20 --case 'as built' --case 'one worker thread=TOKIO_WORKER_THREADS=1'

drain   BACKLOG records are published (REST, 1,000 a call) while no worker runs; then the
        service starts with the worker, and the drain time is from /readyz to the moment its
        own count of stored messages (pipeline_end_to_end_latency_seconds_count) reaches
        BACKLOG. Printed with it: rows a second, the store's inserts (the pipeline's batches:
        rows per insert) and the receives.
steady  with the worker running, RATE records a second are published one per call for
        SECONDS; publish to queryable is the worker's own histogram of it (mean from _sum and
        _count, and the share under each bucket bound).

Each --case is a label and the service settings it adds (`label=K=V,K=V`, or a bare label for
none), so a scratch build can be compared with itself under a setting; the cases alternate
within each round. Everything runs on 127.0.0.1; the emulators are started here (ports 0, a
temporary EMULATOR_DIR) and stopped at the end, with every service this started, by PID.
The emulators are not Google's services: figures compare cases of one run, on one machine.
Exits 1 when a drain does not finish within 600 s or a steady run loses records. Needs
.tools/venv's Python (prometheus_client reads the worker's metrics).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "loadtests/lib"))
from service import Service, make_keys, samples  # noqa: E402

E2E = "pipeline_end_to_end_latency_seconds"


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def record(run: str, i: int) -> dict:
    """One message as the service publishes it: a record of one order (loadtests/wrk/ingest.lua)."""
    c = i % 64
    body = {"customerId": f"drain-{c}", "name": f"Drain Customer {c}",
            "orders": [{"orderId": f"{run}-{i}", "total": 50.0}], "revenue": 50.0}
    return {"data": base64.b64encode(json.dumps(body).encode()).decode()}


def publish_backlog(topic_url: str, run: str, n: int) -> None:
    for start in range(0, n, 1000):
        post(f"{topic_url}:publish",
             {"messages": [record(run, i) for i in range(start, min(n, start + 1000))]})


def counters(svc: Service) -> dict:
    """Messages stored (e2e count and sum), store operations and receives, from one scrape."""
    text = svc.metrics()
    out = {"stored": 0.0, "e2e_sum": 0.0, "inserts": 0.0, "receives": 0.0, "buckets": {}}
    for labels, v in samples(text, f"{E2E}_count"):
        out["stored"] += v
    for labels, v in samples(text, f"{E2E}_sum"):
        out["e2e_sum"] += v
    for labels, v in samples(text, f"{E2E}_bucket"):
        le = float(labels["le"])
        out["buckets"][le] = out["buckets"].get(le, 0.0) + v
    for labels, v in samples(text, "db_client_operation_duration_seconds_count"):
        if "query" not in labels.get("db_operation_name", ""):
            out["inserts"] += v
    for labels, v in samples(text, "messaging_client_operation_duration_seconds_count"):
        if labels.get("messaging_operation_name") == "receive":
            out["receives"] += v
    return out


def start_worker(work: Path, label: str, env: dict, emu: dict, keys: Path) -> Service:
    svc = Service(data_dir=work / f"data-{label}-{time.monotonic_ns()}", env={
        "BACKEND": "gcp", "GCP_PROJECT": emu["GCP_PROJECT"], "PUBSUB_TOPIC": emu["PUBSUB_TOPIC"],
        "PUBSUB_SUBSCRIPTION": emu["PUBSUB_SUBSCRIPTION"], "BQ_DATASET": emu["BQ_DATASET"],
        "BQ_TABLE": emu["BQ_TABLE"], "PUBSUB_EMULATOR_HOST": emu["PUBSUB_EMULATOR_HOST"],
        "BIGQUERY_EMULATOR_HOST": emu["BIGQUERY_EMULATOR_HOST"], "API_KEYS_FILE": str(keys),
        "RUST_LOG": "warn", **env})
    return svc.start(wait_ready=30)


def drain(work, label, env, emu, keys, topic_url, n) -> dict:
    run = f"{label.replace(' ', '_')}-{time.monotonic_ns()}"
    publish_backlog(topic_url, run, n)
    svc = start_worker(work, label, env, emu, keys)
    try:
        t0 = time.monotonic()
        deadline = t0 + 600
        c = counters(svc)
        while c["stored"] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"drain: {label}: {c['stored']:.0f} of {n} stored after 600 s")
            time.sleep(0.05)
            c = counters(svc)
        took = time.monotonic() - t0
    finally:
        svc.stop()
    return {"seconds": took, "rows_per_s": n / took, "inserts": c["inserts"],
            "rows_per_insert": c["stored"] / max(c["inserts"], 1), "receives": c["receives"]}


def steady(work, label, env, emu, keys, topic_url, rate, seconds) -> dict:
    svc = start_worker(work, label, env, emu, keys)
    try:
        time.sleep(1)
        before = counters(svc)
        run = f"{label.replace(' ', '_')}-{time.monotonic_ns()}"
        period, sent, t0 = 1.0 / rate, 0, time.monotonic()
        while sent < rate * seconds:
            post(f"{topic_url}:publish", {"messages": [record(run, sent)]})
            sent += 1
            pause = t0 + sent * period - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        achieved = sent / (time.monotonic() - t0)
        deadline = time.monotonic() + 60
        c = counters(svc)
        while c["stored"] - before["stored"] < sent and time.monotonic() < deadline:
            time.sleep(0.1)
            c = counters(svc)
    finally:
        svc.stop()
    n = c["stored"] - before["stored"]
    buckets = {le: c["buckets"].get(le, 0) - before["buckets"].get(le, 0) for le in c["buckets"]}
    return {"sent": sent, "rate": achieved, "stored": n,
            "mean_ms": (c["e2e_sum"] - before["e2e_sum"]) / max(n, 1) * 1000,
            "under": {le: buckets[le] / max(n, 1) for le in sorted(buckets) if le <= 1.0},
            "rows_per_insert": n / max(c["inserts"] - before["inserts"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--case", action="append", default=[],
                    help="label[=K=V,K=V]: a case and the service settings it adds")
    args = ap.parse_args()
    cases = []
    for spec in args.case or ["as built"]:
        label, _, settings = spec.partition("=")
        env = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
        cases.append((label, env))

    work = Path(tempfile.mkdtemp(prefix="drain-"))
    keys, _ = make_keys(work, 1, "drain")
    emu_env = dict(os.environ, EMULATOR_DIR=str(work / "emulators"), PUBSUB_PORT="0", BQ_PORT="0",
                   BQ_GRPC_PORT="0", PATH=f"{ROOT}/.tools/venv/bin:{os.environ['PATH']}")
    started = subprocess.run([ROOT / "scripts/emulators.sh", "start"], env=emu_env,
                             capture_output=True, text=True, check=True).stdout
    emu = dict(line.removeprefix("export ").split("=", 1) for line in started.splitlines()
               if line.startswith("export "))
    topic_url = f"http://{emu['PUBSUB_EMULATOR_HOST']}/v1/projects/{emu['GCP_PROJECT']}/topics/{emu['PUBSUB_TOPIC']}"
    results: dict[str, dict[str, list]] = {label: {"drain": [], "steady": []} for label, _ in cases}
    try:
        print(f"drain: backlog {args.backlog}, steady {args.rate:g}/s for {args.seconds:g} s, "
              f"{args.rounds} rounds, cases: {', '.join(l for l, _ in cases)}", flush=True)
        for r in range(args.rounds):
            # Rotate the order: the table grows, and the machine is shared.
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for label, env in order:
                d = drain(work, label, env, emu, keys, topic_url, args.backlog)
                results[label]["drain"].append(d)
                print(f"drain: R{r + 1} {label:<12} drain {d['seconds']:6.2f} s ({d['rows_per_s']:6.0f} rows/s), "
                      f"{d['inserts']:.0f} inserts ({d['rows_per_insert']:.0f} rows each), "
                      f"{d['receives']:.0f} receives", flush=True)
            for label, env in order:
                s = steady(work, label, env, emu, keys, topic_url, args.rate, args.seconds)
                results[label]["steady"].append(s)
                under = ", ".join(f"<= {le * 1000:g} ms {v:.1%}" for le, v in s["under"].items())
                print(f"drain: R{r + 1} {label:<12} steady {s['rate']:.0f}/s: {s['stored']:.0f} of {s['sent']} stored, "
                      f"publish to queryable mean {s['mean_ms']:.1f} ms ({under}); "
                      f"{s['rows_per_insert']:.1f} rows an insert", flush=True)
        lost = [s for label, _ in cases for s in results[label]["steady"] if s["stored"] < s["sent"]]
        for label, _ in cases:
            ds, ss = results[label]["drain"], results[label]["steady"]
            print(f"drain: {label:<12} median drain {statistics.median(d['seconds'] for d in ds):.2f} s "
                  f"({', '.join(format(d['seconds'], '.2f') for d in ds)}); median steady mean "
                  f"{statistics.median(s['mean_ms'] for s in ss):.1f} ms "
                  f"({', '.join(format(s['mean_ms'], '.1f') for s in ss)})")
    finally:
        subprocess.run([ROOT / "scripts/emulators.sh", "stop"], env=emu_env, capture_output=True)
        # Service data dirs and emulator logs; KEEP=1 keeps them for a look.
        if os.environ.get("KEEP"):
            print(f"drain: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if lost:
        print(f"drain: FAIL: {len(lost)} steady runs stored fewer records than were published", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
