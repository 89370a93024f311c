#!/usr/bin/env python3
"""Instructions per request of the service and of handlers-only, under callgrind: a far
less noisy companion of bench.py's rate ratio on this shared machine. Not fully
deterministic: how the pipeline batches what was published depends on timing.

Each server runs under `valgrind --tool=callgrind` on 127.0.0.1 with an empty DATA_DIR; one
keep-alive connection sends requests one at a time (--connections N: N connections at once, so
that publishes share group commits and the pipeline takes batches, as under wrk): --warmup
requests, then the counters are zeroed (`callgrind_control -z`), --requests more are sent, the
pipeline gets 3 s to store what was published, and the counters are dumped
(`callgrind_control -d`). Instructions of every thread (workers, readers, pipeline, log writer)
divided by the request count. Both servers get the same bytes (handlers-only ignores the key)
and run the same release build (scripts/build.sh). Stops only the processes it started, by PID.

Usage: loadtests/instructions.py [--requests 1500] [--warmup 200] [--connections 1] [--limit 900]
       [ingest] [getdata]
getData reads an empty store here, so its ratio shows the stack's fixed cost against a
handler that does almost nothing, not the benchmark's 1,000,000-row query.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
import service as svc  # noqa: E402

RELEASE = svc.ROOT / "target/release"
HIGH_LIMIT = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000"}


class Failed(Exception):
    """A measurement went wrong; the work directory is kept for its logs."""


def measure(binary: Path, env: dict, case: str, key: str, warmup: int, n: int, work: Path,
            deadline: float, connections: int) -> float:
    """Instructions per request of `binary` serving `n` requests of `case`."""
    out = work / "callgrind.out"
    # callgrind_control finds the server through a file valgrind names after USER and HOST:
    # both sides must see the same values (Service gives the server HOST=127.0.0.1 and
    # nothing else of the caller's environment).
    user = {name: os.environ.get(name, "nobody") for name in ("USER", "LOGNAME")}
    control = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": "127.0.0.1", **user}
    server = svc.Service(data_dir=work, env={**user, **env}, binary=binary,
                         wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               "--dump-instr=no"])
    try:
        server.start(wait_ready=max(1.0, min(120.0, deadline - time.monotonic())))
    except RuntimeError as e:
        server.stop(60)
        raise Failed(str(e)) from None
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def one(conn: http.client.HTTPConnection, i: int) -> None:
            if time.monotonic() > deadline:
                raise Failed("out of time (--limit)")
            if case == "ingest":
                body = json.dumps({"customerId": f"cg-{i % 50}", "name": "Callgrind",
                                   "orders": [{"orderId": f"o-{i}", "total": 5.0}],
                                   "revenue": 5.0})
                conn.request("POST", svc.INGEST, body=body, headers=headers)
            else:
                conn.request("GET", svc.GET_DATA, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise Failed(f"{case} answered {r.status}")

        def send(first: int, count: int) -> None:
            """`count` requests over `connections` keep-alive connections at once: with more
            than one, concurrent publishes share group commits and the pipeline takes batches,
            as under wrk."""
            def client(k: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                for i in range(first + k, first + count, connections):
                    one(conn, i)
                conn.close()
            with ThreadPoolExecutor(connections) as pool:
                for f in [pool.submit(client, k) for k in range(connections)]:
                    f.result()

        send(0, warmup)
        time.sleep(2)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                       capture_output=True, timeout=60, env=control)
        send(warmup, n)
        time.sleep(3)  # the pipeline stores what was published: part of a request's cost
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       capture_output=True, timeout=60, env=control)
        dump = Path(f"{out}.1")
        wait_until = time.monotonic() + 30
        while not dump.exists() and time.monotonic() < wait_until:
            time.sleep(0.2)
        if not dump.exists():
            raise Failed(f"callgrind wrote no dump at {dump}")
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / n
        raise Failed(f"no totals in {dump}")
    finally:
        server.stop(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", default=["ingest"], choices=["ingest", "getdata"])
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--connections", type=int, default=1,
                    help="keep-alive connections sending at once (default 1: one request at a "
                         "time, each publish its own commit; wrk's 64 share commits)")
    ap.add_argument("--limit", type=float, default=900.0,
                    help="seconds the whole measurement may take (default 900)")
    args = ap.parse_args()
    deadline = time.monotonic() + args.limit
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"instructions: needs {tool} (apt-get install valgrind)")
    service_bin = svc.BINARY
    handlers_bin = RELEASE / "examples/handlers_only"
    for b in (service_bin, handlers_bin):
        if not b.exists():
            raise SystemExit(f"instructions: {b} missing; run scripts/build.sh")
    tmp = Path(tempfile.mkdtemp(prefix="instructions-"))
    try:
        keys_file, keys = svc.make_keys(tmp, 1)
        for case in args.cases:
            h = measure(handlers_bin, {}, case, keys[0], args.warmup, args.requests,
                        tmp / f"handlers-{case}", deadline, args.connections)
            s = measure(service_bin, {"API_KEYS_FILE": str(keys_file), **HIGH_LIMIT}, case,
                        keys[0], args.warmup, args.requests, tmp / f"service-{case}", deadline,
                        args.connections)
            print(f"{case}: handlers-only {h / 1000:.1f} k instructions per request, service "
                  f"{s / 1000:.1f} k, handlers / service {100 * h / s:.1f} % "
                  f"({args.requests} requests after {args.warmup}, {args.connections} "
                  f"connection{'s' if args.connections > 1 else ''})", flush=True)
    except Failed as e:
        raise SystemExit(f"instructions: {e}; logs kept in {tmp}") from None
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
