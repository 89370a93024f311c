#!/usr/bin/env python3
"""The speed benchmark (loadtests/bench.sh): prints figures, passes or fails nothing by itself
except a broken run. In one run, on 127.0.0.1, with the same generator (wrk, 1 thread):

  bare          examples/bare.rs: the two routes parse the same JSON and answer fixed bytes
  handlers      examples/handlers_only.rs: the service's handlers and backends, no middleware
  service       the release binary as deployed: metrics, tracing (not exporting), auth with
                API keys, the rate limiter set high, shedding

Cases: POST one record (durable ingest), GET getData (default query), GET getData by
customerId, and a mix (90 % of them reads, 10 % ingests: the page cache under invalidation)
over 1,000,000 stored rows (seeded straight into store.db with the service's own
schema: 10,000 customers x 100 rows spread over the last 6 days). Then publish-to-queryable
latency (pipeline_end_to_end_latency_seconds) while k6 ingests at half the measured maximum,
and, with --capacity, the highest k6 rate at which every SLO threshold holds for ingest,
getData and a 50/50 mix. Resident memory is sampled throughout.

CPUs: the servers run on one core, as the app container does on Cloud Run (app_cpu = "1"),
and the generators (wrk, k6) on the others (--no-pin: everything anywhere, as before
2026-11-28 21:30). Unpinned, a server could borrow time on the generator's core, so its rate
hid part of what its threads cost; pinned, the rate follows CPU per request. Pinning did not
make single rounds steadier on this shared machine (docs/benchmarks.md).

Results: printed, and written to loadtests/results/bench-<time>/bench.json and bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
import service as svc  # noqa: E402

ROOT = svc.ROOT
WRK_DIR = ROOT / "loadtests/wrk"
EXAMPLES = ROOT / "target/release/examples"
ROWS = 1_000_000
CUSTOMERS = 10_000


def need(path: Path, how: str) -> Path:
    if not path.exists():
        raise SystemExit(f"bench: {path} is missing: {how}")
    return path


# Set by main(): `taskset -c <cpus>` prefixes for the servers and the load generators.
PIN: dict = {"server": None, "generator": None}


def pinned(role: str, cmd: list[str]) -> list[str]:
    return svc.pinned(PIN[role], cmd)


def cpu_split(pin: bool) -> tuple[str | None, str | None]:
    """One CPU for the servers, the rest for the generators; (None, None) when not pinning or
    when this process may use fewer than two CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return str(cpus[0]), ",".join(map(str, cpus[1:]))


def tool(name: str) -> str:
    for c in (ROOT / ".tools/venv/bin" / name, shutil.which(name)):
        if c and Path(c).exists():
            return str(c)
    raise SystemExit(f"bench: {name} is missing: run scripts/bootstrap.sh")


def seed(store_db: Path, rows: int) -> float:
    """Inserts `rows` rows into an existing store.db (the service created the table)."""
    started = time.monotonic()
    conn = sqlite3.connect(store_db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now_us = int(time.time() * 1e6)
    span_us = 6 * 24 * 3600 * 10**6
    rnd = random.Random(42)

    def gen():
        for i in range(rows):
            c = i % CUSTOMERS
            t1, t2 = round(rnd.uniform(1, 5000), 2), round(rnd.uniform(1, 5000), 2)
            yield (f"seed-{i:07d}", f"seed-c{c}", f"Seed Customer {c}",
                   json.dumps([{"orderId": f"{i}-1", "total": t1}, {"orderId": f"{i}-2", "total": t2}]),
                   round(t1 + t2, 2), "challenge-latam-local-subscription",
                   now_us - span_us + (i * span_us) // rows, "{}")

    with conn:
        conn.executemany(
            "INSERT INTO records (message_id, customerId, name, orders, revenue, "
            "subscription_name, publish_time, attributes) VALUES (?,?,?,?,?,?,?,?)", gen())
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - started


def parse_wrk(out: str) -> dict:
    def dur(s: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", s)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v if u == "ms" else v * 1000

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = dur(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    return res


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: str, seconds: int, conns: int, auth: str) -> dict:
    cmd = pinned("generator", [tool("wrk"), "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                                "--timeout", "10s", "-s", str(WRK_DIR / script), url])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AUTH": auth},
                         timeout=seconds + 30).stdout
    return parse_wrk(out)


def count_rows(db: Path, table: str) -> int:
    """Rows of `table` in the SQLite file `db` (0 when there is no file yet), read-only."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def backlog(data_dir: Path) -> int:
    """Messages the server's broker holds that its pipeline has not yet stored."""
    return count_rows(data_dir / "broker.db", "messages")


def settle(data_dirs: list[Path], limit: float = 180.0) -> float:
    """Waits until no server's pipeline has messages left to store, and returns how long
    that took. An ingest run can leave a backlog that the pipeline stores afterwards; that
    work would run on the same two cores during the next run of the other server."""
    started = time.monotonic()
    while any(backlog(d) for d in data_dirs):
        if time.monotonic() - started > limit:
            left = {str(d): backlog(d) for d in data_dirs}
            raise RuntimeError(f"pipelines still had messages after {limit:.0f} s: {left}")
        time.sleep(0.2)
    return time.monotonic() - started


class Proc:
    """A server process of the benchmark with its RSS sampler."""

    def __init__(self, name: str, service: svc.Service | None = None,
                 popen: subprocess.Popen | None = None, url: str = ""):
        self.name, self.service, self.popen = name, service, popen
        self.url = service.url if service else url
        self.pid = service.pid if service else popen.pid
        self.sampler = svc.RssSampler(self.pid, 0.25)
        self.sampler.start()

    def stop(self) -> int:
        peak = self.sampler.stop()
        if self.service:
            self.service.stop()
        else:
            self.popen.terminate()
            self.popen.wait(10)
        return peak


def start_bare(port: int, log: Path) -> subprocess.Popen:
    binary = need(EXAMPLES / "bare", "run scripts/build.sh")
    p = subprocess.Popen(pinned("server", [str(binary)]), env={"PORT": str(port)}, stdout=open(log, "wb"),
                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if svc.http("GET", f"http://127.0.0.1:{port}/healthz", timeout=1)[0] == 200:
            return p
        time.sleep(0.05)
    raise SystemExit(f"bench: bare server did not start; see {log}")


def e2e_under_load(service: svc.Service, rate: int, seconds: int, keys: list[str]) -> dict:
    """Ingests at about `rate`/s (wrk, 32 paced connections) and returns publish-to-queryable
    latency from the service's pipeline_end_to_end_latency_seconds histogram (the delta over
    the run). k6 cannot hold thousands of requests/s on this machine beside the service, so the
    pacing is wrk's delay(): one calibration pass, then the measured run."""
    name = "pipeline_end_to_end_latency_seconds"
    url = service.url + "/challenge-latam-api/ingestData"
    conns = 32

    def paced(delay_ms: float, secs: int) -> dict:
        cmd = pinned("generator", [tool("wrk"), "-t1", f"-c{conns}", f"-d{secs}s", "--latency",
                                   "-s", str(WRK_DIR / "ingest.lua"), url])
        env = {**os.environ, "AUTH": keys[0], "DELAY_MS": str(max(1, int(delay_ms)))}
        return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, env=env,
                                        timeout=secs + 30).stdout)

    delay = conns * 1000 / rate
    calib = paced(delay, 4)
    if calib["rps"] > 0:
        delay *= calib["rps"] / rate
    before = svc.histogram(service.metrics(), name)
    run = paced(delay, seconds)
    time.sleep(2)  # let the pipeline store what was published
    after = svc.histogram(service.metrics(), name)
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    return {
        "rate": rate, "achieved_rps": run["rps"], "ingest_p99_ms": run["p99_ms"],
        "non_2xx": run["non_2xx"], "records": delta.get(float("inf"), 0),
        "p99_le_s": svc.quantile_upper_bound(delta, 0.99),
        "p50_le_s": svc.quantile_upper_bound(delta, 0.50),
        "buckets": {("+Inf" if le == float("inf") else le): v for le, v in sorted(delta.items())},
    }


def capacity(service: svc.Service, keys: list[str], ceiling: float, mix: float, out: Path,
             seconds: int) -> dict:
    """Highest rate (of a descending ladder below `ceiling`) where every SLO threshold holds."""
    tried = []
    for frac in (0.9, 0.75, 0.6, 0.45, 0.3, 0.15):
        rate = max(10, int(ceiling * frac))
        summary = out / f"cap-{mix}-{rate}.json"
        env = {**os.environ, "BASE_URL": service.url, "SCENARIO": "capacity", "RATE": str(rate),
               "MIX": str(mix), "BATCH_SHARE": "0", "DURATION": f"{seconds}s",
               "API_KEYS": ",".join(keys), "MAX_VUS": "400", "K6_NO_USAGE_REPORT": "true",
               "RUN_ID": f"cap{int(time.time())}"}
        code = subprocess.run(pinned("generator", [tool("k6"), "run", "--quiet", "--no-color",
                                                   "--summary-export", str(summary),
                                                   str(ROOT / "loadtests/k6/api.js")]),
                              env=env, capture_output=True, text=True).returncode
        m = json.loads(summary.read_text())["metrics"]
        row = {"rate": rate, "held": code == 0, "achieved_rps": m["http_reqs"]["rate"],
               "ingest_p99_ms": m.get("ingest_latency", {}).get("p(99)"),
               "query_p95_ms": m.get("query_latency", {}).get("p(95)"),
               "availability": m.get("availability", {}).get("value"),
               "dropped": m.get("dropped_iterations", {}).get("count", 0)}
        tried.append(row)
        print(f"  capacity mix={mix}: {rate}/s -> {'held' if row['held'] else 'broken'} "
              f"(achieved {row['achieved_rps']:.0f}/s, ingest p99 {row['ingest_p99_ms']}, "
              f"query p95 {row['query_p95_ms']}, dropped {row['dropped']})", flush=True)
        # A rate k6 could not hold (dropped iterations, under 95 % achieved) is not a pass:
        # on two shared cores the generator itself runs out of CPU first.
        row["kept_rate"] = row["achieved_rps"] >= 0.95 * rate
        if row["held"] and row["kept_rate"]:
            return {"mix": mix, "highest_rate": rate, "tried": tried}
    return {"mix": mix, "highest_rate": None, "tried": tried}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10, help="wrk duration of each case")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating handlers/service runs per case; medians are reported")
    p.add_argument("--capacity", action="store_true", help="also search the SLO capacity with k6")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="run servers and generators on any CPU (default: servers on one core, "
                        "generators on the rest)")
    p.add_argument("--query-cache-ttl-ms", type=int,
                   help="QUERY_CACHE_TTL_MS of the service and handlers-only servers "
                        "(0: cache off; default: the service's own default)")
    p.add_argument("--cases", default="ingest,getData,byCustomer,mixed",
                   help="comma-separated cases to run (default all four); --capacity needs "
                        "ingest and getData")
    p.add_argument("--report", type=Path, help="only print the report of an earlier bench.json")
    args = p.parse_args()
    wanted = set(args.cases.split(","))
    known = {"ingest", "getData", "byCustomer", "mixed"}
    if not wanted <= known or (args.capacity and not {"ingest", "getData"} <= wanted):
        p.error(f"--cases: some of {sorted(known)} (with --capacity: ingest and getData)")
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ROOT / "loadtests/results" / f"bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    need(svc.BINARY, "run scripts/build.sh")
    need(EXAMPLES / "handlers_only", "run scripts/build.sh")
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_TMP")))
    PIN["server"], PIN["generator"] = cpu_split(args.pin)
    if PIN["server"] is None and args.pin:
        print("bench: fewer than two CPUs available: servers and generators are NOT pinned",
              flush=True)
    cache = ({} if args.query_cache_ttl_ms is None
             else {"QUERY_CACHE_TTL_MS": str(args.query_cache_ttl_ms)})
    results: dict = {"when": stamp, "machine": machine(), "rows": args.rows,
                     "query_cache_ttl_ms": args.query_cache_ttl_ms,
                     "cpus": {"server": PIN["server"], "generator": PIN["generator"]},
                     "wrk": {"threads": 1, "connections": args.connections, "seconds": args.seconds}}
    procs: dict[str, Proc] = {}
    try:
        # 1. Store with 1,000,000 rows: the service creates the schema, then rows go in directly.
        full_dir, ho_dir = tmp / "service", tmp / "handlers"
        s = svc.Service(data_dir=full_dir, log=out / "service-seed.log").start()
        s.stop()
        took = seed(full_dir / "store.db", args.rows)
        print(f"bench: seeded {args.rows} rows into store.db in {took:.1f} s", flush=True)
        ho_dir.mkdir()
        shutil.copy(full_dir / "store.db", ho_dir / "store.db")
        results["seed_seconds"] = took

        keys_file, keys = svc.make_keys(tmp, 2)
        high = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000"}
        # Each server joins `procs` as soon as it runs, so that `finally` stops it.
        service = svc.Service(data_dir=full_dir, log=out / "service.log", cpus=PIN["server"],
                              env={"API_KEYS_FILE": str(keys_file), **high, **cache}).start()
        procs["service"] = Proc("service", service=service)
        procs["handlers"] = Proc("handlers", service=svc.Service(
            data_dir=ho_dir, log=out / "handlers_only.log", cpus=PIN["server"],
            binary=EXAMPLES / "handlers_only", env=cache).start())
        bare_port = svc.free_port()
        procs["bare"] = Proc("bare", popen=start_bare(bare_port, out / "bare.log"),
                             url=f"http://127.0.0.1:{bare_port}")
        names = ["bare", "handlers", "service"]
        cases = {"ingest": ("/challenge-latam-api/ingestData", "ingest.lua"),
                 "getData": ("/challenge-latam-api/getData", "getdata.lua"),
                 "byCustomer": ("/challenge-latam-api/getData", "customer.lua"),
                 "mixed": ("", "mixed.lua")}
        cases = {c: v for c, v in cases.items() if c in wanted}
        figures: dict = {c: {} for c in cases}
        rounds: dict = {c: [] for c in cases}
        cpu_rounds: dict = {c: [] for c in cases}
        store_rows: dict = {}
        # Where each phase's RSS samples of the service start, so the report can say which
        # phase set the peak (a peak alone does not say what to look at).
        phases: list[tuple[str, int]] = []

        def phase(name: str) -> None:
            phases.append((name, len(procs["service"].sampler.samples)))

        for case, (path, script) in cases.items():
            phase(case)
            # All three servers in every round, the order rotating, `--rounds` times, so a slow
            # minute of this shared machine hits every side of both ratios. (Until 2026-12-06
            # bare ran once per case: one noisy run moved the service / bare ratio of the
            # same build from 24 % to 39 % between two runs.)
            order = [tuple(names[i % 3:] + names[:i % 3]) for i in range(args.rounds)]
            runs: dict = {n: [] for n in names}
            # The store grows through the ingest rounds, and an ingest costs more the larger
            # it is (docs/benchmarks.md, "Ingest slows as the store grows"), so the report says
            # over which sizes each case ran.
            settle([full_dir, ho_dir])
            store_rows[case] = [count_rows(full_dir / "store.db", "records")]
            for group in order:
                got = {}
                for name in group:
                    proc = procs[name]
                    waited = settle([full_dir, ho_dir])
                    if waited > 0.5:
                        print(f"bench: waited {waited:.1f} s for the pipelines to store their backlog",
                              flush=True)
                    wrk(proc.url + path, script, 2, args.connections, keys[0])  # warm up
                    cpu = cpu_seconds(proc.pid)
                    r = wrk(proc.url + path, script, args.seconds, args.connections, keys[0])
                    # CPU per request: what the server spent, whoever else was running (wrk
                    # shares the two cores), so it is steadier than the rate between rounds.
                    r["cpu_us"] = 1e6 * (cpu_seconds(proc.pid) - cpu) / max(1, r["requests"])
                    runs[name].append(r)
                    got[name] = r["rps"]
                    print(f"bench: {case:10} {name:8} {r['rps']:9.0f} req/s  {r['cpu_us']:6.1f} us CPU/req"
                          f"  p50 {r['p50_ms']:.2f} ms"
                          f"  p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']}"
                          f"{'  socket errors ' + r['socket_errors'] if r['socket_errors'] else ''}",
                          flush=True)
                rounds[case].append(got)
                cpu_rounds[case].append({n: runs[n][-1]["cpu_us"] for n in group})
            settle([full_dir, ho_dir])
            store_rows[case].append(count_rows(full_dir / "store.db", "records"))
            # Each server's median run stands for it (its latencies with it).
            for name, rs in runs.items():
                figures[case][name] = sorted(rs, key=lambda x: x["rps"])[len(rs) // 2]
        results["figures"] = figures
        results["rounds"] = rounds
        results["cpu_rounds"] = cpu_rounds
        results["store_rows"] = store_rows
        results["cache"] = cache_figures(service)
        c = results["cache"]
        print(f"bench: service cache: {c['lookups']}; age of pages served from it: "
              f"p50 <= {c['age_p50_le_s']} s, p99 <= {c['age_p99_le_s']} s, max bucket "
              f"{c['age_max_le_s']} s; {c['rejected']:.0f} rejected", flush=True)

        # 2. Publish-to-queryable at half the maximum ingest rate.
        if "ingest" in cases:
            phase("end-to-end")
            half = max(10, int(figures["ingest"]["service"]["rps"] / 2))
            results["e2e"] = e2e_under_load(service, half, 20, keys)
            e = results["e2e"]
            print(f"bench: end-to-end at {half}/s ingest (achieved {e['achieved_rps']:.0f}/s): "
                  f"{e['records']:.0f} records, p50 <= {e['p50_le_s']} s, p99 <= {e['p99_le_s']} s",
                  flush=True)

        # 3. SLO capacity (k6, thresholds = SLOs) for ingest, query and a 50/50 mix.
        if args.capacity:
            phase("capacity")
            results["capacity"] = []
            for mix, ceiling in ((1.0, figures["ingest"]["service"]["rps"]),
                                 (0.0, figures["getData"]["service"]["rps"]),
                                 (0.5, 2 / (1 / figures["ingest"]["service"]["rps"]
                                            + 1 / figures["getData"]["service"]["rps"]))):
                results["capacity"].append(capacity(service, keys, min(ceiling, 4000), mix, out, 15))

        results["rss_peak_mib"] = {n: procs[n].stop() / 2**20 for n in names}
        rss = procs["service"].sampler.samples
        ends = [start for _, start in phases[1:]] + [len(rss)]
        results["service_rss_peak_by_phase_mib"] = {
            name: max(rss[start:end], default=0) / 2**20 for (name, start), end in zip(phases, ends)}
    finally:
        # Again on failure: a run that stops part-way must not leave its servers running
        # (they would load the next run). Stopping twice is a no-op.
        for p in procs.values():
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    text = report(results)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "bench.md").write_text(text)
    print(text)
    print(f"bench: results in {out}")
    return 0


def cache_figures(service: svc.Service) -> dict:
    """The service's page cache over the whole run, from its own metrics: lookups by result,
    and the age of the pages it served (the staleness clients saw), as bucket bounds."""
    text = service.metrics()
    lookups = {labels["result"]: int(v)
               for labels, v in svc.samples(text, "app_getdata_cache_lookups_total")}
    age = svc.histogram(text, "app_getdata_cache_age_seconds")
    served = age.get(float("inf"), 0.0)
    return {"lookups": lookups, "served_from_cache": served,
            "age_p50_le_s": svc.quantile_upper_bound(age, 0.5),
            "age_p99_le_s": svc.quantile_upper_bound(age, 0.99),
            "age_max_le_s": svc.quantile_upper_bound(age, 1.0),
            "rejected": sum(v for _, v in svc.samples(text, "app_getdata_store_queries_rejected_total"))}


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), Linux {os.uname().release}"


def pinning(r: dict) -> str:
    cpus = r.get("cpus") or {}
    if not cpus.get("server"):
        return "Servers and generators were not pinned (any CPU)."
    return (f"Servers pinned to CPU {cpus['server']} (one core, like Cloud Run's app_cpu = 1), "
            f"generators to CPU {cpus['generator']}.")


def report(r: dict) -> str:
    f = r["figures"]
    ttl = r.get("query_cache_ttl_ms")
    cache = ("the service's default page cache" if ttl is None
             else "page cache OFF (QUERY_CACHE_TTL_MS=0)" if ttl == 0
             else f"QUERY_CACHE_TTL_MS={ttl}")
    lines = [f"## Benchmark run {r['when']} ({cache})", "", f"Machine: {r['machine']}. Generator: wrk, "
             f"1 thread, {r['wrk']['connections']} connections, {r['wrk']['seconds']} s per case "
             f"after 2 s of warm-up; store seeded with {r['rows']:,} rows. {pinning(r)}", "",
             "| case | server | req/s | CPU us/req | p50 ms | p99 ms | non-2xx |",
             "|---|---|---|---|---|---|---|"]
    for case, by in f.items():
        for name, x in by.items():
            cpu = f"{x['cpu_us']:.1f}" if "cpu_us" in x else "-"
            lines.append(f"| {case} | {name} | {x['rps']:.0f} | {cpu} | {x['p50_ms']:.2f} | "
                         f"{x['p99_ms']:.2f} | {x['non_2xx']} |")
    lines += ["", "| ratio | figure | target |", "|---|---|---|"]
    for case, target in (("ingest", 0.30), ("getData", 0.50), ("byCustomer", 0.40), ("mixed", None)):
        if case not in f:
            continue
        # Paired like the middleware ratio below when every round ran bare too.
        pairs = sorted(g["service"] / g["bare"] for g in r.get("rounds", {}).get(case, [])
                       if "bare" in g and "service" in g)
        if pairs:
            ratio = statistics.median(pairs)
            how = " (median of paired rounds " + ", ".join(f"{100 * x:.0f} %" for x in pairs) + ")"
        else:
            ratio, how = f[case]["service"]["rps"] / f[case]["bare"]["rps"], ""
        verdict = (f">= {100 * target:.0f} % ({'met' if ratio >= target else 'MISSED'})"
                   if target else "(no target)")
        lines.append(f"| service / bare, {case}{how} | {100 * ratio:.1f} % | {verdict} |")
    for case in f:
        # Paired: each round runs handlers and service back to back, so a round's ratio is
        # measured under the same machine conditions; the figure is the median of the rounds.
        pairs = sorted(g["service"] / g["handlers"] for g in r.get("rounds", {}).get(case, [])
                       if "handlers" in g and "service" in g)
        if pairs:
            ratio = statistics.median(pairs)
            how = "median of paired rounds " + ", ".join(f"{100 * x:.0f} %" for x in pairs)
        else:
            ratio = f[case]["service"]["rps"] / f[case]["handlers"]["rps"]
            how = "one run each"
        lines.append(f"| service (full middleware) / handlers only, {case} ({how}) | "
                     f"{100 * ratio:.1f} % | >= 90 % ({'met' if ratio >= 0.9 else 'MISSED'}) |")
    for case, rs in r.get("cpu_rounds", {}).items():
        if rs:
            each = sorted(g["handlers"] / g["service"] for g in rs if "handlers" in g and "service" in g)
            lines.append(f"| handlers-only CPU per request / service CPU per request, {case} "
                         f"(median of rounds {', '.join(f'{100 * x:.0f} %' for x in each)}) | "
                         f"{100 * statistics.median(each):.1f} % | (what the rate ratio would be "
                         f"if the server were CPU-bound alone) |")
    e = r.get("e2e")
    lines.append("")
    sizes = r.get("store_rows", {})
    if sizes:  # runs before 2026-12-07 did not record them
        lines += ["Rows in the service's store while each case ran (ingest adds them; an ingest "
                  "costs more the larger the store): " + ", ".join(
                      f"{case} {a:,} to {b:,}" for case, (a, b) in sizes.items()) + ".", ""]
    if e:  # not measured when --cases leaves ingest out
        lo = {0.1: 0.0, 0.25: 0.1, 0.5: 0.25, 1.0: 0.5, 2.5: 1.0, 5.0: 2.5, 10.0: 5.0}.get(
            e["p99_le_s"], "?")
        lines += [f"Publish to queryable while wrk ingests at about {e['rate']}/s (half the maximum "
                  f"above; achieved {e['achieved_rps']:.0f}/s, ingest p99 {e['ingest_p99_ms']:.1f} ms, "
                  f"non-2xx {e['non_2xx']}): {e['records']:.0f} records through the pipeline; from "
                  f"pipeline_end_to_end_latency_seconds, p50 <= {e['p50_le_s']} s and p99 in "
                  f"({lo}, {e['p99_le_s']}] s (target p99 < 0.5 s: "
                  f"{'met' if e['p99_le_s'] <= 0.5 else 'MISSED'}).", ""]
    c = r.get("cache")
    if c:
        lines += [f"Page cache of the service over the whole run: lookups {c['lookups']}, "
                  f"{c['rejected']:.0f} answered 503 for the in-flight bound; age of the pages "
                  f"served from the cache (the staleness clients saw): p50 <= {c['age_p50_le_s']} s, "
                  f"p99 <= {c['age_p99_le_s']} s, all <= {c['age_max_le_s']} s.", ""]
    rss = r.get("rss_peak_mib", {})
    lines.append("Peak resident memory (sampled every 0.25 s): " + ", ".join(
        f"{n} {v:.1f} MiB" for n, v in rss.items()) +
        f" (target for the service < 100 MiB: {'met' if rss.get('service', 0) < 100 else 'MISSED'}).")
    if r.get("service_rss_peak_by_phase_mib"):
        lines.append("The service's peak by phase: " + ", ".join(
            f"{n} {v:.1f} MiB" for n, v in r["service_rss_peak_by_phase_mib"].items()) + ".")
    if r.get("capacity"):
        lines += ["", "Highest k6 rate with every SLO threshold held (15 s per step, unique records, "
                  "2 API keys):", "", "| traffic | highest rate held | steps tried |", "|---|---|---|"]
        for c in r["capacity"]:
            label = {1.0: "ingest only", 0.0: "getData only", 0.5: "50/50 mix"}[c["mix"]]
            steps = "; ".join(
                f"{t['rate']}/s: {'held' if t['held'] else 'broken'}, achieved "
                f"{t['achieved_rps']:.0f}/s" for t in c["tried"])
            best = next((t["rate"] for t in c["tried"]
                         if t["held"] and t["achieved_rps"] >= 0.95 * t["rate"]), None)
            lines.append(f"| {label} | {f'{best}/s' if best else 'none of the steps'} | {steps} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
